"""One training file read and pre-flighted (`read_source`), and the prepared
data assembled from the rows (`finish`): the steps `data.prepare` takes for
trainUri and `mixed_data` for each of dataset.sources, so both check a file
the same way."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from kubetune_contract.sections import DatasetSpec, EvaluationSpec

from .read import (CHECKED_FORMATS, PreparedData, check_columns, check_rows, content_hash, dataset_format, has_generation_markers,
                   load_table, normalise, token_lengths)
from ..errors import InvalidDataset

log = logging.getLogger("kubetune.data")


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
    from .held_out import check_answers

    if evaluation is not None:
        check_answers(raw, fmt, spec.columns, evaluation, uri, cache_dir)
    rows, dropped = normalise(raw, fmt, spec.columns, uri, use_messages, cache_dir)
    return SourceRows(rows=rows, format=fmt, use_messages=use_messages, rows_read=len(raw), dropped=dropped, sha256=content_hash(raw))


def training_shape(fmt: str, use_messages: bool) -> str:
    return fmt if fmt in CHECKED_FORMATS else "messages" if use_messages else ("text" if fmt == "text" else "prompt_completion")


def finish(rows: list[dict], eval_rows: list[dict], test_rows: list[dict], *, fmt: str, use_messages: bool, cfg: DatasetSpec,
           tokenizer, stats: dict) -> PreparedData:
    """The prepared data, with the token statistics of the training rows."""
    import datasets

    from .held_out import seen_in_training

    lengths = token_lengths(rows, tokenizer)
    stats.update(
        trainRows=len(rows), evalRows=len(eval_rows), testRows=len(test_rows), testRowsSeenInTraining=seen_in_training(rows, test_rows),
        maxSeqLength=cfg.max_seq_length,
        truncated=sum(1 for n in lengths if n > cfg.max_seq_length),
        trainTokens=sum(min(n, cfg.max_seq_length) for n in lengths),
        longestTokens=max(lengths) if lengths else 0,
    )
    if stats["truncated"]:
        log.warning("%d of %d training rows exceed maxSeqLength %d tokens and are truncated", stats["truncated"], len(rows), cfg.max_seq_length)
    shape = training_shape(fmt, use_messages)
    return PreparedData(
        train=datasets.Dataset.from_list(rows),
        eval=datasets.Dataset.from_list(eval_rows) if eval_rows else None,
        format=fmt, shape=shape,
        completion_only_loss=shape == "prompt_completion",
        assistant_only_loss=shape == "messages",
        stats=stats,
        test=datasets.Dataset.from_list(test_rows) if test_rows else None,
    )
