"""`dataset.streaming`: training rows read lazily, file by file, for data larger
than the pod's memory.

- Files: one .jsonl or .parquet file, or a directory (prefix) of them, read in
  sorted order; JSONL by byte offset, Parquet by row group. Each row gets the
  same checks as in memory (`kubetune_contract.formats`), at the point it is
  read, with its `file:line` (Parquet: `file: row N`).
- Split: a row is a test row when a stable hash of its normalised content
  (sha256, first 8 bytes as a fraction of 2**64) falls under
  `evaluation.testSplit`, a validation row when it falls in the next
  `evalSplit` of the rest; the same row lands on the same side on every pass,
  resume and process count. The held-out rows are kept in memory, capped.
- Steps: `training.maxSteps`, or one counting pass before training (parses,
  checks and tokenises every row, trains nothing) that counts the examples.
- Position: every example carries where it was read (`stream_train` records
  what training consumed, in the committed checkpoint, and a resumed run
  starts the stream there).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from kubetune_contract.evaluation_data import answer_problem
from kubetune_contract.formats import FORMATS, columns_of, row_problem
from kubetune_contract.sections import DatasetSpec, EvaluationSpec

from ..errors import InvalidDataset
from .held_out import held_out_file_rows, held_out_test_rows
from .normalise import has_generation_markers, normalise, token_lengths
from .preflight import blank, check_columns, dataset_format
from .prepared import PreparedData
from .stream_files import StreamPosition, read_rows, stream_files

log = logging.getLogger("kubetune.data")

# Validation rows kept in memory (a stream may hold millions of them); the test
# rows are capped by evaluation.maxSamples, the rows the evaluation reads.
VALIDATION_ROWS_CAP = 1000
# Training rows the evaluation's baselines (mean, linear) learn from: the first ones.
BASELINE_ROWS_CAP = 10000
# Columns each example carries besides its data: where it was read.
POSITION_COLUMNS = ("_pass", "_file", "_line", "_offset", "_index")
PLAN_FILE = "stream-plan.json"
POSITION_FILE = "stream-position.json"
HASH_SPLIT = "sha256 of the normalised row (stable across passes, resumes and processes)"


# --------------------------------------------------------------------------- rows


def side(row: dict, test_fraction: float, eval_fraction: float) -> str:
    """"test", "eval" or "train", by where the row's content hashes to in [0, 1)."""
    digest = hashlib.sha256(json.dumps(row, sort_keys=True, ensure_ascii=False).encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    return "eval" if u < test_fraction + eval_fraction * (1 - test_fraction) else "train"


@dataclass
class RowRules:
    """How a read row becomes a training row: the format's checks, its normalised shape."""

    fmt: str
    cfg: DatasetSpec
    use_messages: bool
    scored: tuple[str, ...] = ()  # metrics that score answers: each row's must parse

    def usable(self, row: dict, where: str) -> dict | None:
        """The normalised row, or None for a blank required field (dropped, counted)."""
        m = columns_of(self.fmt, self.cfg.columns)
        if any(blank(row.get(m[f])) for f in FORMATS[self.fmt].required):
            return None
        problem = row_problem(row, self.fmt, self.cfg.columns) or (
            answer_problem(row, self.fmt, list(self.scored), self.cfg.columns) if self.scored else None)
        if problem:
            raise InvalidDataset(f"{where}: {problem}")
        return normalise([row], self.fmt, self.cfg.columns, where, self.use_messages)[0][0]


# --------------------------------------------------------------------------- the stream


@dataclass
class TrainingStream:
    """The training rows as a restartable stream: each iteration is one pass,
    from `start` (the resume point) the first time, from the top after."""

    names: list[str]
    paths: list[Path]
    rules: RowRules
    test_fraction: float
    eval_fraction: float
    start: StreamPosition = field(default_factory=StreamPosition)
    examples: int | None = None  # training examples per pass, from the counting pass (None: not counted)
    plan: dict = field(default_factory=dict)  # what a resumed run reuses instead of counting again

    def rows(self, start: StreamPosition) -> Iterator[tuple[StreamPosition, str, dict, str]]:
        """(position after the row, where, normalised row, side) of every usable row from `start`."""
        index = start.index
        for where, raw, number, line, offset in read_rows(self.names, self.paths, start):
            row = self.rules.usable(raw, where)
            if row is None:
                yield StreamPosition(start.pass_, number, line, offset, index), where, None, "blank"
                continue
            which = side(row, self.test_fraction, self.eval_fraction)
            index += which == "train"
            yield StreamPosition(start.pass_, number, line, offset, index), where, row, which

    def examples_from_start(self) -> Iterator[dict]:
        """One pass of training examples, each with its position columns."""
        start = self.start
        while True:
            yielded = False
            for pos, _where, row, which in self.rows(start):
                if which == "train":
                    yielded = True
                    yield {**row, "_pass": pos.pass_, "_file": pos.file, "_line": pos.line, "_offset": pos.offset, "_index": pos.index - 1}
            # A pass that reached the end: the next one starts at the top.
            self.start = StreamPosition(start.pass_ + 1)
            # A resume point at the very end of a pass goes on with the next pass
            # (an iteration with no example at all would end training).
            if yielded or start == StreamPosition(start.pass_):
                return
            start = self.start

    def sample(self, n: int) -> list[dict]:
        """The first `n` training rows, without moving the stream (the baselines' training answers)."""
        out = []
        for _pos, _where, row, which in self.rows(StreamPosition()):
            if which == "train":
                out.append(row)
                if len(out) >= n:
                    break
        return out

    def fingerprint(self) -> list:
        return [[n, p.stat().st_size] for n, p in zip(self.names, self.paths)]

    def dataset(self):
        """A datasets.IterableDataset over the passes (TRL tokenises it lazily)."""
        import datasets

        return datasets.IterableDataset.from_generator(_examples_of, gen_kwargs={"stream": self})


def _examples_of(stream: TrainingStream):
    yield from stream.examples_from_start()


# --------------------------------------------------------------------------- preparing


def prepare_stream(cfg: DatasetSpec, tokenizer, *, seed: int, cache_dir: Path, s3_endpoint=None, s3_region=None,
                   evaluation: EvaluationSpec | None = None, objective: str = "sft", count: bool = False,
                   resume_dir: Path | None = None) -> PreparedData:
    """The stream, its held-out rows and its statistics; `count`: one counting pass
    (unless the resumed checkpoint's plan, made from the same files, has it)."""
    import datasets

    del seed, objective  # the split is by content, not by seed; the contract allows sft only
    names, paths = stream_files(cfg.train_uri, cache_dir, s3_endpoint, s3_region)
    first = next(read_rows(names, paths, StreamPosition()), None)
    if first is None:
        raise InvalidDataset(f"{cfg.train_uri}: the dataset is empty")
    fmt = dataset_format(cfg, list(first[1]), cfg.train_uri, "sft")
    check_columns(list(first[1]), cfg.columns, fmt, names[0])
    if fmt == "chat" and not getattr(tokenizer, "chat_template", None):
        raise InvalidDataset(f"{cfg.train_uri}: chat data needs a tokenizer with a chat template; the model's tokenizer has none")
    use_messages = fmt == "chat" and has_generation_markers(getattr(tokenizer, "chat_template", None))
    scored = tuple([*evaluation.metrics, *evaluation.validation_metrics]) if evaluation else ()
    stream = TrainingStream(names, paths, RowRules(fmt, cfg, use_messages, scored),
                            test_fraction=(evaluation.test_split or 0.0) if evaluation else 0.0, eval_fraction=cfg.eval_split or 0.0)
    plan = _reused_plan(stream, resume_dir, count) or _plan(stream, cfg, evaluation, tokenizer, count)
    stream.start = resume_position(resume_dir)
    stream.plan, stream.examples = plan, plan["stats"].get("trainRows" if not cfg.packing else "packedSequences")
    eval_rows, test_rows = plan["eval"], plan["test"]
    if cfg.eval_uri or (evaluation is not None and evaluation.test_uri):
        eval_rows, test_rows = _rows_from_uris(cfg, evaluation, fmt, use_messages, cache_dir, s3_endpoint, s3_region, eval_rows, test_rows)
    shape = "messages" if use_messages else ("text" if fmt == "text" else "prompt_completion")
    stats = {**plan["stats"], "evalRows": len(eval_rows), "testRows": len(test_rows)}
    return PreparedData(train=stream.dataset(), eval=datasets.Dataset.from_list(eval_rows) if eval_rows else None,
                        format=fmt, shape=shape, completion_only_loss=shape == "prompt_completion",
                        assistant_only_loss=shape == "messages", stats=stats,
                        test=datasets.Dataset.from_list(test_rows) if test_rows else None, stream=stream)


def _rows_from_uris(cfg, evaluation, fmt, use_messages, cache_dir, s3_endpoint, s3_region, eval_rows, test_rows):
    """evalUri / evaluation.testUri: small files, loaded into memory as without streaming."""
    if cfg.eval_uri:
        eval_rows = held_out_file_rows(cfg.eval_uri, fmt, cfg.columns, use_messages, cache_dir, s3_endpoint, s3_region)[:VALIDATION_ROWS_CAP]
    if evaluation is not None and evaluation.test_uri:
        test_rows = held_out_test_rows(evaluation, [], fmt, cfg, use_messages, 0, cache_dir, s3_endpoint, s3_region)[1]
    return eval_rows, test_rows


def _plan(stream: TrainingStream, cfg: DatasetSpec, evaluation: EvaluationSpec | None, tokenizer, count: bool) -> dict:
    """The held-out rows (capped) and the statistics: from a full counting pass
    when `count`, else from reading only until the held-out caps are filled."""
    test_cap = evaluation.max_samples if evaluation is not None and evaluation.test_split else 0
    eval_cap = VALIDATION_ROWS_CAP if cfg.eval_split else 0
    held: dict[str, list] = {"eval": [], "test": []}
    tally = {"rows": 0, "droppedBlank": 0, "trainRows": 0}
    counter = _Counter(cfg, tokenizer) if count else None
    digest = hashlib.sha256()
    started = time.monotonic()
    for _pos, _where, row, which in stream.rows(StreamPosition()):
        tally["rows"] += 1
        if which == "blank":
            tally["droppedBlank"] += 1
        elif which == "train":
            tally["trainRows"] += 1
            if counter:
                counter.add(row)
        elif len(held[which]) < (test_cap if which == "test" else eval_cap):
            held[which].append(row)
        if counter:
            digest.update(json.dumps(row, sort_keys=True, default=str).encode() + b"\n")
        elif len(held["eval"]) >= eval_cap and len(held["test"]) >= test_cap:
            break  # without a count, reading stops once the held-out rows are in
    stats: dict = {"format": stream.rules.fmt, "streamed": True, "split": HASH_SPLIT if (eval_cap or test_cap) else None,
                   "dedupe": "off (not available with streaming)", "maxSeqLength": cfg.max_seq_length}
    if counter:
        if not tally["trainRows"]:
            raise InvalidDataset(f"{cfg.train_uri}: no usable training rows ({tally['droppedBlank']} had a blank required field)")
        stats.update(tally, sha256=digest.hexdigest(), **counter.stats(), countingPassSeconds=round(time.monotonic() - started, 2))
        log.info("counting pass over %s: %d rows in %.1f s", cfg.train_uri, tally["rows"], stats["countingPassSeconds"])
    return {"version": 1, "files": stream.fingerprint(), "stats": stats, **held}


class _Counter:
    """Token statistics of the training rows, and the packed sequences they make."""

    def __init__(self, cfg: DatasetSpec, tokenizer, batch: int = 1000):
        self.cfg, self.tokenizer, self.batch = cfg, tokenizer, batch
        self.pending: list[dict] = []
        self.lengths = {"truncated": 0, "trainTokens": 0, "longestTokens": 0}
        self.packer = GreedyPacker(cfg.max_seq_length)

    def add(self, row: dict) -> None:
        self.pending.append(row)
        if len(self.pending) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        for n in token_lengths(self.pending, self.tokenizer):
            self.lengths["truncated"] += n > self.cfg.max_seq_length
            self.lengths["trainTokens"] += min(n, self.cfg.max_seq_length)
            self.lengths["longestTokens"] = max(self.lengths["longestTokens"], n)
            self.packer.count(min(n, self.cfg.max_seq_length))
        self.pending = []

    def stats(self) -> dict:
        self._flush()
        return {**self.lengths, **({"packedSequences": self.packer.sequences + bool(self.packer.filled)} if self.cfg.packing else {})}


class GreedyPacker:
    """Whole rows, in stream order, into sequences of at most `capacity` tokens:
    a sequence is emitted when the next row does not fit (rows are already
    truncated to maxSeqLength), so each packed sequence ends at a row boundary
    and the stream position after it is exact."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.filled = 0
        self.sequences = 0

    def count(self, length: int) -> bool:
        """Adds a row of `length` tokens; True when it starts a new sequence (the previous one is full)."""
        new = bool(self.filled) and self.filled + length > self.capacity
        if new:
            self.sequences += 1
            self.filled = 0
        self.filled += length
        return new


def _reused_plan(stream: TrainingStream, resume_dir: Path | None, count: bool) -> dict | None:
    """The plan a committed checkpoint carries, when its files are the same (names
    and sizes) and it has the count this run needs."""
    path = resume_dir / PLAN_FILE if resume_dir else None
    if path is None or not path.is_file():
        return None
    plan = json.loads(path.read_text())
    if count and "trainRows" not in plan["stats"]:
        return None
    if plan.get("files") != stream.fingerprint():
        log.warning("the training files changed since the checkpoint; counting them again")
        return None
    log.info("streaming plan reused from the checkpoint (no counting pass)")
    return plan


def resume_position(resume_dir: Path | None) -> StreamPosition:
    """Where a resumed run's stream starts: after the committed step's last row (the top without one)."""
    path = resume_dir / POSITION_FILE if resume_dir else None
    if path is None or not path.is_file():
        return StreamPosition()
    return StreamPosition(**json.loads(path.read_text()))
