"""The files of a streamed dataset (`dataset.streaming`), read row by row from
a position: JSONL by byte offset (line-numbered errors), Parquet by row group."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from ..errors import InvalidDataset
from ..storage import fetch, local_path
from .read import download_dir

STREAMED_SUFFIXES = (".jsonl", ".parquet")


@dataclass(frozen=True)
class StreamPosition:
    """Where reading continues: pass `pass_` over the data, file number `file`,
    at byte (JSONL) or row (Parquet) `offset`, after `line` lines, with `index`
    training examples of this pass already read."""

    pass_: int = 0
    file: int = 0
    line: int = 0
    offset: int = 0
    index: int = 0

    @classmethod
    def of(cls, example: dict) -> "StreamPosition":
        """The position right after this example."""
        return cls(example["_pass"], example["_file"], example["_line"], example["_offset"], example["_index"] + 1)

    def to_json(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- files


def stream_files(uri: str, cache_dir: Path, s3_endpoint=None, s3_region=None) -> tuple[list[str], list[Path]]:
    """(names as the user knows them, local paths) of the training files, in reading order."""
    if uri.startswith(("file://", "pvc://")):
        root, shown_root = local_path(uri), uri.rstrip("/")
    elif uri.startswith("s3://"):
        # Downloaded to the pod's disk (not memory); read from there.
        root = fetch(uri, download_dir(uri, cache_dir), s3_endpoint=s3_endpoint, s3_region=s3_region)
        shown_root = uri.rstrip("/")
    else:
        raise InvalidDataset(f"{uri}: dataset.streaming reads s3://, pvc:// or file:// .jsonl/.parquet files")
    if not root.exists():
        raise InvalidDataset(f"{uri}: no such file or directory")
    if root.is_file():
        paths, names = [root], [shown_root]
    else:
        paths = sorted(p for p in root.rglob("*") if p.is_file())
        names = [f"{shown_root}/{p.relative_to(root)}" for p in paths]
    wrong = [n for n, p in zip(names, paths) if p.suffix.lower() not in STREAMED_SUFFIXES]
    if wrong or not paths:
        raise InvalidDataset(f"{wrong[0] if wrong else uri}: dataset.streaming reads only .jsonl and .parquet files"
                             f"{' (a directory of them)' if not root.is_file() else ''}; convert it or turn streaming off")
    return names, paths


def read_rows(names: list[str], paths: list[Path], start: StreamPosition) -> Iterator[tuple[str, dict, int, int, int]]:
    """(where, row, file number, line, offset after the row) from `start` on."""
    for number in range(start.file, len(paths)):
        at = start if number == start.file else StreamPosition(start.pass_, number)
        reader = _jsonl if paths[number].suffix.lower() == ".jsonl" else _parquet
        for line, offset, row in reader(names[number], paths[number], at.line, at.offset):
            yield (f"{names[number]}:{line}" if reader is _jsonl else f"{names[number]}: row {line}"), row, number, line, offset


def _jsonl(name: str, path: Path, line: int, offset: int):
    with path.open("rb") as fh:
        fh.seek(offset)
        for raw in fh:
            line, offset = line + 1, offset + len(raw)
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
                raise InvalidDataset(f"{name}:{line}: not valid JSON ({why}); each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise InvalidDataset(f"{name}:{line}: expected a JSON object per line, got {type(row).__name__}")
            yield line, offset, row


def _parquet(name: str, path: Path, line: int, offset: int):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - a library parse error becomes one line
        raise InvalidDataset(f"{name}: cannot read as parquet: {str(exc).splitlines()[0][:200]}") from None
    first, group = 0, 0
    while group < pf.num_row_groups and first + pf.metadata.row_group(group).num_rows <= offset:
        first += pf.metadata.row_group(group).num_rows
        group += 1
    row_number = first
    for batch in pf.iter_batches(batch_size=1024, row_groups=list(range(group, pf.num_row_groups))):
        for row in batch.to_pylist():
            row_number += 1
            if row_number > offset:
                yield row_number, row_number, row
