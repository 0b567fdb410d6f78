"""Dataset row formats: their fields, how a file's format is detected, and
what makes one row usable. `kubetune validate --dataset` and the trainer's data
loading both use these, so they agree on every file."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .sections import ColumnMapping


@dataclass(frozen=True)
class RowFormat:
    fields: tuple[str, ...]  # every field the format reads, in the order rows show them
    required: tuple[str, ...]  # fields a row must have, non-empty


FORMATS: dict[str, RowFormat] = {
    # Detection tries them in this order: the first whose required columns all exist wins.
    "chat": RowFormat(("messages",), ("messages",)),
    "completion": RowFormat(("prompt", "completion"), ("prompt", "completion")),
    "instruction": RowFormat(("instruction", "input", "output"), ("instruction", "output")),
    "text": RowFormat(("text",), ("text",)),
    # Preference objectives. Pairwise: one prompt, a better and a worse answer
    # (DPO, ORPO). Unpaired: the completion format plus a boolean label (KTO);
    # its columns are the completion format's, so only the objective picks it.
    "preference": RowFormat(("prompt", "chosen", "rejected"), ("prompt", "chosen", "rejected")),
    "unpaired": RowFormat(("prompt", "completion", "label"), ("prompt", "completion", "label")),
    # GRPO: prompts to sample completions for, with the answer rewards compare against.
    "prompts": RowFormat(("prompt", "answer"), ("prompt",)),
}
CHAT_ROLES = ("system", "user", "assistant", "tool")

# The formats each objective reads, in detection order.
OBJECTIVE_FORMATS: dict[str, tuple[str, ...]] = {
    "sft": ("chat", "completion", "instruction", "text"),
    "dpo": ("preference",),
    "orpo": ("preference",),
    "kto": ("unpaired",),
    "grpo": ("prompts",),
}


def columns_of(fmt: str, mapping: ColumnMapping | None) -> dict[str, str]:
    """field -> the column that holds it (the user's mapping, else the field's own name)."""
    return {f: (getattr(mapping, f, None) if mapping else None) or f for f in FORMATS[fmt].fields}


def _candidates(objective: str | None) -> tuple[str, ...]:
    # Without an objective (a bare `kubetune validate --dataset`), every format
    # but unpaired: its columns are the completion format's plus a label.
    if objective is None:
        return ("preference", *OBJECTIVE_FORMATS["sft"], "prompts")
    return OBJECTIVE_FORMATS[objective]


def _matches(fmt: str, present: set[str], mapping: ColumnMapping | None) -> bool:
    columns = columns_of(fmt, mapping)
    return all(columns[f] in present for f in FORMATS[fmt].required)


def detect_format(column_names: Iterable[str], mapping: ColumnMapping | None = None, objective: str | None = None) -> str | None:
    """The first of the objective's formats whose required columns are all present, or None."""
    present = set(column_names)
    return next((fmt for fmt in _candidates(objective) if _matches(fmt, present, mapping)), None)


def undetectable(column_names: Iterable[str], objective: str | None = None, mapping: ColumnMapping | None = None) -> str:
    """Why detection failed, and what would work (and which objective the columns do fit)."""
    names = list(column_names)
    expected = "; ".join(f"{fmt} ({', '.join(FORMATS[fmt].required)})" for fmt in _candidates(objective))
    text = f"cannot detect the format from columns [{', '.join(sorted(names))}]"
    if objective is not None:
        text += f" for objective {objective}"
        fits = {o: f for o in OBJECTIVE_FORMATS if o != objective and (f := detect_format(names, mapping, o))}
        if fits:
            fmt = next(iter(fits.values()))
            text += f" (they are {fmt} rows, which objective {' or '.join(o for o, f in fits.items() if f == fmt)} reads)"
    return f"{text}; expected one of: {expected}; set dataset.format and dataset.columns"


def _nonempty_string(row: dict, column: str) -> str | None:
    if row.get(column) is None:
        return f"missing field {column!r}"
    if not isinstance(row[column], str):
        return f"field {column!r} must be a string, got {type(row[column]).__name__}"
    if not row[column].strip():
        return f"field {column!r} is empty"
    return None


def _chat_problem(messages: object, column: str) -> str | None:
    if not isinstance(messages, list) or not messages:
        return f"field {column!r} must be a non-empty list of {{role, content}}"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"{column}[{i}] must be an object with role and content"
        if message.get("role") not in CHAT_ROLES:
            return f"{column}[{i}].role {message.get('role')!r} is not one of {', '.join(sorted(CHAT_ROLES))}"
        if not isinstance(message.get("content"), str):
            return f"{column}[{i}].content must be a string"
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return "no non-empty assistant message to train on"
    if messages[-1]["role"] != "assistant":
        return "the last message must be the assistant's answer"
    return None


def _turns_problem(value: object, column: str, *, answer: bool) -> str | None:
    """A string, or a list of {role, content} (an answer's: ending with the assistant's)."""
    if isinstance(value, str):
        return None if value.strip() else f"field {column!r} is empty"
    if not isinstance(value, list):
        return f"field {column!r} must be a string or a list of {{role, content}}, got {type(value).__name__}"
    if not value:
        return f"field {column!r} is empty"
    for i, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES or not isinstance(message.get("content"), str):
            return f"{column}[{i}] must be an object with role ({', '.join(sorted(CHAT_ROLES))}) and string content"
    if answer and (value[-1]["role"] != "assistant" or not value[-1]["content"].strip()):
        return f"{column} must end with a non-empty assistant message"
    return None


def _preference_problem(row: dict, columns: dict[str, str]) -> str | None:
    for field, answer in (("prompt", False), ("chosen", True), ("rejected", True)):
        column = columns[field]
        if row.get(column) is None:
            return f"missing field {column!r}"
        problem = _turns_problem(row[column], column, answer=answer)
        if problem:
            return problem
    if (isinstance(row[columns["prompt"]], list)) != isinstance(row[columns["chosen"]], list) or \
            isinstance(row[columns["chosen"]], list) != isinstance(row[columns["rejected"]], list):
        return "prompt, chosen and rejected must all be strings or all be message lists"
    if row[columns["chosen"]] == row[columns["rejected"]]:
        return f"{columns['chosen']!r} is identical to {columns['rejected']!r}: the pair prefers nothing"
    return None


def _unpaired_problem(row: dict, columns: dict[str, str]) -> str | None:
    for field, answer in (("prompt", False), ("completion", True)):
        column = columns[field]
        if row.get(column) is None:
            return f"missing field {column!r}"
        problem = _turns_problem(row[column], column, answer=answer)
        if problem:
            return problem
    label = row.get(columns["label"])
    if not isinstance(label, bool):
        shown = "missing" if label is None else f"{label!r} ({type(label).__name__})"
        return f"field {columns['label']!r} must be true (desirable) or false (undesirable), got {shown}"
    return None


def _prompts_problem(row: dict, columns: dict[str, str]) -> str | None:
    if row.get(columns["prompt"]) is None:
        return f"missing field {columns['prompt']!r}"
    problem = _turns_problem(row[columns["prompt"]], columns["prompt"], answer=False)
    answer = row.get(columns["answer"])
    if problem is None and answer is not None and (isinstance(answer, bool) or not isinstance(answer, (str, int, float))):
        problem = f"field {columns['answer']!r} must be a string or a number, got {type(answer).__name__}"
    return problem


def row_problem(row: object, fmt: str, mapping: ColumnMapping | None = None) -> str | None:
    """What makes this row unusable for the format, or None."""
    columns = columns_of(fmt, mapping)
    if not isinstance(row, dict):
        return f"expected an object with fields {', '.join(columns[f] for f in FORMATS[fmt].required)}, got {type(row).__name__}"
    if fmt == "chat":
        return _chat_problem(row.get(columns["messages"]), columns["messages"])
    if fmt == "preference":
        return _preference_problem(row, columns)
    if fmt == "unpaired":
        return _unpaired_problem(row, columns)
    if fmt == "prompts":
        return _prompts_problem(row, columns)
    for field in FORMATS[fmt].required:
        problem = _nonempty_string(row, columns[field])
        if problem:
            return problem
    extra = row.get(columns["input"]) if fmt == "instruction" else None
    if extra not in (None, "") and not isinstance(extra, str):
        return f"field {columns['input']!r} must be a string, got {type(extra).__name__}"
    return None


def row_length(row: dict, fmt: str, mapping: ColumnMapping | None = None) -> int:
    """Characters of trainable text in a usable row (for length statistics)."""
    columns = columns_of(fmt, mapping)
    if fmt == "chat":
        return sum(len(m["content"]) for m in row[columns["messages"]])
    if fmt == "preference":  # the longer of the two sequences the pair makes
        return _chars(row[columns["prompt"]]) + max(_chars(row[columns["chosen"]]), _chars(row[columns["rejected"]]))
    if fmt == "unpaired":
        return _chars(row[columns["prompt"]]) + _chars(row[columns["completion"]])
    if fmt == "prompts":
        return _chars(row[columns["prompt"]])
    return sum(len(str(row.get(columns[f]) or "")) for f in FORMATS[fmt].fields)


def _chars(value: str | list) -> int:
    return len(value) if isinstance(value, str) else sum(len(m["content"]) for m in value)
