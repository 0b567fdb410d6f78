"""`kubetune validate job.yaml --dataset FILE` refuses, before any training,
what the job's spec.evaluation cannot use: a numeric metric on answers that
are not numbers (with the line), a testSplit that leaves no rows, an unknown
metric, text rows for task metrics; with the trainer's own words
(kubetune_contract.evaluation_data)."""

from __future__ import annotations

import json

import yaml

from kubetune_operator.cli import main

from .bad_manifests import minimal_manifest


def _job(tmp_path, evaluation: dict, fmt: str | None = None) -> str:
    doc = minimal_manifest("priced")
    doc["spec"]["evaluation"] = evaluation
    if fmt:
        doc["spec"]["dataset"]["format"] = fmt
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _data(tmp_path, rows: list[dict], name: str = "train.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


PRICED = [{"prompt": f"item {i}", "completion": f" {10 + i}"} for i in range(30)]


def test_numeric_metric_on_answers_without_numbers_names_the_line(tmp_path, capsys):
    rows = PRICED[:6] + [{"prompt": "item x", "completion": " about twelve dollars"}] + PRICED[6:]
    code = main(["validate", _job(tmp_path, {"testSplit": 0.1, "metrics": ["mae"]}), "--dataset", _data(tmp_path, rows)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{tmp_path}/train.jsonl:7: evaluation.metrics mae needs a number in every answer: the answer ' about twelve dollars' has none" in out
    assert out.rstrip().endswith("FAILED")


def test_the_same_data_passes_with_numbers_or_with_text_metrics(tmp_path, capsys):
    assert main(["validate", _job(tmp_path, {"testSplit": 0.1, "metrics": ["mae"]}), "--dataset", _data(tmp_path, PRICED)]) == 0
    words = [{"prompt": "p", "completion": " about twelve"}] * 20
    assert main(["validate", _job(tmp_path, {"testSplit": 0.1, "metrics": ["rougeL"]}), "--dataset", _data(tmp_path, words)]) == 0
    assert capsys.readouterr().out.count(": OK") == 2


def test_a_test_split_that_leaves_no_rows(tmp_path, capsys):
    code = main(["validate", _job(tmp_path, {"testSplit": 0.05}), "--dataset", _data(tmp_path, PRICED[:8])])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{tmp_path}/train.jsonl: evaluation.testSplit 0.05 of 8 usable rows leaves no test rows; raise it to at least 0.12 or set evaluation.testUri" in out


def test_task_metrics_need_rows_with_answers(tmp_path, capsys):
    text = _data(tmp_path, [{"text": f"just text {i}"} for i in range(20)])
    assert main(["validate", _job(tmp_path, {"testSplit": 0.1, "metrics": ["exactMatch"]}), "--dataset", text]) == 1
    assert "evaluation.metrics exactMatch compare answers, but format text has none" in capsys.readouterr().out


def test_an_unknown_metric_is_refused_with_the_valid_ones(tmp_path, capsys):
    code = main(["validate", _job(tmp_path, {"testSplit": 0.1, "metrics": ["accuracy"]}), "--dataset", _data(tmp_path, PRICED)])
    err = capsys.readouterr().err
    assert code == 1
    assert "spec.evaluation.metrics[0]: 'accuracy' is not allowed; valid values: 'exactMatch', 'tokenF1', 'rougeL', 'bleu', 'chrF', 'mae', 'rmse', 'mape' or 'preferenceAccuracy'" in err
