"""What `prepare` returns (`PreparedData`): the training, validation and test
rows in one of TRL's shapes, with the statistics the report and the model card
show (`finish` computes them from the rows)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kubetune_contract.sections import DatasetSpec

from .held_out import seen_in_training
from .normalise import token_lengths
from .preflight import CHECKED_FORMATS

log = logging.getLogger("kubetune.data")


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


def training_shape(fmt: str, use_messages: bool) -> str:
    return fmt if fmt in CHECKED_FORMATS else "messages" if use_messages else ("text" if fmt == "text" else "prompt_completion")


def finish(rows: list[dict], eval_rows: list[dict], test_rows: list[dict], *, fmt: str, use_messages: bool, cfg: DatasetSpec,
           tokenizer, stats: dict) -> PreparedData:
    """The prepared data, with the token statistics of the training rows."""
    import datasets

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

