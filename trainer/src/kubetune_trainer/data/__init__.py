"""Training data, in one direction through the pipeline, each module importing
only the ones before it (an import contract checks it, `.importlinter`):

    read        a file into a datasets.Dataset, and where its rows are (file:line)
    preflight   its format, columns and rows checked before the first step
    normalise   every format to one of TRL's shapes; token lengths, duplicates
    source_rows one training file read, checked and normalised
    held_out    the validation and test rows
    prepared    what `prepare` returns, with its statistics
    train_uri   dataset.trainUri
    mixing      dataset.sources: the mixed epoch by weight (pure)
    mixed       dataset.sources: each source prepared, then mixed
    stream_files, streaming, stream_train   dataset.streaming: the files by
                position, the stream and its plan, the Trainer's side

`prepare` is the entry: it hands the spec to the path it asks for.
"""

from __future__ import annotations

from pathlib import Path

from kubetune_contract.sections import DatasetSpec, EvaluationSpec

from .mixed import prepare_mixed
from .prepared import PreparedData
from .streaming import prepare_stream
from .train_uri import prepare_train_uri

__all__ = ["PreparedData", "prepare"]


def prepare(cfg: DatasetSpec, tokenizer, *, seed: int, cache_dir: Path, s3_endpoint=None, s3_region=None,
            evaluation: EvaluationSpec | None = None, objective: str = "sft", count: bool = False,
            resume_dir: Path | None = None) -> PreparedData:
    """`count` and `resume_dir` apply to dataset.streaming only: whether to count
    the rows before training, and the checkpoint a resumed stream continues from."""
    where = {"seed": seed, "cache_dir": cache_dir, "s3_endpoint": s3_endpoint, "s3_region": s3_region,
             "evaluation": evaluation, "objective": objective}
    if cfg.streaming:
        return prepare_stream(cfg, tokenizer, **where, count=count, resume_dir=resume_dir)
    if cfg.sources:  # several sources mixed by weight
        return prepare_mixed(cfg, tokenizer, **where)
    return prepare_train_uri(cfg, tokenizer, **where)
