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
from typing import Iterator

FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "chat": ("messages",),
    "instruction": ("instruction", "output"),
    "completion": ("prompt", "completion"),
    "text": ("text",),
}
CHAT_ROLES = {"system", "user", "assistant", "tool"}


@dataclass
class Row:
    where: str  # "line 12" or "row 12"
    data: object


@dataclass
class DatasetReport:
    source: str
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


# --------------------------------------------------------------------------- row checks


def detect_format(row: dict) -> str | None:
    for name, fields in FORMAT_FIELDS.items():
        if all(f in row for f in fields):
            return name
    return None


def _nonempty_string(row: dict, key: str) -> str | None:
    if key not in row or row[key] is None:
        return f"missing field {key!r}"
    if not isinstance(row[key], str):
        return f"field {key!r} must be a string, got {type(row[key]).__name__}"
    if not row[key].strip():
        return f"field {key!r} is empty"
    return None


def check_row(row: object, fmt: str) -> tuple[str | None, int]:
    """(problem or None, character length of the trainable text)."""
    if not isinstance(row, dict):
        return f"expected an object with fields {', '.join(FORMAT_FIELDS[fmt])}, got {type(row).__name__}", 0
    if fmt == "chat":
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            return "field 'messages' must be a non-empty list of {role, content}", 0
        length = 0
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                return f"messages[{i}] must be an object with role and content", 0
            if message.get("role") not in CHAT_ROLES:
                return f"messages[{i}].role {message.get('role')!r} is not one of {', '.join(sorted(CHAT_ROLES))}", 0
            if not isinstance(message.get("content"), str):
                return f"messages[{i}].content must be a string", 0
            length += len(message["content"])
        if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
            return "no non-empty assistant message to train on", 0
        return None, length
    for key in FORMAT_FIELDS[fmt]:
        problem = _nonempty_string(row, key)
        if problem:
            return problem, 0
    if fmt == "instruction" and row.get("input") not in (None, "") and not isinstance(row.get("input"), str):
        return f"field 'input' must be a string, got {type(row['input']).__name__}", 0
    return None, sum(len(str(row.get(k) or "")) for k in (*FORMAT_FIELDS[fmt], "input"))


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


def check_dataset(uri: str, declared_format: str = "auto", max_errors: int = 50) -> DatasetReport:
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
                fmt = detect_format(item.data) if isinstance(item.data, dict) else None
                if fmt is None:
                    keys = ", ".join(sorted(item.data)) if isinstance(item.data, dict) else type(item.data).__name__
                    raise DatasetError(
                        f"{item.where}: cannot detect the format from fields ({keys}); expected one of: "
                        + "; ".join(f"{n} ({', '.join(f)})" for n, f in FORMAT_FIELDS.items())
                    )
            problem, length = check_row(item.data, fmt)
            if problem:
                report.bad_row_count += 1
                if len(report.bad_rows) < max_errors:
                    report.bad_rows.append(f"{item.where}: {problem}")
                continue
            report.lengths.append(length)
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
