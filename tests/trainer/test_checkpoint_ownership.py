"""Runs own their checkpoints (the real trainer as a process, file:// stores):
a run resumes only checkpoints its own job wrote with its own settings; a job
re-created under the same name (another UID) starts afresh and never deletes
the earlier run's checkpoints; a changed spec is refused naming the fields;
continuing another run is explicit (checkpoint.resumeFrom) and recorded."""

from __future__ import annotations

import json
import re

import pytest

from .helpers import base_config

pytestmark = pytest.mark.trainer


def _logged_steps(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"step (\d+)/\d+ loss", text)]


def _committed(root, run: str) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in (root / run).glob("step-*/COMMITTED.json"))


def test_a_run_resumes_only_its_own_checkpoints_and_keeps_its_hands_off_others(tiny_model, dataset, tmp_path, launch):
    train = dataset("completion")
    ckpt = tmp_path / "shared-ckpt"

    def cfg(uid: str, **training) -> dict:
        config = base_config(tiny_model, train, training={"maxSteps": 20, **training},
                             checkpoint={"uri": f"file://{ckpt}", "everySteps": 10, "keepLast": 1},
                             output={"uri": f"file://{tmp_path / uid / 'out'}"})
        config["job"]["uid"] = uid
        return config

    first = launch(cfg("1111-aaaa"), tmp_path / "first")
    assert first.wait() == 0, first.output()[-3000:]
    assert _committed(ckpt, "run-1111-aaaa") == [20]
    marker = json.loads((ckpt / "run-1111-aaaa" / "step-00000020" / "COMMITTED.json").read_text())
    assert marker["owner"]["uid"] == "1111-aaaa" and len(marker["owner"]["fingerprint"]) == 64
    assert "training.learningRate" in marker["owner"]["fields"]
    assert first.result()["checkpoint"]["uri"] == f"file://{ckpt}/run-1111-aaaa/step-00000020"

    # The same name re-created (another UID) on the same checkpoint URI: a new run from step 0,
    # whose retention (keepLast 1) leaves the earlier run's checkpoint alone.
    again = launch(cfg("2222-bbbb"), tmp_path / "again")
    assert again.wait() == 0, again.output()[-3000:]
    assert "resuming" not in again.output() and min(_logged_steps(again.output())) <= 5
    assert _committed(ckpt, "run-2222-bbbb") == [20] and _committed(ckpt, "run-1111-aaaa") == [20]

    # The first job's spec changed under it (what a retry after an edit would see): refused, the fields named.
    changed = launch(cfg("1111-aaaa", learningRate=0.001, maxSteps=30), tmp_path / "changed")
    assert changed.wait() == 2, changed.output()[-3000:]
    result = changed.result()
    assert result["reason"] == "InvalidConfig"
    assert "training.learningRate, training.maxSteps differ" in result["message"] and "checkpoint.resumeFrom" in result["message"]
    assert _committed(ckpt, "run-1111-aaaa") == [20]

    # Continuing it with the new settings is explicit: another job naming the checkpoint.
    step_uri = f"file://{ckpt}/run-1111-aaaa/step-00000020"
    continued_cfg = cfg("3333-cccc", learningRate=0.001, maxSteps=30)
    continued_cfg["checkpoint"]["resumeFrom"] = step_uri
    continued = launch(continued_cfg, tmp_path / "continued")
    assert continued.wait() == 0, continued.output()[-3000:]
    assert min(_logged_steps(continued.output())) > 20
    resumed = continued.result()["checkpoint"]["resumedFrom"]
    assert resumed["uri"] == step_uri and resumed["step"] == 20
    assert resumed["differs"] == ["training.learningRate", "training.maxSteps"]
    summary = json.loads((tmp_path / "3333-cccc" / "out" / "metrics.json").read_text())
    assert summary["train"]["resumedFromCheckpoint"] == resumed and summary["train"]["resumedFrom"] == 20
    assert _committed(ckpt, "run-3333-cccc") == [30] and _committed(ckpt, "run-1111-aaaa") == [20]
