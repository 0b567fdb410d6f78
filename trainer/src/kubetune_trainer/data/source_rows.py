"""One training file read, pre-flighted and normalised (`read_source`): the
steps trainUri and each of dataset.sources take, so both check a file the same
way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kubetune_contract.sections import EvaluationSpec

from ..errors import InvalidDataset
from .normalise import has_generation_markers, normalise
from .preflight import check_answers, check_columns, check_rows, dataset_format
from .read import content_hash, load_table


@dataclass
class SourceRows:
    """One training file as read, checked and normalised (`read_source`)."""

    rows: list[dict]
    format: str
    use_messages: bool
    rows_read: int
    dropped: int
    sha256: str


def read_source(uri: str, spec, tokenizer, *, cache_dir: Path, s3_endpoint=None, s3_region=None,
                evaluation: EvaluationSpec | None = None, objective: str = "sft") -> SourceRows:
    """Load one training file and pre-flight it (format, columns, rows, the
    evaluation's answers), each problem with its file and line; `spec` is the
    DatasetSpec or a DatasetSource (format and columns)."""
    raw = load_table(uri, cache_dir, s3_endpoint, s3_region)
    if len(raw) == 0:
        raise InvalidDataset(f"{uri}: the dataset is empty")
    fmt = dataset_format(spec, raw.column_names, uri, objective)
    check_columns(raw.column_names, spec.columns, fmt, uri)
    check_rows(raw, fmt, spec.columns, uri, cache_dir)
    use_messages = fmt == "chat" and has_generation_markers(getattr(tokenizer, "chat_template", None))
    if fmt == "chat" and not getattr(tokenizer, "chat_template", None):
        raise InvalidDataset(f"{uri}: chat data needs a tokenizer with a chat template; the model's tokenizer has none")
    if evaluation is not None:
        check_answers(raw, fmt, spec.columns, evaluation, uri, cache_dir)
    rows, dropped = normalise(raw, fmt, spec.columns, uri, use_messages, cache_dir)
    return SourceRows(rows=rows, format=fmt, use_messages=use_messages, rows_read=len(raw), dropped=dropped, sha256=content_hash(raw))

