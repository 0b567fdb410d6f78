"""Training data: load, detect the format, map columns, clean, split, count.

Every format is normalised to one of TRL's native shapes so TRL does the
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

A preference or unpaired row with any problem is refused with its file and
line (a pair with nothing to prefer teaches the wrong thing quietly).

Format detection and the row checks are the contract's
(`kubetune_contract.formats`), shared with `kubetune validate --dataset`.
Problems are `InvalidDataset` errors naming the file, line or column and what
would be valid.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from kubetune_contract.formats import FORMATS, columns_of, detect_format, row_problem, undetectable
from kubetune_contract.sections import ColumnMapping, DatasetSpec, EvaluationSpec

from ..errors import InvalidDataset
from ..storage import fetch, local_path


SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
ALPACA = "### Instruction:\n{instruction}\n\n{input_block}### Response:\n"


def alpaca_prompt(instruction: str, inp: str | None) -> str:
    block = f"### Input:\n{inp}\n\n" if inp else ""
    return ALPACA.format(instruction=instruction, input_block=block)


@dataclass
class PreparedData:
    train: object  # datasets.Dataset
    eval: object | None
    format: str  # the detected/declared user format
    shape: str  # "prompt_completion" | "messages" | "text" | "preference" | "unpaired"
    completion_only_loss: bool
    assistant_only_loss: bool
    stats: dict = field(default_factory=dict)
    # Held-out test rows (evaluation.testUri / testSplit), in the same shape;
    # never seen by training, early stopping or checkpoint selection.
    test: object | None = None
    # dataset.sources: the mixed epoch (mixing.MixPlan), the order training reads it in.
    mix: object | None = None
    # dataset.streaming: the streaming.TrainingStream that `train` iterates
    stream: object | None = None


# --------------------------------------------------------------------------- loading


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidDataset(f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise InvalidDataset(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
            rows.append(row)
    return rows


def _mixed_types(path: Path) -> str | None:
    """`file:line: field 'label' is a str, line 1's is a bool`: the first row whose
    field has another JSON type than the first row that had it."""
    first: dict[str, tuple[int, type]] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            for key, value in json.loads(line).items():
                if value is None:
                    continue
                seen = first.setdefault(key, (lineno, type(value)))
                if seen[1] is not type(value):
                    return (f"{path}:{lineno}: field {key!r} is {value!r} ({type(value).__name__}), but line {seen[0]}'s is a "
                            f"{seen[1].__name__}; every row's field must have one type")
    return None


def _load_file(path: Path):
    import datasets

    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidDataset(f"{path}: unsupported file type {suffix or '(none)'!r}; use .jsonl, .json, .csv, .parquet or a saved datasets directory")
    try:
        if suffix == ".jsonl":
            rows = _read_jsonl(path)
            try:
                return datasets.Dataset.from_list(rows)
            except (TypeError, ValueError) as exc:  # Arrow: one column, two types
                raise InvalidDataset(_mixed_types(path) or f"{path}: cannot read as jsonl: {str(exc).splitlines()[0][:200]}") from None
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):  # {"data": [...]} / {"train": [...]}
                data = next((v for v in data.values() if isinstance(v, list)), None)
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise InvalidDataset(f"{path}: expected a JSON list of objects")
            return datasets.Dataset.from_list(data)
        if suffix == ".csv":
            return datasets.Dataset.from_csv(str(path), keep_in_memory=True)
        return datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
    except InvalidDataset:
        raise
    except json.JSONDecodeError as exc:
        raise InvalidDataset(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except Exception as exc:  # noqa: BLE001 - library parse errors become one line
        raise InvalidDataset(f"{path}: cannot read as {suffix[1:]}: {str(exc).splitlines()[0][:200]}") from None


def _load_path(path: Path):
    import datasets

    if not path.exists():
        raise InvalidDataset(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if "train" not in ds:
                    raise InvalidDataset(f"{path}: saved DatasetDict has no 'train' split (splits: {', '.join(ds)})")
                ds = ds["train"]
            return ds
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES)
        if not files:
            raise InvalidDataset(f"{path}: directory holds no .jsonl/.json/.csv/.parquet files and is not a saved datasets directory")
        return datasets.concatenate_datasets([_load_file(f) for f in files])
    return _load_file(path)


def load_table(uri: str, cache_dir: Path, s3_endpoint: str | None = None, s3_region: str | None = None):
    """A datasets.Dataset from file://, pvc://, s3:// (downloaded to cache_dir) or hf://."""
    if uri.startswith(("file://", "pvc://")):
        return _load_path(local_path(uri))
    if uri.startswith("s3://"):
        dst = cache_dir / hashlib.sha1(uri.encode()).hexdigest()[:16]
        try:
            local = fetch(uri, dst, s3_endpoint=s3_endpoint, s3_region=s3_region)
        except Exception as exc:  # noqa: BLE001
            code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
            if code in ("NoSuchKey", "NoSuchBucket", "404", "AccessDenied", "403"):
                raise InvalidDataset(f"{uri}: cannot read ({code})") from None
            raise
        if not local.exists() or (local.is_dir() and not any(local.iterdir())):
            raise InvalidDataset(f"{uri}: no such object, and no objects under it as a prefix; check the bucket and key")
        try:
            return _load_path(local)
        except InvalidDataset as exc:
            # The user knows the URI, not the pod's download cache.
            raise InvalidDataset(str(exc).replace(str(local), uri.rstrip("/"))) from None
    if uri.startswith("hf://"):
        import datasets

        return datasets.load_dataset(uri[len("hf://"):], split="train")
    raise InvalidDataset(f"{uri}: unsupported URI scheme; use file://, pvc://, s3:// or hf://")


# --------------------------------------------------------------------------- formats


def dataset_format(cfg, column_names: list[str], source: str, objective: str = "sft") -> str:
    """The declared format, or the one of the objective's that the columns show (honouring dataset.columns)."""
    if cfg.format != "auto":
        return cfg.format
    fmt = detect_format(column_names, cfg.columns, objective)
    if fmt is None:
        raise InvalidDataset(f"{source}: {undetectable(column_names, objective, cfg.columns)}")
    return fmt


CHECKED_FORMATS = ("preference", "unpaired", "prompts")


def check_rows(ds, fmt: str, columns: ColumnMapping | None, source: str, cache_dir: Path) -> None:
    """Preference and unpaired rows: the first unusable one is refused with its file:line."""
    if fmt not in CHECKED_FORMATS:
        return
    from .held_out import _row_location

    for i, row in enumerate(ds):
        problem = row_problem(row, fmt, columns)
        if problem:
            raise InvalidDataset(f"{_row_location(source, i, cache_dir)}: {problem}")


def check_columns(column_names: list[str], columns: ColumnMapping | None, fmt: str, source: str) -> None:
    m = columns_of(fmt, columns)
    for f in FORMATS[fmt].required:
        if m[f] not in column_names:
            mapped = columns is not None and getattr(columns, f)
            hint = f" (mapped by dataset.columns.{f})" if mapped else f" (set dataset.columns.{f} if yours is named differently)"
            raise InvalidDataset(f"{source}: format {fmt} needs column {m[f]!r}{hint}; found columns: {', '.join(column_names) or 'none'}")


def held_out_file_rows(uri: str, fmt: str, columns: ColumnMapping | None, use_messages: bool, cache_dir: Path,
                       s3_endpoint=None, s3_region=None) -> list[dict]:
    """A held-out file (evalUri): loaded whole (it is small), checked like the
    training rows, in the training shape."""
    raw = load_table(uri, cache_dir, s3_endpoint, s3_region)
    if len(raw) == 0:
        raise InvalidDataset(f"{uri}: the evaluation dataset is empty")
    check_columns(raw.column_names, columns, fmt, uri)
    check_rows(raw, fmt, columns, uri, cache_dir)
    return normalise(raw, fmt, columns, uri, use_messages, cache_dir)[0]


def _blank(v) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _messages(row: dict, column: str, columns: ColumnMapping | None, where: str) -> list[dict]:
    problem = row_problem(row, "chat", columns)
    if problem:
        raise InvalidDataset(f"{where}: {problem}")
    return [{"role": m["role"], "content": m["content"]} for m in row[column]]


def normalise(ds, fmt: str, columns: ColumnMapping | None, source: str, use_messages: bool,
              cache_dir: Path | None = None) -> tuple[list[dict], int]:
    """Rows in TRL's shape for fmt; returns (rows, rows dropped for a blank required field).
    With `cache_dir` (where s3:// files were fetched) a bad row is named by its file:line."""
    from .held_out import _row_location

    where = (lambda i: _row_location(source, i, cache_dir)) if cache_dir is not None else (lambda i: f"{source}: row {i + 1}")
    m = columns_of(fmt, columns)
    out, dropped = [], 0
    for i, row in enumerate(ds):
        if fmt in CHECKED_FORMATS:  # check_rows refused the bad ones, with their lines
            problem = row_problem(row, fmt, columns)
            if problem:
                raise InvalidDataset(f"{where(i)}: {problem}")
            out.append({f: _answer(row.get(m[f])) if f == "answer" else row[m[f]] for f in FORMATS[fmt].fields})
            continue
        if any(_blank(row.get(m[f])) for f in FORMATS[fmt].required):
            dropped += 1
            continue
        if fmt == "instruction":
            inp = row.get(m["input"]) if m["input"] in row else None
            out.append({"prompt": alpaca_prompt(str(row[m["instruction"]]), None if _blank(inp) else str(inp)), "completion": str(row[m["output"]])})
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


def split(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic by seed, independent of process count and library versions."""
    import random

    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(rows) * fraction))
    if n_eval >= len(rows):
        raise InvalidDataset(f"evalSplit {fraction} leaves no training rows out of {len(rows)}")
    eval_idx = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in eval_idx], [r for i, r in enumerate(rows) if i in eval_idx]


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


def content_hash(ds) -> str:
    """sha256 of the training data as loaded, row by row (the model card names it)."""
    h = hashlib.sha256()
    for row in ds:
        h.update(json.dumps(row, sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def prepare(cfg: DatasetSpec, tokenizer, *, seed: int, cache_dir: Path, s3_endpoint=None, s3_region=None,
            evaluation: EvaluationSpec | None = None, objective: str = "sft", count: bool = False,
            resume_dir: Path | None = None) -> PreparedData:
    """`count` and `resume_dir` apply to dataset.streaming only: whether to count
    the rows before training, and the checkpoint a resumed stream continues from."""
    if cfg.streaming:
        from .streaming import prepare_stream

        return prepare_stream(cfg, tokenizer, seed=seed, cache_dir=cache_dir, s3_endpoint=s3_endpoint, s3_region=s3_region,
                              evaluation=evaluation, objective=objective, count=count, resume_dir=resume_dir)
    if cfg.sources:  # several sources mixed by weight
        from .mixed import prepare_mixed

        return prepare_mixed(cfg, tokenizer, seed=seed, cache_dir=cache_dir, s3_endpoint=s3_endpoint, s3_region=s3_region,
                             evaluation=evaluation, objective=objective)
    from .source_rows import finish, read_source

    source = cfg.train_uri
    read = read_source(source, cfg, tokenizer, cache_dir=cache_dir, s3_endpoint=s3_endpoint, s3_region=s3_region,
                       evaluation=evaluation, objective=objective)
    fmt, use_messages, rows, dropped = read.format, read.use_messages, read.rows, read.dropped
    from .held_out import test_rows as held_out_rows

    stats = {"format": fmt, "rows": read.rows_read, "droppedBlank": dropped, "duplicatesDropped": 0, "sha256": read.sha256}
    if cfg.dedupe:
        rows, stats["duplicatesDropped"] = dedupe(rows)
    if not rows:
        raise InvalidDataset(f"{source}: no usable rows ({dropped} had a blank required field)")
    rows, test_rows = held_out_rows(evaluation, rows, fmt, cfg, use_messages, seed, cache_dir, s3_endpoint, s3_region)

    eval_rows: list[dict] = []
    if cfg.eval_uri:
        eval_rows = held_out_file_rows(cfg.eval_uri, fmt, cfg.columns, use_messages, cache_dir, s3_endpoint, s3_region)
    elif cfg.eval_split:
        rows, eval_rows = split(rows, cfg.eval_split, seed)

    return finish(rows, eval_rows, test_rows, fmt=fmt, use_messages=use_messages, cfg=cfg, tokenizer=tokenizer, stats=stats)

