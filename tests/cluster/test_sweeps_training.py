"""FineTuneSweep with the real trainer on the tiny model (CPU): ten trials of at
most ten steps in all, in two sweeps.

- A grid of four full fine-tuning trials, two of them with an absurd learning
  rate: those fail LossDiverged (no retry burned) and the sweep goes on to name
  the best trial.
- TPE, six trials, three random start-up trials, the median pruner: seed 1536
  makes Optuna's start-up trials two fast ones with usable learning rates and
  then a slow one (512 accumulation steps: seconds per step, so the operator,
  sharing two loaded cores with the other trial, has several seconds to act on
  each evaluation; with 64, 0.7 s per step, its ten steps were over once before
  the prune reached the pod) with a learning rate of about 1e-6, clearly worse
  at its first evaluation: it is pruned, commits a checkpoint on SIGTERM and
  ends Stopped (Pruned) before its last step. One finished trial is
  enough to prune by (pruning.startupTrials 1): with two, whether the second
  had finished when the slow one reached its first evaluation was a race the
  slow trial lost once the sweep measured the base model only once.
"""

from __future__ import annotations

import json

import pytest

from tests.harness.waiting import wait_for

from .operator_helpers import condition, quickstart
from .test_sweeps import create_sweep, trials, wait_sweep

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TIMEOUT = 420


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


def test_tpe_sweep_prunes_a_slow_clearly_worse_trial(kube, namespace, operator_factory, s3_env, bucket_with_assets, pod_runner):
    bucket = bucket_with_assets
    op = operator_factory(**s3_env)
    spec = template(bucket)
    # Evaluations every step: the pruner compares trials at the same step, and
    # the operator reads each trial's newest evaluation once a second, so a fast
    # trial's curve has points at most of them.
    spec["training"]["evalEverySteps"] = 1
    create_sweep(kube, namespace, sweep("tpe", spec, algorithm={"type": "tpe", "seed": 1536, "startupTrials": 3},
                                        maxTrials=6, parallelism=2, pruning={"startupTrials": 1},
                                        parameters=[{"path": "training.learningRate", "min": 1e-6, "max": 3e-2, "scale": "log"},
                                                    {"path": "training.gradientAccumulationSteps", "values": [1, 512]}]))
    st = wait_sweep(kube, namespace, "tpe", "Succeeded", "Failed", timeout=TIMEOUT, operator=op)
    assert st["phase"] == "Succeeded", json.dumps(st)[-3000:]
    assert st["sampler"] == "TPESampler(seed=1536 + trial number, n_startup_trials=3)"
    assert st["pruner"] == "MedianPruner(n_startup_trials=1, n_warmup_steps=0)"
    rows = by_number(st)
    assert sorted(rows) == list(range(6))
    slow = rows[2]
    # The premise (Optuna's seeded start-up trials): if this fails, pick the seed anew.
    assert slow["parameters"]["training.gradientAccumulationSteps"] == "512" and float(slow["parameters"]["training.learningRate"]) < 1e-5, slow
    assert slow["pruned"] and slow["phase"] == "Stopped" and slow["reason"] == "Pruned", slow
    assert st["counts"]["pruned"] >= 1 and st["best"]["number"] != 2
    # Stopped before its last step, with a committed checkpoint at the step it stopped.
    ftj = next(t for t in trials(kube, namespace, "tpe") if t["metadata"]["name"] == slow["name"])
    stopped = condition(ftj["status"], "Stopped")
    assert stopped["reason"] == "Pruned" and "worse than the median" in stopped["message"], stopped
    # Its pod is gone (stopping deleted it); the pod runner kept its log, as a node's log files stay.
    names = [d.name for d in (pod_runner.run_dir / "pods" / namespace).glob(f"{slow['name']}-train-*")]
    log = "\n".join(pod_runner.logs(namespace, name) for name in names)
    line = next((ln for ln in log.splitlines() if "SIGTERM: checkpointing step" in ln), None)
    assert line, log[-2000:]
    step = int(line.split("checkpointing step ")[1].split()[0])
    assert step < 10, "pruned only after its last step"
    marker = f"{namespace}/{slow['name']}/checkpoints/run-{ftj['metadata']['uid']}/step-{step:08d}/COMMITTED.json"
    wait_for(lambda: marker in bucket.keys(f"{namespace}/{slow['name']}/checkpoints/"), timeout=30, what=f"the commit marker {marker}")
