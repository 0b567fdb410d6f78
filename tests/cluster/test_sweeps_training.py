"""FineTuneSweep with the real trainer on the tiny model (CPU): seven trials in
two sweeps.

- A grid of four full fine-tuning trials, two of them with an absurd learning
  rate: those fail LossDiverged (no retry burned) and the sweep goes on to name
  the best trial.
- TPE, its three random start-up trials, the median pruner, and
  training.maxSteps in the search space: 10, or 10,000,000 (the spec's
  maximum) with warmupRatio 0.1, so a learning rate that stays near zero for a
  million steps. Seed 23 makes the trials 10 steps (learning rate 0.0058),
  10 million, 10 steps (0.019): the long one cannot end by itself, and learns
  nothing, so it is clearly worse than the first finished trial at every
  evaluation (pruning.startupTrials 1: one finished trial is enough to prune
  by). It is pruned once that trial has finished, whatever the machine's
  speed, commits a checkpoint on SIGTERM and ends Stopped (Pruned). The third
  trial learns faster than the finished one (a higher learning rate), so it is
  never the worse one at a step, and finishes, however soon the operator reads
  its evaluations. (A fourth trial, TPE's own suggestion, is left out: whether
  a 10-step one is pruned would depend on how soon its evaluations were read;
  tests/unit/test_sweeps.py covers TPE past its start-up trials.)
"""

from __future__ import annotations

import json

import pytest

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


def test_tpe_sweep_prunes_a_trial_that_learns_nothing(kube, namespace, operator_factory, s3_env, bucket_with_assets, pod_runner):
    bucket = bucket_with_assets
    op = operator_factory(**s3_env)
    spec = template(bucket)
    spec["training"]["warmupRatio"] = 0.1  # 10 million steps: a million of warm-up at a learning rate near zero
    # Evaluations every step: the pruner compares trials at the same step (a finished
    # trial's curve carried forward to the running one's steps).
    spec["training"]["evalEverySteps"] = 1
    create_sweep(kube, namespace, sweep("tpe", spec, algorithm={"type": "tpe", "seed": 23, "startupTrials": 3},
                                        maxTrials=3, parallelism=2, pruning={"startupTrials": 1},
                                        parameters=[{"path": "training.learningRate", "min": 1e-3, "max": 3e-2, "scale": "log"},
                                                    {"path": "training.maxSteps", "values": [10, UNTIL_STOPPED]}]))
    st = wait_sweep(kube, namespace, "tpe", "Succeeded", "Failed", timeout=TIMEOUT, operator=op)
    assert st["phase"] == "Succeeded", json.dumps(st)[-3000:]
    assert st["sampler"] == "TPESampler(seed=23 + trial number, n_startup_trials=3)"
    assert st["pruner"] == "MedianPruner(n_startup_trials=1, n_warmup_steps=0)"
    rows = by_number(st)
    assert sorted(rows) == list(range(3))
    # The premise (Optuna's seeded start-up trials): if this fails, pick the seed anew.
    assert [rows[n]["parameters"]["training.maxSteps"] for n in range(3)] == ["10", str(UNTIL_STOPPED), "10"], rows
    assert float(rows[2]["parameters"]["training.learningRate"]) > 3 * float(rows[0]["parameters"]["training.learningRate"]), rows
    assert rows[1]["pruned"] and rows[1]["phase"] == "Stopped" and rows[1]["reason"] == "Pruned", rows[1]
    assert rows[0]["phase"] == rows[2]["phase"] == "Succeeded" and not rows[0]["pruned"] and not rows[2]["pruned"], rows
    assert st["counts"]["pruned"] == 1 and st["best"]["number"] in (0, 2)
    # Pruned with the numbers, and stopped with a committed checkpoint at the step it stopped.
    ftj = next(t for t in trials(kube, namespace, "tpe") if t["metadata"]["name"] == rows[1]["name"])
    stopped = condition(ftj["status"], "Stopped")
    assert stopped["reason"] == "Pruned" and "worse than the median" in stopped["message"], stopped
    # Its pod is gone (stopping deleted it); the pod runner kept its log, as a node's log files stay.
    names = [d.name for d in (pod_runner.run_dir / "pods" / namespace).glob(f"{rows[1]['name']}-train-*")]
    log = "\n".join(pod_runner.logs(namespace, name) for name in names)
    line = next((ln for ln in log.splitlines() if "SIGTERM: checkpointing step" in ln), None)
    assert line, log[-2000:]
    step = int(line.split("checkpointing step ")[1].split()[0])
    assert f"stopped by SIGTERM at step {step}; checkpoint" in log, log[-2000:]
    marker = f"{namespace}/{rows[1]['name']}/checkpoints/run-{ftj['metadata']['uid']}/step-{step:08d}/COMMITTED.json"
    assert marker in bucket.keys(f"{namespace}/{rows[1]['name']}/checkpoints/"), bucket.keys(f"{namespace}/{rows[1]['name']}/checkpoints/")
