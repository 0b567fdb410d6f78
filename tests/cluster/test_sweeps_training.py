"""FineTuneSweep with the real trainer on the tiny model (CPU): six trials in two
sweeps.

- A grid of four full fine-tuning trials, two of them with an absurd learning
  rate: those fail LossDiverged (no retry burned) and the sweep goes on to name
  the best trial.
- TPE, two seeded start-up trials, the median pruner, and training.maxSteps in
  the search space: 10, or 10,000,000 (the spec's maximum), with warmupRatio
  0.1. The slow trial (10 million steps) cannot end by itself, and with a
  million warm-up steps its learning rate stays below 3e-8 for as long as the
  test lets it run, so its validation loss stays the base model's. The pruner
  acts once one trial has finished (pruning.startupTrials 1): the short trial
  cannot be pruned, since the only other trial never finishes; once it has
  finished, its last validation loss (lower than the base's: ten steps at the
  quickstart's learning rate) is carried forward to the slow trial's steps,
  which is pruned at its first evaluation past step 10 at the latest, however
  fast either ran and whenever the operator read their evaluations. It
  commits a checkpoint on SIGTERM and ends Stopped (Pruned).
  tests/unit/test_sweeps.py covers TPE past its start-up trials.
"""

from __future__ import annotations

import json

import pytest

from tests.harness.waiting import wait_for

from .operator_helpers import condition, quickstart
from .test_sweeps import create_sweep, trials, wait_sweep

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TIMEOUT = 420
UNTIL_STOPPED = 10_000_000  # training.maxSteps at the spec's maximum: a trial that cannot end by itself


def template(bucket, **training) -> dict:
    spec = quickstart(bucket, "template")["spec"]
    spec["training"].update(maxSteps=10, logEverySteps=1, evalEverySteps=5, warmupRatio=0.0, **training)
    spec["checkpoint"] = {"everySteps": 5, "keepLast": 2}
    return spec


def sweep(name: str, template_spec: dict, **spec) -> dict:
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneSweep", "metadata": {"name": name},
            "spec": {"template": template_spec, **spec}}


def by_number(st: dict) -> dict[int, dict]:
    return {t["number"]: t for t in st["trials"]}


def test_grid_sweep_names_the_best_while_absurd_learning_rates_diverge(kube, namespace, operator_factory, s3_env, bucket_with_assets):
    op = operator_factory(**s3_env)
    spec = template(bucket_with_assets)
    spec["method"] = "full"
    create_sweep(kube, namespace, sweep("grid", spec, algorithm={"type": "grid", "seed": 2}, maxTrials=4, parallelism=2, maxFailedTrials=2,
                                        parameters=[{"path": "training.learningRate", "values": [0.001, 1.0]},
                                                    {"path": "training.lrScheduler", "choices": ["cosine", "linear"]}]))
    st = wait_sweep(kube, namespace, "grid", "Succeeded", "Failed", timeout=TIMEOUT, operator=op)
    assert st["phase"] == "Succeeded", json.dumps(st)[-3000:]
    diverged = [t for t in st["trials"] if t["parameters"]["training.learningRate"] == "1"]
    assert len(diverged) == 2 and all(t["phase"] == "Failed" and t["reason"] == "LossDiverged" for t in diverged), diverged
    for trial in trials(kube, namespace, "grid"):
        if trial["metadata"]["name"] in {t["name"] for t in diverged}:
            assert trial["status"]["attempts"] == 1, "a diverged trial burned a retry"
    best = st["best"]
    assert best["parameters"]["training.learningRate"] == "0.001" and best["objective"] > 0
    assert best["output"].get("mergedUri", "").startswith("s3://"), best
    assert st["counts"] == {"created": 4, "running": 0, "succeeded": 2, "failed": 2, "pruned": 0}


def test_tpe_sweep_prunes_a_slow_clearly_worse_trial(kube, namespace, operator_factory, s3_env, bucket_with_assets, real_node):
    bucket = bucket_with_assets
    op = operator_factory(**s3_env)
    spec = template(bucket)
    # An evaluation every step: the pruner compares the running trial's with the
    # finished one's at its step. A tenth of the steps to warm up: one for the
    # short trial, a million for the slow one.
    spec["training"].update(evalEverySteps=1, warmupRatio=0.1)
    create_sweep(kube, namespace, sweep("tpe", spec, algorithm={"type": "tpe", "seed": 2, "startupTrials": 2},
                                        maxTrials=2, parallelism=2, pruning={"startupTrials": 1},
                                        parameters=[{"path": "training.maxSteps", "values": [10, UNTIL_STOPPED]}]))
    st = wait_sweep(kube, namespace, "tpe", "Succeeded", "Failed", timeout=TIMEOUT, operator=op)
    assert st["phase"] == "Succeeded", json.dumps(st)[-3000:]
    assert st["sampler"] == "TPESampler(seed=2 + trial number, n_startup_trials=2)"
    assert st["pruner"] == "MedianPruner(n_startup_trials=1, n_warmup_steps=0)"
    rows = by_number(st)
    # The premise (Optuna's seeded start-up trials): if this fails, pick the seed anew.
    assert [rows[n]["parameters"]["training.maxSteps"] for n in sorted(rows)] == ["10", str(UNTIL_STOPPED)], rows
    short, slow = rows[0], rows[1]
    assert short["phase"] == "Succeeded" and not short["pruned"] and st["best"]["number"] == 0, short
    assert slow["pruned"] and slow["phase"] == "Stopped" and slow["reason"] == "Pruned", slow
    assert st["counts"] == {"created": 2, "running": 0, "succeeded": 1, "failed": 0, "pruned": 1}, st["counts"]
    # What the pruner saw: the slow trial never got below the short one's last validation loss.
    assert min(slow["curve"].values()) > short["objective"], (slow["curve"], short)
    # Stopped with a committed checkpoint at the step it stopped.
    ftj = next(t for t in trials(kube, namespace, "tpe") if t["metadata"]["name"] == slow["name"])
    stopped = condition(ftj["status"], "Stopped")
    assert stopped["reason"] == "Pruned" and "worse than the median" in stopped["message"], stopped
    # Its pod is gone (stopping deleted it); the harness kept its container log.
    names = real_node.logged_pods(namespace, f"{slow['name']}-train-")
    log = "\n".join(real_node.logs(namespace, name) for name in names)
    line = next((ln for ln in log.splitlines() if "SIGTERM: checkpointing step" in ln), None)
    assert line, log[-2000:]
    step = int(line.split("checkpointing step ")[1].split()[0])
    marker = f"{namespace}/{slow['name']}/checkpoints/run-{ftj['metadata']['uid']}/step-{step:08d}/COMMITTED.json"
    wait_for(lambda: marker in bucket.keys(f"{namespace}/{slow['name']}/checkpoints/"), timeout=30, what=f"the commit marker {marker}")
