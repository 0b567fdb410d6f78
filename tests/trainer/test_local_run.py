"""`kubetune run job.yaml`: the no-cluster path renders the operator's config and runs the trainer."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.trainer

MANIFEST = """\
apiVersion: kubetune.io/v1alpha1
kind: FineTuneJob
metadata:
  name: local-tiny
spec:
  model:
    uri: file://{model}
  dataset:
    trainUri: file://{data}
    evalSplit: 0.1
    maxSeqLength: 64
  method: lora
  training:
    maxSteps: 12
    learningRate: 0.003
    batchSize: 8
    gradientAccumulationSteps: 1
    gradientCheckpointing: false
    logEverySteps: 4
  resources:
    gpusPerNode: 0
  checkpoint:
    everySteps: 6
"""


def test_kubetune_run_trains_from_a_manifest(tiny_model, dataset, tmp_path, monkeypatch, capfd):
    from kubetune_operator.cli.local_run import run_local
    from kubetune_trainer.config import load_config

    manifest = tmp_path / "job.yaml"
    manifest.write_text(MANIFEST.format(model=tiny_model, data=dataset("completion", 96)))
    monkeypatch.setenv("KUBETUNE_METRICS_PORT", "0")
    assert run_local(manifest, tmp_path / "wd", {}) == 0
    job_dir = tmp_path / "wd" / "local-tiny"
    cfg = load_config(job_dir / "config.json")  # what ran is a valid TrainerConfig
    assert cfg.job.name == "local-tiny" and cfg.checkpoint.uri == f"file://{job_dir.resolve()}/checkpoints"
    result = json.loads((job_dir / "termination-log.json").read_text())
    assert result["reason"] == "Completed" and result["step"] == 12
    assert (job_dir / "output" / "adapter" / "adapter_model.safetensors").is_file()
    assert "kubetune run: Completed" in capfd.readouterr().err


def test_kubetune_run_rejects_a_bad_manifest_with_exit_2(tmp_path, capfd):
    from kubetune_operator.cli.local_run import run_local

    manifest = tmp_path / "job.yaml"
    manifest.write_text(MANIFEST.format(model="/m", data="/d.jsonl").replace("method: lora", "method: dpo"))
    assert run_local(manifest, tmp_path / "wd", {}) == 2
    assert "method" in capfd.readouterr().err
