"""Normalising: every format to one of TRL's native shapes, so TRL does the
tokenisation, masking and packing:

- instruction (alpaca instruction/input/output) → prompt/completion (loss on the answer)
- completion (prompt/completion)                → prompt/completion (loss on the completion)
- chat (messages)                                → messages with assistant-only loss when the
  chat template marks assistant turns ({% generation %}); otherwise a
  conversational prompt/completion pair (loss on the final assistant turn)
- text                                           → text (loss on everything)
- preference (prompt/chosen/rejected)            → the same columns (DPO, ORPO), strings or messages
- unpaired (prompt/completion/label)             → the same columns (KTO)
- prompts (prompt, optional answer)              → the same columns (GRPO; answers as text)

and the rows' token lengths, duplicates dropped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kubetune_contract.formats import FORMATS, columns_of, row_problem
from kubetune_contract.sections import ColumnMapping

from ..errors import InvalidDataset
from .preflight import CHECKED_FORMATS, blank
from .read import row_location

ALPACA = "### Instruction:\n{instruction}\n\n{input_block}### Response:\n"


def alpaca_prompt(instruction: str, inp: str | None) -> str:
    block = f"### Input:\n{inp}\n\n" if inp else ""
    return ALPACA.format(instruction=instruction, input_block=block)


def _messages(row: dict, column: str, columns: ColumnMapping | None, where: str) -> list[dict]:
    problem = row_problem(row, "chat", columns)
    if problem:
        raise InvalidDataset(f"{where}: {problem}")
    return [{"role": m["role"], "content": m["content"]} for m in row[column]]


def normalise(ds, fmt: str, columns: ColumnMapping | None, source: str, use_messages: bool,
              cache_dir: Path | None = None) -> tuple[list[dict], int]:
    """Rows in TRL's shape for fmt; returns (rows, rows dropped for a blank required field).
    With `cache_dir` (where s3:// files were fetched) a bad row is named by its file:line."""
    where = (lambda i: row_location(source, i, cache_dir)) if cache_dir is not None else (lambda i: f"{source}: row {i + 1}")
    m = columns_of(fmt, columns)
    out, dropped = [], 0
    for i, row in enumerate(ds):
        if fmt in CHECKED_FORMATS:  # check_rows refused the bad ones, with their lines
            problem = row_problem(row, fmt, columns)
            if problem:
                raise InvalidDataset(f"{where(i)}: {problem}")
            out.append({f: _answer(row.get(m[f])) if f == "answer" else row[m[f]] for f in FORMATS[fmt].fields})
            continue
        if any(blank(row.get(m[f])) for f in FORMATS[fmt].required):
            dropped += 1
            continue
        if fmt == "instruction":
            inp = row.get(m["input"]) if m["input"] in row else None
            out.append({"prompt": alpaca_prompt(str(row[m["instruction"]]), None if blank(inp) else str(inp)), "completion": str(row[m["output"]])})
        elif fmt == "completion":
            out.append({"prompt": str(row[m["prompt"]]), "completion": str(row[m["completion"]])})
        elif fmt == "chat":
            msgs = _messages(row, m["messages"], columns, where(i))
            out.append({"messages": msgs} if use_messages else {"prompt": msgs[:-1], "completion": msgs[-1:]})
        else:
            out.append({"text": str(row[m["text"]])})
    return out, dropped


def _answer(value):
    """A prompts row's answer as text (a number in the file is a number in the reward), or None."""
    return None if value is None else str(value)


def dedupe(rows: list[dict]) -> tuple[list[dict], int]:
    seen, out = set(), []
    for r in rows:
        key = hashlib.sha1(json.dumps(r, sort_keys=True).encode()).digest()
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out, len(rows) - len(out)


def has_generation_markers(template: str | None) -> bool:
    return bool(template) and "{% generation %}" in template.replace("{%-", "{%").replace("-%}", "%}")


def _texts(rows: list[dict], tokenizer) -> list[str]:
    if not rows:
        return []
    if "messages" in rows[0]:
        return [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    if "prompt" in rows[0]:
        if isinstance(rows[0]["prompt"], list):
            return [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in rows]
        return [r["prompt"] + r["completion"] for r in rows]
    return [r["text"] for r in rows]


def _joined(prompt, answer, tokenizer) -> str:
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt + answer, tokenize=False)
    return prompt + answer


def token_lengths(rows: list[dict], tokenizer) -> list[int]:
    if rows and "chosen" in rows[0]:  # a pair is as long as its longer sequence
        chosen = token_lengths([{"text": _joined(r["prompt"], r["chosen"], tokenizer)} for r in rows], tokenizer)
        rejected = token_lengths([{"text": _joined(r["prompt"], r["rejected"], tokenizer)} for r in rows], tokenizer)
        return [max(c, r) for c, r in zip(chosen, rejected)]
    if rows and set(rows[0]) == {"prompt", "answer"}:  # GRPO prompts: the completions are sampled
        return token_lengths([{"text": r["prompt"] if isinstance(r["prompt"], str) else
                               tokenizer.apply_chat_template(r["prompt"], tokenize=False)} for r in rows], tokenizer)
    if rows and "label" in rows[0]:
        return token_lengths([{"text": _joined(r["prompt"], r["completion"], tokenizer)} for r in rows], tokenizer)
    texts = _texts(rows, tokenizer)
    lengths: list[int] = []
    for i in range(0, len(texts), 1000):
        enc = tokenizer(texts[i:i + 1000], add_special_tokens=True)["input_ids"]
        lengths += [len(e) + 1 for e in enc]  # +1: the eos TRL appends
    return lengths

