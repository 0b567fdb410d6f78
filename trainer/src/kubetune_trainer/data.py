"""Training data: load, detect the format, map columns, clean, split, count.

Every format is normalised to one of TRL's native shapes so TRL does the
tokenisation, masking and packing:

- instruction (alpaca instruction/input/output) → prompt/completion (loss on the answer)
- completion (prompt/completion)                → prompt/completion (loss on the completion)
- chat (messages)                                → messages with assistant-only loss when the
  chat template marks assistant turns ({% generation %}); otherwise a
  conversational prompt/completion pair (loss on the final assistant turn)
- text                                           → text (loss on everything)

Problems are `InvalidDataset` errors naming the file, line or column and what
would be valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .config import Columns, DataConfig
from .errors import InvalidDataset
from .storage import fetch, local_path

log = logging.getLogger("kubetune.data")

FORMATS = ("instruction", "chat", "completion", "text")
FIELDS = {
    "instruction": ("instruction", "input", "output"),
    "completion": ("prompt", "completion"),
    "chat": ("messages",),
    "text": ("text",),
}
REQUIRED = {"instruction": ("instruction", "output"), "completion": ("prompt", "completion"), "chat": ("messages",), "text": ("text",)}
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
    shape: str  # "prompt_completion" | "messages" | "text"
    completion_only_loss: bool
    assistant_only_loss: bool
    stats: dict = field(default_factory=dict)
    # (prompt text ready for generate(), expected answer) for task metrics
    eval_pairs: list[tuple[str, str]] = field(default_factory=list)


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


def _load_file(path: Path):
    import datasets

    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidDataset(f"{path}: unsupported file type {suffix or '(none)'!r}; use .jsonl, .json, .csv, .parquet or a saved datasets directory")
    try:
        if suffix == ".jsonl":
            return datasets.Dataset.from_list(_read_jsonl(path))
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


def _mapping(columns: Columns, fmt: str) -> dict[str, str]:
    """field → the user's column name."""
    return {f: getattr(columns, f) or f for f in FIELDS[fmt]}


def detect_format(column_names: list[str], columns: Columns, source: str) -> str:
    cols = set(column_names)
    for fmt in ("chat", "completion", "instruction", "text"):
        m = _mapping(columns, fmt)
        if all(m[f] in cols for f in REQUIRED[fmt]):
            return fmt
    raise InvalidDataset(
        f"{source}: cannot detect the format from columns [{', '.join(sorted(cols))}]; expected messages (chat), "
        "prompt+completion (completion), instruction+output (instruction) or text (text); set dataset.format and dataset.columns"
    )


def check_columns(column_names: list[str], columns: Columns, fmt: str, source: str) -> None:
    m = _mapping(columns, fmt)
    for f in REQUIRED[fmt]:
        if m[f] not in column_names:
            hint = f" (mapped by dataset.columns.{f})" if getattr(columns, f) else f" (set dataset.columns.{f} if yours is named differently)"
            raise InvalidDataset(f"{source}: format {fmt} needs column {m[f]!r}{hint}; found columns: {', '.join(column_names) or 'none'}")


def _check_messages(messages, source: str, index: int) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise InvalidDataset(f"{source}: row {index + 1}: messages must be a non-empty list of {{role, content}}")
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InvalidDataset(f"{source}: row {index + 1}: each message needs 'role' and 'content'")
        if m["role"] not in ("system", "user", "assistant", "tool"):
            raise InvalidDataset(f"{source}: row {index + 1}: unknown role {m['role']!r}; valid: system, user, assistant, tool")
    if messages[-1]["role"] != "assistant":
        raise InvalidDataset(f"{source}: row {index + 1}: the last message must be the assistant's answer")
    return [{"role": m["role"], "content": str(m["content"])} for m in messages]


def _blank(v) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def normalise(ds, fmt: str, columns: Columns, source: str, use_messages: bool) -> tuple[list[dict], int]:
    """Rows in TRL's shape for fmt; returns (rows, rows dropped for a blank required field)."""
    m = _mapping(columns, fmt)
    out, dropped = [], 0
    for i, row in enumerate(ds):
        if any(_blank(row.get(m[f])) for f in REQUIRED[fmt]):
            dropped += 1
            continue
        if fmt == "instruction":
            inp = row.get(m["input"]) if m["input"] in row else None
            out.append({"prompt": alpaca_prompt(str(row[m["instruction"]]), None if _blank(inp) else str(inp)), "completion": str(row[m["output"]])})
        elif fmt == "completion":
            out.append({"prompt": str(row[m["prompt"]]), "completion": str(row[m["completion"]])})
        elif fmt == "chat":
            msgs = _check_messages(row[m["messages"]], source, i)
            out.append({"messages": msgs} if use_messages else {"prompt": msgs[:-1], "completion": msgs[-1:]})
        else:
            out.append({"text": str(row[m["text"]])})
    return out, dropped


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


def token_lengths(rows: list[dict], tokenizer) -> list[int]:
    texts = _texts(rows, tokenizer)
    lengths: list[int] = []
    for i in range(0, len(texts), 1000):
        enc = tokenizer(texts[i:i + 1000], add_special_tokens=True)["input_ids"]
        lengths += [len(e) + 1 for e in enc]  # +1: the eos TRL appends
    return lengths


def eval_pairs(rows: list[dict], tokenizer, limit: int) -> list[tuple[str, str]]:
    pairs = []
    for r in rows[:limit]:
        if "messages" in r:
            pairs.append((tokenizer.apply_chat_template(r["messages"][:-1], tokenize=False, add_generation_prompt=True), r["messages"][-1]["content"]))
        elif "prompt" in r and isinstance(r["prompt"], list):
            pairs.append((tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True), r["completion"][0]["content"]))
        elif "prompt" in r:
            pairs.append((r["prompt"], r["completion"]))
    return pairs


def prepare(cfg: DataConfig, tokenizer, *, seed: int, cache_dir: Path, s3_endpoint=None, s3_region=None, generate_samples: int = 0) -> PreparedData:
    import datasets

    source = cfg.train_uri
    raw = load_table(cfg.train_uri, cache_dir, s3_endpoint, s3_region)
    if len(raw) == 0:
        raise InvalidDataset(f"{source}: the dataset is empty")
    fmt = cfg.format if cfg.format != "auto" else detect_format(raw.column_names, cfg.columns, source)
    check_columns(raw.column_names, cfg.columns, fmt, source)
    use_messages = fmt == "chat" and has_generation_markers(getattr(tokenizer, "chat_template", None))
    if fmt == "chat" and not getattr(tokenizer, "chat_template", None):
        raise InvalidDataset(f"{source}: chat data needs a tokenizer with a chat template; the model's tokenizer has none")
    rows, dropped = normalise(raw, fmt, cfg.columns, source, use_messages)
    stats = {"format": fmt, "rows": len(raw), "droppedBlank": dropped, "duplicatesDropped": 0}
    if cfg.dedupe:
        rows, stats["duplicatesDropped"] = dedupe(rows)
    if not rows:
        raise InvalidDataset(f"{source}: no usable rows ({dropped} had a blank required field)")

    eval_rows: list[dict] = []
    if cfg.eval_uri:
        eraw = load_table(cfg.eval_uri, cache_dir, s3_endpoint, s3_region)
        if len(eraw) == 0:
            raise InvalidDataset(f"{cfg.eval_uri}: the evaluation dataset is empty")
        check_columns(eraw.column_names, cfg.columns, fmt, cfg.eval_uri)
        eval_rows, _ = normalise(eraw, fmt, cfg.columns, cfg.eval_uri, use_messages)
    elif cfg.eval_split:
        rows, eval_rows = split(rows, cfg.eval_split, seed)

    lengths = token_lengths(rows, tokenizer)
    stats.update(
        trainRows=len(rows), evalRows=len(eval_rows), maxSeqLength=cfg.max_seq_length,
        truncated=sum(1 for n in lengths if n > cfg.max_seq_length),
        trainTokens=sum(min(n, cfg.max_seq_length) for n in lengths),
        longestTokens=max(lengths) if lengths else 0,
    )
    if stats["truncated"]:
        log.warning("%d of %d training rows exceed maxSeqLength %d tokens and are truncated", stats["truncated"], len(rows), cfg.max_seq_length)
    shape = "messages" if use_messages else ("text" if fmt == "text" else "prompt_completion")
    return PreparedData(
        train=datasets.Dataset.from_list(rows),
        eval=datasets.Dataset.from_list(eval_rows) if eval_rows else None,
        format=fmt, shape=shape,
        completion_only_loss=shape == "prompt_completion",
        assistant_only_loss=shape == "messages",
        stats=stats,
        eval_pairs=eval_pairs(eval_rows, tokenizer, generate_samples) if generate_samples else [],
    )
