"""dataset.streaming without a model: the contract's rules, reading by position
(JSONL and Parquet), line-numbered errors at the row that has them, the hash
split, the counting pass, the steps, packing and what training consumed."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import pytest
from pydantic import ValidationError

from kubetune_contract.sections import DatasetSpec
from kubetune_trainer.errors import InvalidDataset
from kubetune_trainer.data.streaming import GreedyPacker, StreamPosition, TrainingStream, prepare_stream, read_rows, side, stream_files


def _rows(n: int) -> list[dict]:
    return [{"prompt": f"question {i}?", "completion": f" answer {i}"} for i in range(n)]


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


class WordTokenizer:
    """Enough of a tokenizer for the counting pass: one token per word."""

    chat_template = None

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [t.split() for t in texts]}


# --------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("uri", ["s3://bucket-one/train.jsonl", "pvc://claim/data/train.PARQUET", "file:///data/shards/", "s3://bucket-one/shards",
                                 "s3://bucket-one"])
def test_streaming_accepts_jsonl_parquet_and_directories(uri):
    assert DatasetSpec(trainUri=uri, streaming=True).streaming


@pytest.mark.parametrize("uri", ["hf://org/data", "s3://bucket-one/train.json", "file:///data/train.csv"])
def test_streaming_refuses_other_data_naming_the_field(uri):
    with pytest.raises(ValidationError, match=r"dataset.streaming reads .jsonl or .parquet files"):
        DatasetSpec(trainUri=uri, streaming=True)
    assert not DatasetSpec(trainUri=uri).streaming  # the same data is fine in memory


def test_streaming_refuses_dedupe():
    with pytest.raises(ValidationError, match=r"dataset.dedupe is not available with dataset.streaming"):
        DatasetSpec(trainUri="s3://bucket-one/t.jsonl", streaming=True, dedupe=True)


# --------------------------------------------------------------------------- reading


def test_jsonl_resumes_at_a_position_without_rereading(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [*_rows(3), "", *_rows(5)[3:]])
    names, paths = stream_files(f"file://{path}", tmp_path)
    every = list(read_rows(names, paths, StreamPosition()))
    assert [w for w, *_ in every] == [f"file://{path}:{n}" for n in (1, 2, 3, 5, 6)]  # blank line 4 skipped, numbered
    _where, _row, file, line, offset = every[2]
    rest = list(read_rows(names, paths, StreamPosition(0, file, line, offset)))
    assert rest == every[3:]


def test_parquet_resumes_inside_a_row_group(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(_rows(10)), tmp_path / "a.parquet", row_group_size=3)
    _jsonl(tmp_path / "b.jsonl", _rows(12)[10:])
    names, paths = stream_files(f"file://{tmp_path}/", tmp_path)
    every = list(read_rows(names, paths, StreamPosition()))
    assert [r["prompt"] for _w, r, *_ in every] == [f"question {i}?" for i in range(12)]
    assert every[4][0] == f"file://{tmp_path}/a.parquet: row 5"
    _w, _r, file, line, offset = every[6]  # row 7: inside the third row group
    assert list(read_rows(names, paths, StreamPosition(0, file, line, offset))) == every[7:]


def test_directory_with_other_files_is_refused_naming_the_file(tmp_path):
    _jsonl(tmp_path / "a.jsonl", _rows(2))
    (tmp_path / "b.csv").write_text("prompt,completion\n")
    with pytest.raises(InvalidDataset, match=r"b\.csv: dataset.streaming reads only .jsonl and .parquet files"):
        stream_files(f"file://{tmp_path}", tmp_path)


def test_a_bad_line_deep_in_the_file_fails_where_it_is_read(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [*_rows(50), '{"prompt": "x", "completion": ', *_rows(3)])
    spec = DatasetSpec(trainUri=f"file://{path}", streaming=True)
    data = prepare_stream(spec, WordTokenizer(), seed=0, cache_dir=tmp_path)  # maxSteps: no counting pass, no error yet
    examples = data.stream.examples_from_start()
    assert [next(examples)["prompt"] for _ in range(50)][-1] == "question 49?"
    with pytest.raises(InvalidDataset, match=rf"t\.jsonl:51: not valid JSON"):
        next(examples)
    # With a counting pass the same line fails before training starts.
    with pytest.raises(InvalidDataset, match=rf"t\.jsonl:51: not valid JSON"):
        prepare_stream(spec, WordTokenizer(), seed=0, cache_dir=tmp_path, count=True)


def test_row_checks_apply_as_rows_are_read(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [*_rows(4), {"prompt": "q", "completion": 7}])
    data = prepare_stream(DatasetSpec(trainUri=f"file://{path}", streaming=True), WordTokenizer(), seed=0, cache_dir=tmp_path)
    with pytest.raises(InvalidDataset, match=r"t\.jsonl:5: field 'completion' must be a string, got int"):
        list(data.stream.examples_from_start())


# --------------------------------------------------------------------------- split, count, plan


def test_hash_split_is_stable_and_near_the_fractions():
    rows = _rows(20000)
    sides = [side(r, 0.1, 0.2) for r in rows]
    assert sides == [side(r, 0.1, 0.2) for r in reversed(rows)][::-1]  # by content, not position
    assert abs(sides.count("test") / len(rows) - 0.1) < 0.01
    assert abs(sides.count("eval") / len(rows) - 0.2 * 0.9) < 0.01


def test_counting_pass_counts_and_holds_out_by_hash(tmp_path):
    from kubetune_contract.evaluation_spec import EvaluationSpec

    rows = [*_rows(300), {"prompt": " ", "completion": "x"}]
    path = _jsonl(tmp_path / "t.jsonl", rows)
    spec = DatasetSpec(trainUri=f"file://{path}", streaming=True, evalSplit=0.2, maxSeqLength=16)
    data = prepare_stream(spec, WordTokenizer(), seed=0, cache_dir=tmp_path, count=True,
                          evaluation=EvaluationSpec(testSplit=0.1, maxSamples=5))
    expected = [side(r, 0.1, 0.2) for r in rows[:300]]
    s = data.stats
    assert s["rows"] == 301 and s["droppedBlank"] == 1 and s["trainRows"] == expected.count("train") == data.stream.examples
    assert s["evalRows"] == expected.count("eval") and s["testRows"] == 5  # the test rows capped by maxSamples
    assert s["streamed"] is True and s["split"].startswith("sha256") and s["dedupe"].startswith("off")
    trained = [e["prompt"] for e in data.stream.examples_from_start()]
    assert trained == [r["prompt"] for r, which in zip(rows, expected) if which == "train"]
    assert not set(trained) & ({r["prompt"] for r in data.eval} | {r["prompt"] for r in data.test})


def test_resumed_run_reuses_the_plan_and_starts_at_the_position(tmp_path):
    from kubetune_trainer.data.streaming import PLAN_FILE, POSITION_FILE

    path = _jsonl(tmp_path / "t.jsonl", _rows(20))
    spec = DatasetSpec(trainUri=f"file://{path}", streaming=True)
    first = prepare_stream(spec, WordTokenizer(), seed=0, cache_dir=tmp_path, count=True)
    seen = list(first.stream.examples_from_start())
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / PLAN_FILE).write_text(json.dumps(first.stream.plan))
    (ckpt / POSITION_FILE).write_text(json.dumps(StreamPosition.of(seen[11]).to_json()))
    resumed = prepare_stream(spec, WordTokenizer(), seed=0, cache_dir=tmp_path, count=True, resume_dir=ckpt)
    assert resumed.stats == first.stats
    assert [r["prompt"] for r in resumed.stream.sample(3)] == [e["prompt"] for e in seen[:3]]  # the baselines' rows...
    passes = resumed.stream.examples_from_start(), resumed.stream.examples_from_start()  # ...did not move the stream
    assert [e["prompt"] for e in passes[0]] == [e["prompt"] for e in seen[12:]]
    assert [(e["_pass"], e["prompt"]) for e in passes[1]] == [(1, e["prompt"]) for e in seen]  # the next pass from the top


def test_total_steps_from_max_steps_or_the_count():
    from kubetune_contract.sections import TrainingSpec
    from kubetune_trainer.data.stream_train import total_steps

    assert total_steps(TrainingSpec(maxSteps=70), None, 4) == (70, "training.maxSteps")
    steps, source = total_steps(TrainingSpec(epochs=2.0, batchSize=4, gradientAccumulationSteps=2), 100, 1)
    assert steps == 25 and source.startswith("counting pass: 100 examples per pass")
    assert total_steps(TrainingSpec(epochs=1.0, batchSize=4, gradientAccumulationSteps=2), 101, 2)[0] == 7  # ceil(13 / 2)


# --------------------------------------------------------------------------- packing, consumption


def test_packed_stream_fills_sequences_greedily_and_carries_the_last_row():
    from kubetune_trainer.data.stream_train import PackedStream

    lengths = [5, 9, 3, 12, 7, 7, 2, 16, 1, 4, 11]
    source = [{"input_ids": [i] * n, "labels": [i] * n, "_pass": 0, "_file": 0, "_line": i + 1, "_offset": 10 * i, "_index": i}
              for i, n in enumerate(lengths)]
    packed = list(PackedStream(source, 16))
    assert [sum(p["seq_lengths"]) for p in packed] == [len(p["input_ids"]) for p in packed]
    assert [n for p in packed for n in p["seq_lengths"]] == lengths  # every row once, in order
    for seq, following in zip(packed, packed[1:]):
        assert len(seq["input_ids"]) + following["seq_lengths"][0] > 16  # closed only when the next row did not fit
    assert [p["_line"] for p in packed][-1] == len(lengths)
    counter = GreedyPacker(16)
    for n in lengths:
        counter.count(n)
    assert counter.sequences + 1 == len(packed)  # the counting pass predicts the packed sequences


def test_consumed_position_follows_the_forwards_not_the_read_ahead():
    import torch

    from kubetune_trainer.data.stream_train import Consumed, PositionCollator

    class State:
        global_step = 0

    consumed = Consumed(type("T", (), {"state": State()})(), None, None)
    collate = PositionCollator(lambda features: features, consumed)
    model = torch.nn.Linear(1, 1)
    consumed.attach(model)
    batch = lambda lines: [{"x": 1, "_pass": 0, "_file": 0, "_line": n, "_offset": 100 * n, "_index": n - 1} for n in lines]
    for lines in ((1, 2), (3, 4), (5, 6)):  # three batches made (the loader reads ahead)...
        assert collate(batch(lines)) == [{"x": 1}] * 2
    model(torch.ones(1))
    model(torch.ones(1))  # ...two trained on
    model.eval()
    model(torch.ones(1))  # an evaluation forward consumes nothing
    assert consumed.position() == StreamPosition(0, 0, 4, 400, 4)
    assert len(consumed.pending) == 1
