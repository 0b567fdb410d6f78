"""The trainer's side of `dataset.streaming` (`streaming.py` reads the rows):
the total steps, the SFT settings a stream needs, packing on the stream, and
which rows training consumed, so a resumed run starts right after them.

What was consumed is known exactly, whatever the data loader reads ahead:
the collator takes each batch's positions off its examples (in the order the
batches are made) and a forward pre-hook on the model hands one batch's over
per training forward (in the order they are used). At each checkpoint the
position after the last consumed row goes into the checkpoint
(`stream-position.json`, with the plan in `stream-plan.json`); on resume the
stream starts there and the Trainer's own batch skipping is off
(`ignore_data_skip`), so nothing is skipped twice and no row is read again.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from pathlib import Path

import torch
from transformers import TrainerCallback

from .stream_files import StreamPosition
from .streaming import PLAN_FILE, POSITION_COLUMNS, POSITION_FILE

# Test hook: a JSONL trace of each training forward's rows ({"step", "rows": [[pass, file, line], ...]}).
TRACE_ENV = "KUBETUNE_STREAM_TRACE"


def total_steps(training, examples: int | None, world_size: int) -> tuple[int, str]:
    """(optimizer steps, where the number came from): training.maxSteps, else the
    counted examples per pass, over the epochs (a step's last micro-batches may
    come from the next pass, so every example of each pass is trained on)."""
    if training.max_steps is not None:
        return training.max_steps, "training.maxSteps"
    micro_batches = math.ceil(examples / (training.batch_size * world_size))
    steps = max(1, math.ceil(training.resolved_epochs * micro_batches / training.gradient_accumulation_steps))
    return steps, f"counting pass: {examples} examples per pass x {training.resolved_epochs:g} epochs"


def sft_overrides(cfg, data, world_size: int) -> dict:
    """SFTConfig fields for a stream (the statistics learn where the steps came from)."""
    steps, source = total_steps(cfg.training, data.stream.examples, world_size)
    data.stats.update(totalSteps=steps, totalStepsFrom=source)
    # A stream has no length: the Trainer needs max_steps. Its own resume skip
    # would re-read (and re-tokenise) every consumed batch: the stream starts at
    # the committed row instead. The position columns reach our collator. TRL
    # tokenises and truncates; packing is ours (`PackedStream`), after it.
    return {"max_steps": steps, "ignore_data_skip": True, "remove_unused_columns": False, "packing": False}


def attach(trainer, data, cfg) -> None:
    """Position tracking (and packing) on a built trainer."""
    consumed = Consumed(trainer, data.stats.get("trainRows"), os.environ.get(TRACE_ENV))
    if cfg.dataset.packing:
        trainer.train_dataset = PackedStream(trainer.train_dataset, cfg.dataset.max_seq_length)
        trainer.data_collator.padding_free = True  # sequences restart their position_ids: block-diagonal attention
    trainer.data_collator = PositionCollator(trainer.data_collator, consumed)
    consumed.attach(trainer.model)
    # First: the position must be in checkpoint-N before the checkpoint callback hands it to the uploader.
    trainer.callback_handler.callbacks.insert(0, StreamCallback(consumed, data.stream))


class PackedStream(torch.utils.data.IterableDataset):
    """Greedy packing on the tokenised stream: whole rows, in order, into
    sequences of at most `capacity` tokens (`streaming.GreedyPacker`'s rule);
    each sequence carries the position of its last row and its rows' lengths
    (`seq_lengths`, from which the collator restarts position_ids)."""

    def __init__(self, source, capacity: int):
        self.source, self.capacity = source, capacity

    def __iter__(self):
        ids, labels, lengths, last = [], [], [], None
        for example in self.source:
            n = len(example["input_ids"])
            if ids and len(ids) + n > self.capacity:
                yield self._sequence(ids, labels, lengths, last)
                ids, labels, lengths = [], [], []
            ids, labels, last = ids + list(example["input_ids"]), labels + list(example["labels"]), example
            lengths.append(n)
        if ids:
            yield self._sequence(ids, labels, lengths, last)

    @staticmethod
    def _sequence(ids, labels, lengths, last) -> dict:
        return {"input_ids": ids, "labels": labels, "seq_lengths": lengths, **{c: last[c] for c in POSITION_COLUMNS}}


class Consumed:
    """The positions of the batches made (pending) and of the last one trained on."""

    def __init__(self, trainer, train_rows: int | None, trace: str | None):
        self.trainer, self.train_rows, self.trace = trainer, train_rows, trace
        self.pending: deque[list[tuple]] = deque()
        self.last: tuple | None = None

    def attach(self, model) -> None:
        model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if not module.training or not self.pending:
            return None
        rows = self.pending.popleft()
        self.last = max(rows, key=lambda r: (r[0], r[1], r[3]))
        if self.trace:
            with open(self.trace, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": self.trainer.state.global_step + 1, "rows": [r[:3] for r in rows]}) + "\n")
        return None

    def position(self) -> StreamPosition | None:
        """The position after the last row trained on, the furthest over all ranks."""
        last = self.last
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            every: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(every, last)
            last = max((r for r in every if r is not None), key=lambda r: (r[0], r[1], r[3]), default=None)
        return StreamPosition.of(dict(zip(POSITION_COLUMNS, last))) if last else None


class PositionCollator:
    """Takes the position columns off a batch's examples, then collates as before."""

    def __init__(self, inner, consumed: Consumed):
        self.inner, self.consumed = inner, consumed

    def __call__(self, features: list[dict]):
        if features and POSITION_COLUMNS[0] in features[0]:
            self.consumed.pending.append([tuple(f.pop(c) for c in POSITION_COLUMNS) for f in features])
        return self.inner(features)


class StreamCallback(TrainerCallback):
    """The epoch as the stream shows it, and the position in each checkpoint."""

    def __init__(self, consumed: Consumed, stream):
        self.consumed, self.stream = consumed, stream

    def on_step_end(self, args, state, control, **kw):
        # The Trainer cannot tell a stream's epochs (it has no length): the pass
        # and how far into it, when the counting pass knows the rows per pass.
        last = self.consumed.last
        if last is not None:
            state.epoch = last[0] + ((last[4] + 1) / self.consumed.train_rows if self.consumed.train_rows else 0.0)

    def on_save(self, args, state, control, **kw):
        position = self.consumed.position()
        if position is None or not state.is_world_process_zero:
            return
        where = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        where.mkdir(parents=True, exist_ok=True)
        (where / POSITION_FILE).write_text(json.dumps(position.to_json()))
        (where / PLAN_FILE).write_text(json.dumps(self.stream.plan))

