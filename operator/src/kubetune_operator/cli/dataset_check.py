"""Pre-flight a fine-tuning dataset before any GPU is claimed.

`kubetune validate --dataset FILE` reads JSONL, JSON, CSV or Parquet (local or
s3://), detects the row format, and reports every bad row by line number, the
duplicate rows, and length statistics. It never raises on bad data: every
problem becomes a line in the report.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from kubetune_contract.formats import detect_format, row_length, row_problem, undetectable
from kubetune_contract.sections import ColumnMapping

@dataclass
class Row:
    where: str  # "line 12" or "row 12"
    data: object


@dataclass
class DatasetReport:
    source: str
    label: str | None = None  # what the file is to the job, e.g. dataset.sources[1]; prefixes every line
    format: str | None = None
    rows: int = 0
    errors: list[str] = field(default_factory=list)  # fatal, file-level
    bad_rows: list[str] = field(default_factory=list)
    bad_row_count: int = 0
    duplicates: list[str] = field(default_factory=list)
    duplicate_count: int = 0
    lengths: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.bad_row_count == 0 and self.rows > 0


class DatasetError(Exception):
    """A problem that stops reading the file (not one bad row)."""


# --------------------------------------------------------------------------- readers


def _decode(raw: bytes) -> str:
    if b"\x00" in raw[:8192]:
        offset = raw.index(b"\x00")
        raise DatasetError(f"not a text file (NUL byte at offset {offset}); expected JSONL, JSON, CSV or Parquet")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetError(f"line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); datasets must be UTF-8 text") from None


def _json_error(exc: json.JSONDecodeError, line_offset: int = 0) -> str:
    return f"line {exc.lineno + line_offset}: invalid JSON: {exc.msg} (column {exc.colno})"


def _read_jsonl(text: str) -> Iterator[Row | str]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield Row(f"line {number}", json.loads(line))
        except json.JSONDecodeError as exc:
            yield _json_error(exc, number - 1)


def _read_json(text: str) -> Iterator[Row | str]:
    """A JSON array of rows; each row located by the line it starts on."""
    decoder = json.JSONDecoder()
    start = len(text) - len(text.lstrip())
    if not text[start:].startswith("["):
        # Some tools write JSON lines into .json files.
        yield from _read_jsonl(text)
        return
    index = start + 1
    while True:
        while index < len(text) and text[index] in " \t\r\n,":
            index += 1
        if index >= len(text):
            raise DatasetError(f"line {text.count(chr(10)) + 1}: invalid JSON: the array is not closed (file truncated?)")
        if text[index] == "]":
            return
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            raise DatasetError(_json_error(exc)) from None
        yield Row(f"line {text.count(chr(10), 0, index) + 1}", value)
        index = end


def _read_csv(text: str) -> Iterator[Row | str]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        return
    for record in reader:
        if None in record:
            yield f"line {reader.line_num}: more values than the {len(reader.fieldnames)} header columns"
            continue
        yield Row(f"line {reader.line_num}", {k: v for k, v in record.items()})


def _read_parquet(path: Path) -> Iterator[Row | str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow ships with the test extra
        raise DatasetError("reading Parquet needs pyarrow: pip install 'kubetune-operator[parquet]'") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise DatasetError(f"not a readable Parquet file: {exc}") from None
    for number, record in enumerate(table.to_pylist(), start=1):
        yield Row(f"row {number}", record)


def _rows(path: Path) -> Iterator[Row | str]:
    suffix = path.suffix.lower()
    raw = path.read_bytes()
    if not raw.strip():
        raise DatasetError("empty file: no rows")
    if suffix == ".parquet" or raw[:4] == b"PAR1":
        yield from _read_parquet(path)
        return
    text = _decode(raw)
    if suffix in (".jsonl", ".ndjson"):
        yield from _read_jsonl(text)
    elif suffix == ".json":
        yield from _read_json(text)
    elif suffix == ".csv":
        yield from _read_csv(text)
    elif text.lstrip().startswith("{"):
        yield from _read_jsonl(text)
    elif text.lstrip().startswith("["):
        yield from _read_json(text)
    else:
        raise DatasetError(f"unsupported file type {suffix or '(none)'}; expected .jsonl, .json, .csv or .parquet")


# --------------------------------------------------------------------------- entry points


def _local_copy(uri: str) -> Path:
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    if not uri.startswith("s3://"):
        return Path(uri)
    import boto3  # only s3:// needs it

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    target = Path(tempfile.mkdtemp(prefix="kubetune-dataset-")) / (Path(key).name or "data")
    boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL")).download_file(bucket, key, str(target))
    return target


RowCheck = Callable[[dict, str], "str | None"]  # (row, format) -> what is wrong with it, or None


def check_dataset(uri: str, declared_format: str = "auto", max_errors: int = 50, columns: ColumnMapping | None = None,
                  row_check: RowCheck | None = None, objective: str | None = None) -> DatasetReport:
    """Every problem of the file as the trainer would see it: the same format
    detection and row checks (`kubetune_contract.formats`), `columns` mapped;
    `row_check` adds a job's own (its evaluation's answer checks); `objective`
    (a job's) limits detection to the formats it reads."""
    report = DatasetReport(source=uri)
    try:
        path = _local_copy(uri)
        if not path.is_file():
            raise DatasetError("no such file" if not path.exists() else "is a directory, not a data file")
        seen: dict[str, str] = {}
        fmt = None if declared_format == "auto" else declared_format
        for item in _rows(path):
            if isinstance(item, str):
                report.bad_row_count += 1
                if len(report.bad_rows) < max_errors:
                    report.bad_rows.append(item)
                continue
            report.rows += 1
            if fmt is None:
                fmt = detect_format(item.data, columns, objective) if isinstance(item.data, dict) else None
                if fmt is None:
                    keys = list(item.data) if isinstance(item.data, dict) else [type(item.data).__name__]
                    raise DatasetError(f"{item.where}: {undetectable(keys, objective, columns)}")
            problem = row_problem(item.data, fmt, columns) or (row_check(item.data, fmt) if row_check else None)
            if problem:
                report.bad_row_count += 1
                if len(report.bad_rows) < max_errors:
                    report.bad_rows.append(f"{item.where}: {problem}")
                continue
            report.lengths.append(row_length(item.data, fmt, columns))
            digest = hashlib.sha256(json.dumps(item.data, sort_keys=True, default=str).encode()).hexdigest()
            if digest in seen:
                report.duplicate_count += 1
                if len(report.duplicates) < max_errors:
                    report.duplicates.append(f"{item.where} duplicates {seen[digest]}")
            else:
                seen[digest] = item.where
        report.format = fmt
        if report.rows == 0 and not report.bad_row_count:
            raise DatasetError("no rows")
    except DatasetError as exc:
        report.errors.append(str(exc))
    except OSError as exc:
        report.errors.append(f"cannot read: {exc.strerror or exc}")
    except Exception as exc:  # S3 and other client errors: report, never trace back
        report.errors.append(f"cannot read: {type(exc).__name__}: {exc}")
    return report


def _located(source: str, message: str) -> str:
    """`file:12: problem` for line-numbered messages, `file: problem` otherwise."""
    if message.startswith("line "):
        return f"{source}:{message.removeprefix('line ')}"
    return f"{source}: {message}"


def format_report(report: DatasetReport) -> str:
    lines = [_located(report.source, m) for m in (*report.errors, *report.bad_rows)]
    hidden = report.bad_row_count - len(report.bad_rows)
    if hidden > 0:
        lines.append(f"{report.source}: ... and {hidden} more bad rows")
    if report.errors:
        return "\n".join(lines)
    summary = f"{report.source}: format {report.format}, {report.rows} rows, {report.bad_row_count} bad, {report.duplicate_count} duplicate"
    if report.lengths:
        ordered = sorted(report.lengths)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        summary += (
            f"; characters per example: min {ordered[0]}, median {int(statistics.median(ordered))}, "
            f"p95 {p95}, max {ordered[-1]} (~{ordered[-1] // 4} tokens at 4 chars/token)"
        )
    lines.append(summary)
    for duplicate in report.duplicates[:10]:
        lines.append(f"{report.source}: warning: {duplicate}")
    lines.append(f"{report.source}: {'OK' if report.ok else 'FAILED'}")
    return "\n".join(lines)


def labelled(report: DatasetReport) -> str:
    """format_report, each line prefixed with what the file is to the job (dataset.sources[i])."""
    text = format_report(report)
    return "\n".join(f"{report.label}: {line}" for line in text.splitlines()) if report.label else text
