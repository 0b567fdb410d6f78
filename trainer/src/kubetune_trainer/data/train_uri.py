"""`dataset.trainUri`: one training file read and pre-flighted, duplicates
dropped, the test and validation rows held out, the rest prepared."""

from __future__ import annotations

from pathlib import Path

from kubetune_contract.sections import DatasetSpec, EvaluationSpec

from ..errors import InvalidDataset
from .held_out import held_out_file_rows, held_out_test_rows, split
from .normalise import dedupe
from .prepared import PreparedData, finish
from .source_rows import read_source


def prepare_train_uri(cfg: DatasetSpec, tokenizer, *, seed: int, cache_dir: Path, s3_endpoint=None, s3_region=None,
                      evaluation: EvaluationSpec | None = None, objective: str = "sft") -> PreparedData:
    source = cfg.train_uri
    read = read_source(source, cfg, tokenizer, cache_dir=cache_dir, s3_endpoint=s3_endpoint, s3_region=s3_region,
                       evaluation=evaluation, objective=objective)
    fmt, use_messages, rows, dropped = read.format, read.use_messages, read.rows, read.dropped
    stats = {"format": fmt, "rows": read.rows_read, "droppedBlank": dropped, "duplicatesDropped": 0, "sha256": read.sha256}
    if cfg.dedupe:
        rows, stats["duplicatesDropped"] = dedupe(rows)
    if not rows:
        raise InvalidDataset(f"{source}: no usable rows ({dropped} had a blank required field)")
    rows, test_rows = held_out_test_rows(evaluation, rows, fmt, cfg, use_messages, seed, cache_dir, s3_endpoint, s3_region)

    eval_rows: list[dict] = []
    if cfg.eval_uri:
        eval_rows = held_out_file_rows(cfg.eval_uri, fmt, cfg.columns, use_messages, cache_dir, s3_endpoint, s3_region)
    elif cfg.eval_split:
        rows, eval_rows = split(rows, cfg.eval_split, seed)

    return finish(rows, eval_rows, test_rows, fmt=fmt, use_messages=use_messages, cfg=cfg, tokenizer=tokenizer, stats=stats)
