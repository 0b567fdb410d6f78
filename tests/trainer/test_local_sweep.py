"""`kubetune sweep` with the real trainer on the tiny model: two grid trials,
one after another, the table printed and the sweep report written."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.trainer


def test_kubetune_sweep_runs_the_trials_and_writes_the_report(tiny_model, dataset, tmp_path):
    doc = {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneSweep", "metadata": {"name": "local"}, "spec": {
        "template": {"model": {"uri": f"file://{tiny_model}"}, "method": "lora",
                     "dataset": {"trainUri": f"file://{dataset('completion')}", "evalSplit": 0.1, "maxSeqLength": 64},
                     "training": {"maxSteps": 6, "batchSize": 8, "gradientAccumulationSteps": 1, "gradientCheckpointing": False,
                                  "evalEverySteps": 3, "logEverySteps": 3, "warmupRatio": 0.0}},
        "parameters": [{"path": "training.learningRate", "values": [1e-5, 3e-3]}],
        "algorithm": {"type": "grid"}, "maxTrials": 2}}
    manifest = tmp_path / "sweep.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    out = subprocess.run([sys.executable, "-m", "kubetune_operator.cli", "sweep", str(manifest), "--workdir", str(tmp_path / "w")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("trial"))
    rows = [ln.split() for ln in lines[header + 1:header + 3]]
    assert sorted(r[1] for r in rows) == ["0.003", "1e-05"] and all(r[2] == "complete" for r in rows), lines
    losses = {r[1]: float(r[3]) for r in rows}
    assert losses["0.003"] < losses["1e-05"], losses  # the usable learning rate wins
    assert "best trial: " in out.stdout
    report = (tmp_path / "w" / "local" / "sweep-report.html").read_text()
    assert report.count("<svg") == 1 and report.count("<circle") == 2 and "Best: trial" in report
    assert (tmp_path / "w" / "local" / "local-t000" / "output" / "adapter").is_dir()
