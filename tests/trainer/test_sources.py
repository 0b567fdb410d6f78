"""dataset.sources on the tiny model: sources in several formats pre-flighted one
by one, split per source, mixed by weight; one short training run whose rows
consumed per source are the weights' (the termination message, metrics.json)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from kubetune_contract.sections import DatasetSpec, EvaluationSpec
from kubetune_trainer.errors import InvalidDataset
from kubetune_trainer.testing.tiny_model import make_tiny_dataset

from .helpers import base_config, output_dir
from .test_train import train

pytestmark = pytest.mark.trainer
WEIGHTS = (0.5, 0.3, 0.2)


def three_sources(tmp_path: Path, sizes=(64, 48, 16)) -> list[dict]:
    """Instruction JSONL, completion Parquet, completion JSONL: two formats, one training shape."""
    files = [make_tiny_dataset(tmp_path / "alpaca.jsonl", "instruction", sizes[0], seed=1),
             make_tiny_dataset(tmp_path / "pairs.parquet", "completion", sizes[1], seed=2),
             make_tiny_dataset(tmp_path / "more.jsonl", "completion", sizes[2], seed=3)]
    return [{"uri": f"file://{f}", "weight": w} for f, w in zip(files, WEIGHTS)]


def prepare(sources: list[dict], tokenizer, tmp_path: Path, seed: int = 7, evaluation: dict | None = None, **dataset):
    from kubetune_trainer.data import prepare as prepare_data

    spec = DatasetSpec.model_validate({"sources": sources, "maxSeqLength": 64, **dataset})
    return prepare_data(spec, tokenizer, seed=seed, cache_dir=tmp_path / "cache",
                        evaluation=EvaluationSpec.model_validate(evaluation or {}), objective="sft")


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_sources_of_two_formats_mix_by_weight_into_one_shape(tokenizer, tmp_path):
    data = prepare(three_sources(tmp_path), tokenizer, tmp_path)
    assert data.shape == "prompt_completion" and data.completion_only_loss
    assert len(data.train) == 128  # the epoch: every source's rows together
    assert [s["rowsInEpoch"] for s in data.stats["sources"]] == [64, 38, 26]  # round(share x 128)
    assert [s["format"] for s in data.stats["sources"]] == ["instruction", "completion", "completion"]
    assert [s["rowsRead"] for s in data.stats["sources"]] == [64, 48, 16]
    # The instruction rows were normalised to the alpaca prompt; all rows are prompt/completion strings.
    prompts = Counter("### Instruction:" in row["prompt"] for row in data.train)
    assert prompts[True] == 64 and set(data.train.column_names) == {"prompt", "completion"}


def test_the_same_seed_mixes_alike_another_seed_in_another_order(tokenizer, tmp_path):
    sources = three_sources(tmp_path)
    a, b, c = (prepare(sources, tokenizer, tmp_path, seed=s).train["prompt"] for s in (7, 7, 8))
    assert a == b and a != c


def _unique_sources(tmp_path: Path) -> list[dict]:
    """Three sources whose rows are all different (the tiny task's rows repeat)."""
    import pandas as pd

    alpaca = tmp_path / "u-alpaca.jsonl"
    alpaca.write_text("".join(json.dumps({"instruction": f"task {i}", "input": "", "output": f"a{i}"}) + "\n" for i in range(40)))
    pairs = tmp_path / "u-pairs.parquet"
    pd.DataFrame([{"prompt": f"q{i}", "completion": f" b{i}"} for i in range(30)]).to_parquet(pairs)
    small = tmp_path / "u-small.jsonl"
    small.write_text("".join(json.dumps({"prompt": f"s{i}", "completion": f" c{i}"}) + "\n" for i in range(20)))
    return [{"uri": f"file://{f}", "weight": w} for f, w in zip((alpaca, pairs, small), (0.3, 0.3, 0.4))]


def test_splits_are_per_source_so_no_held_out_row_is_trained_on(tokenizer, tmp_path):
    # The small source repeats (20 rows asked for 36 minus its held-out ones): its held-out rows must not come back.
    data = prepare(_unique_sources(tmp_path), tokenizer, tmp_path, evaluation={"testSplit": 0.1}, evalSplit=0.1, dedupe=True)
    key = lambda r: json.dumps([r["prompt"], r["completion"]])
    trained = {key(r) for r in data.train}
    held = [key(r) for r in data.eval] + [key(r) for r in data.test]
    # testSplit: 4 + 3 + 2 of 40, 30, 20 rows; evalSplit: 4 + 3 + 2 of the 36, 27, 18 left
    assert len(held) == 18 and not trained & set(held)
    small = [k for k in held if '"s' in k]
    assert small and data.stats["sources"][2]["rowsInEpoch"] > data.stats["sources"][2]["trainRows"]  # it repeats


def test_chat_and_completion_sources_train_as_conversations(tokenizer, tmp_path):
    chat = make_tiny_dataset(tmp_path / "chat.jsonl", "chat", 20)
    pairs = make_tiny_dataset(tmp_path / "pairs.jsonl", "completion", 20)
    data = prepare([{"uri": f"file://{chat}"}, {"uri": f"file://{pairs}", "weight": 2}], tokenizer, tmp_path)
    rows = list(data.train)
    shapes = {"messages" in r or isinstance(r["prompt"], list) for r in rows}
    assert shapes == {True}  # the completion rows became a user and an assistant turn


def test_text_with_prompt_completion_is_refused_naming_both_sources(tokenizer, tmp_path):
    text = make_tiny_dataset(tmp_path / "text.jsonl", "text", 10)
    pairs = make_tiny_dataset(tmp_path / "pairs.jsonl", "completion", 10)
    with pytest.raises(InvalidDataset, match=r"dataset.sources\[0\] \(file://.*text.jsonl, text rows\) and dataset.sources\[1\] "
                                             r"\(file://.*pairs.jsonl, completion rows\) cannot be trained as one shape"):
        prepare([{"uri": f"file://{text}"}, {"uri": f"file://{pairs}"}], tokenizer, tmp_path)


def test_a_source_whose_rows_do_not_match_its_format_is_refused_with_its_file_and_line(tokenizer, tmp_path):
    good = make_tiny_dataset(tmp_path / "pairs.jsonl", "completion", 10)
    bad = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}] * 3
    rows.insert(2, {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "?"}]})
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InvalidDataset, match=re.escape(f"dataset.sources[1]: file://{bad}:3: the last message must be the assistant's answer")):
        prepare([{"uri": f"file://{good}"}, {"uri": f"file://{bad}", "format": "chat"}], tokenizer, tmp_path)


def test_three_sources_train_and_consume_rows_by_weight(tiny_model, tmp_path, monkeypatch):
    sources = three_sources(tmp_path / "data")
    cfg = base_config(tiny_model, tmp_path / "data" / "alpaca.jsonl", training={"maxSteps": 24, "batchSize": 8},
                      evaluation={"compareBase": False})
    cfg["dataset"].update(trainUri=None, sources=sources, evalSplit=None)
    code, result, _ = train(cfg, tmp_path, monkeypatch)
    assert code == 0, result
    # 24 steps x 8 rows = 192 = one mixed epoch of 128 (64/38/26) and half of the next, in the planned order.
    from kubetune_trainer.data import mixing

    consumed = [s["rowsConsumed"] for s in result["dataset"]["sources"]]
    assert consumed == mixing.consumed(mixing.plan([64, 48, 16], list(WEIGHTS), seed=7), 192)  # what the steps read, exactly
    for got, weight in zip(consumed, WEIGHTS):
        assert abs(got - weight * 192) <= 4, consumed  # the second epoch's half is a prefix of the shuffled mix
    assert [s["rowsRead"] for s in result["dataset"]["sources"]] == [64, 48, 16]
    summary = json.loads((output_dir(cfg) / "metrics.json").read_text())
    assert [s["rowsConsumed"] for s in summary["data"]["sources"]] == consumed
    assert "Training sources" in (output_dir(cfg) / "report.md").read_text()
    print("rows consumed per source:", consumed, "shares got:", [s["shareGot"] for s in summary["data"]["sources"]])
