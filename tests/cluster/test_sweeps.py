"""FineTuneSweep on the real control plane.

The operator mechanics (every grid point once, an operator killed mid-sweep,
delete, suspend) run with a stand-in trainer command that reads its own
rendered config and reports an evalLoss computed from its learning rate,
after `sleep` seconds: a trial costs seconds, not a model. The real trainer
on the tiny model runs in `test_sweeps_training.py`."""

from __future__ import annotations

import copy
import json
import math
import time

import pytest
from kubernetes.client.exceptions import ApiException

from tests.harness.waiting import wait_for

from .operator_helpers import condition, manifest, status

pytestmark = pytest.mark.cluster

SWEEPS = "/apis/kubetune.io/v1alpha1/namespaces/{ns}/finetunesweeps"
FTJS = "/apis/kubetune.io/v1alpha1/namespaces/{ns}/finetunejobs"


def standin_trainer(sleep: float) -> str:
    """A trainer command: evalLoss = (log10(lr) + 2.5)^2 + 0.1 (best at lr 3e-3), reported after `sleep` s.
    SIGTERM (a suspended or deleted trial) ends it at once, as it ends the real trainer: the container's PID 1
    ignores a signal it has no handler for, and the kubelet would wait out the pod's grace period (120 s)."""
    code = (
        "import json, math, signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)); "
        "c = json.load(open('/etc/kubetune/config.json')); "
        f"time.sleep({sleep}); lr = c['training']['learningRate']; loss = (math.log10(lr) + 2.5) ** 2 + 0.1; "
        "open('/dev/termination-log', 'w').write(json.dumps({'reason': 'Completed', 'message': 'done', 'step': 10, 'totalSteps': 10, "
        "'metrics': {'trainLoss': loss, 'evalLoss': loss}, 'checkpoint': {'uri': None, 'step': None}, 'output': {}}))"
    )
    return json.dumps(["python", "-c", code])


def sweep_doc(name: str, **spec) -> dict:
    template = copy.deepcopy(manifest("t")["spec"])
    template["training"].update(maxSteps=10, evalEverySteps=2)
    body = {"template": template, "parameters": [{"path": "training.learningRate", "values": [1e-4, 3e-3]}], **spec}
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneSweep", "metadata": {"name": name}, "spec": body}


def create_sweep(kube, ns: str, doc: dict) -> dict:
    return kube.raw.request("POST", SWEEPS.format(ns=ns), doc)


def sweep_status(kube, ns: str, name: str) -> dict:
    return kube.raw.get(f"{SWEEPS.format(ns=ns)}/{name}").get("status") or {}


def trials(kube, ns: str, sweep: str) -> list[dict]:
    return kube.raw.get(FTJS.format(ns=ns), labelSelector=f"kubetune.io/sweep={sweep}")["items"]


def unfinished_trials(kube, ns: str, sweep: str, operators=()) -> str:
    """Each trial still unfinished: its phase, its Job's and pods' state, and the
    operator's log lines that name it (what a stuck sweep waits for)."""
    lines = []
    for t in trials(kube, ns, sweep):
        name, phase = t["metadata"]["name"], (t.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed", "Stopped"):
            continue
        jobs = kube.raw.get(f"/apis/batch/v1/namespaces/{ns}/jobs", labelSelector=f"kubetune.io/job={name}")["items"]
        pods = kube.raw.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=f"kubetune.io/job={name}")["items"]
        lines.append(f"trial {name}: phase {phase}, status {json.dumps(t.get('status') or {})[:600]}; "
                     f"jobs {[(j['metadata']['name'], j.get('status')) for j in jobs]}; "
                     f"pods {[(p['metadata']['name'], (p.get('status') or {}).get('phase')) for p in pods]}")
        for n, op in enumerate(operators):
            lines += [f"operator {n}: {line}" for line in op.log().splitlines() if f"/{name}" in line][-15:]
    return "\n".join(lines)


def wait_sweep(kube, ns: str, name: str, *phases: str, timeout: float = 180, operator=None, earlier=()) -> dict:
    """The sweep's status once in one of `phases`; on timeout, what it waits for
    (with the log of `operator` and of the `earlier` operators it replaced)."""
    def describe() -> str:
        return (json.dumps(sweep_status(kube, ns, name), indent=1)[-3000:] + "\n"
                + unfinished_trials(kube, ns, name, [*earlier, *([operator] if operator else [])])
                + ("\n" + operator.log_tail(30) if operator else ""))

    return wait_for(lambda: (s := sweep_status(kube, ns, name)).get("phase") in phases and s, timeout=timeout,
                    interval=0.5, what=f"sweep {name} in {phases}", describe=describe)


# --------------------------------------------------------------------------- the API server refuses

REFUSED = [
    ({"parameters": [{"path": "training.learningrate", "values": [1e-4]}]}, "spec.parameters[0].path: Unsupported value"),
    ({"parameters": [{"path": "training.learningRate", "min": 0.01, "max": 0.001}]}, "min must be less than max"),
    ({"parameters": [{"path": "training.learningRate", "min": 0.0, "max": 0.01, "scale": "log"}]}, "scale log needs min > 0"),
    ({"parallelism": 0}, "spec.parallelism: Invalid value: 0"),
    ({"algorithm": {"type": "grid"}, "parameters": [{"path": "training.learningRate", "min": 1e-4, "max": 1e-3}]},
     "algorithm grid needs values, choices or a step for every parameter"),
]


@pytest.mark.parametrize("changes,message", REFUSED, ids=["unknown-path", "min-above-max", "log-zero", "parallelism-0", "grid-without-step"])
def test_the_api_server_refuses_a_bad_sweep(kube, kubetune_crds, namespace, changes, message):
    with pytest.raises(ApiException) as caught:
        kube.custom.create_namespaced_custom_object("kubetune.io", "v1alpha1", namespace, "finetunesweeps",
                                                    sweep_doc("bad", **changes), field_validation="Strict")
    assert message in json.loads(caught.value.body)["message"], caught.value.body


def test_the_api_server_refuses_an_invalid_template_and_serving_in_it(kube, kubetune_crds, namespace):
    for change, message in (({"lora": {"r": 0}}, "spec.template.lora.r: Invalid value: 0"),
                            ({"serving": {"enabled": True}}, "template.serving.enabled must be false: set promote: true")):
        doc = sweep_doc("bad")
        doc["spec"]["template"].update(change)
        with pytest.raises(ApiException) as caught:
            kube.custom.create_namespaced_custom_object("kubetune.io", "v1alpha1", namespace, "finetunesweeps", doc)
        assert message in json.loads(caught.value.body)["message"], caught.value.body


def test_what_only_the_template_can_tell_is_refused_by_the_operator(kube, namespace, operator_factory, s3_env):
    op = operator_factory(**s3_env)
    doc = sweep_doc("no-eval", parameters=[{"path": "lora.r", "values": [8, 0]}])
    create_sweep(kube, namespace, doc)
    st = wait_sweep(kube, namespace, "no-eval", "Failed", operator=op)
    valid = condition(st, "Valid")
    assert valid["reason"] == "InvalidSpec" and "spec.parameters[0].values[1]: 0 makes an invalid trial" in valid["message"], valid
    assert trials(kube, namespace, "no-eval") == []


# --------------------------------------------------------------------------- the operator's side


def test_a_grid_sweep_runs_every_point_once_and_names_the_best(kube, namespace, operator_factory, s3_env):
    op = operator_factory(KUBETUNE_TRAINER_COMMAND=standin_trainer(0), **s3_env)
    create_sweep(kube, namespace, sweep_doc("grid", algorithm={"type": "grid", "seed": 1}, maxTrials=4, parallelism=2,
                                            parameters=[{"path": "training.learningRate", "values": [1e-4, 3e-3]},
                                                        {"path": "lora.r", "values": [4, 8]}]))
    st = wait_sweep(kube, namespace, "grid", "Succeeded", "Failed", operator=op)
    assert st["phase"] == "Succeeded", st
    points = sorted((t["parameters"]["training.learningRate"], t["parameters"]["lora.r"]) for t in st["trials"])
    assert points == [("0.0001", "4"), ("0.0001", "8"), ("0.003", "4"), ("0.003", "8")]
    assert st["best"]["parameters"]["training.learningRate"] == "0.003"
    assert st["best"]["objective"] == pytest.approx((math.log10(3e-3) + 2.5) ** 2 + 0.1)
    assert st["summary"] == "4/4" and st["counts"]["succeeded"] == 4 and st["sampler"] == "GridSampler(seed=1)"
    made = trials(kube, namespace, "grid")
    assert sorted(t["metadata"]["name"] for t in made) == ["grid-t000", "grid-t001", "grid-t002", "grid-t003"]
    assert all(t["metadata"]["ownerReferences"][0]["kind"] == "FineTuneSweep" for t in made)
    # Events are posted after the status write that caused them: wait for the last one.
    def sweep_reasons() -> set[str]:
        return {e["reason"] for e in kube.raw.get(f"/api/v1/namespaces/{namespace}/events")["items"]
                if e["involvedObject"].get("kind") == "FineTuneSweep"}
    wait_for(lambda: "SweepSucceeded" in sweep_reasons(), timeout=30, what="the sweep's SweepSucceeded Event",
             describe=lambda: str(sorted(sweep_reasons())))
    reasons = sweep_reasons()
    assert {"TrialStarted", "TrialSucceeded", "NewBest", "SweepSucceeded"} <= reasons, reasons
    row = kube.kubectl("get", "fts", "grid", "-n", namespace, "--no-headers").stdout.split()
    assert row[:3] == ["grid", "Succeeded", "4/4"] and float(row[3]) == pytest.approx(st["best"]["objective"], rel=1e-3), row
    assert row[4] == st["best"]["name"], row


def test_an_operator_killed_mid_sweep_finishes_it_with_exactly_max_trials(kube, namespace, operator_factory, s3_env):
    op = operator_factory(KUBETUNE_TRAINER_COMMAND=standin_trainer(4), **s3_env)
    create_sweep(kube, namespace, sweep_doc("restart", algorithm={"type": "random", "seed": 3}, maxTrials=6, parallelism=2,
                                            parameters=[{"path": "training.learningRate", "min": 1e-4, "max": 1e-2, "scale": "log"}]))
    wait_for(lambda: len(trials(kube, namespace, "restart")) >= 3, timeout=120, what="three trials created", describe=op.log_tail)
    op.kill()
    time.sleep(2)  # trials go on without the operator; a status write in flight is lost with it
    op2 = operator_factory(KUBETUNE_TRAINER_COMMAND=standin_trainer(4), **s3_env)
    st = wait_sweep(kube, namespace, "restart", "Succeeded", "Failed", operator=op2, earlier=[op])
    made = trials(kube, namespace, "restart")
    assert st["phase"] == "Succeeded" and len(made) == 6 and len(st["trials"]) == 6
    assert sorted(int(t["metadata"]["labels"]["kubetune.io/trial"]) for t in made) == list(range(6))
    values = [t["parameters"]["training.learningRate"] for t in st["trials"]]
    assert len(set(values)) == 6, f"a trial ran twice: {values}"


def test_deleting_a_sweep_deletes_its_running_trials_and_suspending_suspends_them(kube, namespace, operator_factory, s3_env):
    op = operator_factory(KUBETUNE_TRAINER_COMMAND=standin_trainer(600), **s3_env)
    create_sweep(kube, namespace, sweep_doc("held", maxTrials=4, parallelism=2))
    wait_for(lambda: [s for t in trials(kube, namespace, "held") if (s := (t.get("status") or {}).get("phase")) == "Running"][1:],
             timeout=120, what="two running trials", describe=op.log_tail)
    path = f"{SWEEPS.format(ns=namespace)}/held"
    kube.raw.merge_patch(path, {"spec": {"suspend": True}})
    wait_for(lambda: {(t.get("status") or {}).get("phase") for t in trials(kube, namespace, "held")} == {"Suspended"},
             timeout=90, what="every trial suspended", describe=op.log_tail)
    assert wait_sweep(kube, namespace, "held", "Suspended", operator=op)["counts"]["created"] == 2, "no new trial while suspended"
    kube.raw.merge_patch(path, {"spec": {"suspend": False}})
    wait_for(lambda: {(t.get("status") or {}).get("phase") for t in trials(kube, namespace, "held")} == {"Running"},
             timeout=90, what="the trials running again", describe=op.log_tail)
    kube.raw.request("DELETE", path)
    wait_for(lambda: not trials(kube, namespace, "held") and not kube.raw.get(f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"],
             timeout=120, what="trials and their Jobs garbage-collected", describe=op.log_tail)
