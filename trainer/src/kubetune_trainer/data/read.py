"""Reading a training or held-out file: file://, pvc://, s3:// (downloaded to
the pod's cache) or hf:// into a `datasets.Dataset`, and where a row of it is
(`file:line`) for the messages that name it. The first step of the pipeline
(`kubetune_trainer.data`): it imports none of the later ones.

Problems are `InvalidDataset` errors naming the file, line or column and what
would be valid.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import InvalidDataset
from ..storage import fetch, local_path

SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def download_dir(uri: str, cache_dir: Path) -> Path:
    """Where an s3:// dataset is downloaded in the pod's cache (one directory per URI)."""
    return cache_dir / hashlib.sha1(uri.encode()).hexdigest()[:16]


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
        dst = download_dir(uri, cache_dir)
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


def row_location(uri: str, index: int, cache_dir: Path) -> str:
    """`uri:line` for the index-th row of a JSONL file (blank lines skipped, as
    the loader does), `uri: row N` otherwise."""
    if uri.lower().endswith(".jsonl"):
        local = local_path(uri) if uri.startswith(("file://", "pvc://")) else download_dir(uri, cache_dir)
        if local.is_dir():  # an s3 object lands in its own cache directory
            local = next(iter(sorted(local.rglob("*.jsonl"))), local)
        if local.is_file():
            seen = 0
            with local.open(encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if line.strip():
                        if seen == index:
                            return f"{uri}:{lineno}"
                        seen += 1
    return f"{uri}: row {index + 1}"


def content_hash(ds) -> str:
    """sha256 of the training data as loaded, row by row (the model card names it)."""
    h = hashlib.sha256()
    for row in ds:
        h.update(json.dumps(row, sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()

