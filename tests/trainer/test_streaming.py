"""dataset.streaming end to end: a streamed run killed with SIGKILL resumes at
the committed step's row (every training row of the pass is trained on once,
the run reaches its last step), and packing on the stream trains full,
padding-free sequences."""

from __future__ import annotations

import json
import math
import signal
from collections import Counter

import pytest

from .helpers import base_config, committed_steps, output_dir, wait_for
from .test_train import train

pytestmark = pytest.mark.trainer


def _trace(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_streamed_run_killed_resumes_at_the_committed_row(tiny_model, dataset, tmp_path, minio, bucket, launch):
    client = minio.client()
    train_file = dataset("completion", 256)
    cfg = base_config(tiny_model, train_file, dataset={"streaming": True, "evalSplit": 0.1},
                      # One pass over the rows (the counting pass sets the steps); slow enough steps to be killed mid-run.
                      training={"maxSteps": None, "epochs": 1, "batchSize": 4, "gradientAccumulationSteps": 2, "logEverySteps": 2},
                      checkpoint={"uri": f"s3://{bucket}/job/ckpt", "everySteps": 6, "keepLast": 2},
                      output={"uri": f"s3://{bucket}/job/out"})
    traces = [tmp_path / "trace-1.jsonl", tmp_path / "trace-2.jsonl"]

    first = launch(cfg, tmp_path / "first", env={"KUBETUNE_STREAM_TRACE": str(traces[0])})
    wait_for(lambda: committed_steps(client, bucket, "job/ckpt/"), 240, "the first committed checkpoint", first, interval=0.05)
    first.kill(signal.SIGKILL)
    first.wait()
    resumed_from = max(committed_steps(client, bucket, "job/ckpt/"))

    second = launch(cfg, tmp_path / "second", env={"KUBETUNE_STREAM_TRACE": str(traces[1])})
    assert second.wait() == 0, second.output()[-3000:]
    assert f"resuming from committed checkpoint step {resumed_from}" in second.output()
    assert "streaming plan reused from the checkpoint (no counting pass)" in second.output()
    result = second.result()
    total = result["totalSteps"]
    assert result["reason"] == "Completed" and result["step"] == total > resumed_from

    # What training consumed: the first run's steps up to the committed one, then the second run's.
    kept = [t for t in _trace(traces[0]) if t["step"] <= resumed_from] + _trace(traces[1])
    assert {t["step"] for t in _trace(traces[1])} == set(range(resumed_from + 1, total + 1))
    first_pass = Counter(line for t in kept for p, _file, line in t["rows"] if p == 0)
    assert max(first_pass.values()) == 1, [line for line, n in first_pass.items() if n > 1][:10]
    summary = json.loads(client.get_object(Bucket=bucket, Key="job/out/metrics.json")["Body"].read())
    data = summary["data"]
    assert data["streamed"] is True and data["totalStepsFrom"].startswith("counting pass")
    # The steps planned: the counted rows per pass, 4 a micro-batch, 2 micro-batches a step, one epoch.
    assert total == data["totalSteps"] == math.ceil(math.ceil(data["trainRows"] / 4) / 2)
    # Every training row of the pass was trained on (the validation rows never).
    assert len(first_pass) == data["trainRows"] == 256 - data["evalRows"]
    assert summary["train"]["resumedFrom"] == resumed_from


def test_streamed_packing_trains_full_padding_free_sequences(tiny_model, dataset, tmp_path, monkeypatch):
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv("KUBETUNE_STREAM_TRACE", str(trace))
    cfg = base_config(tiny_model, dataset("text", 256), dataset={"streaming": True, "packing": True, "evalSplit": None, "maxSeqLength": 64},
                      training={"maxSteps": 12, "batchSize": 4})
    code, result, _ = train(cfg, tmp_path, monkeypatch)
    assert code == 0, result
    summary = json.loads((output_dir(cfg) / "metrics.json").read_text())
    assert summary["train"]["paddingFraction"] == 0.0
    assert summary["data"]["totalStepsFrom"] == "training.maxSteps" and "trainRows" not in summary["data"]
    # 12 steps of 4 packed sequences of about maxSeqLength tokens each, not 4 rows.
    assert summary["train"]["tokensTotal"] >= 0.8 * 12 * 4 * 64
    losses = [h["trainLoss"] for h in summary["history"] if "trainLoss" in h]
    assert losses[-1] < losses[0]
