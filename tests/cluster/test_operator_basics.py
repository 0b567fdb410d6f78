"""The operator's state machine against the real control plane with a trainer
command that finishes at once (no training): fast checks of create, refuse,
wait-for-secret, success from the termination message, and events."""
from __future__ import annotations

import json

import pytest

from tests.harness.operator_fixture import usable_secret
from tests.harness.waiting import wait_for

from .operator_helpers import condition, create, events, jobs, manifest, pods, status, wait_phase

pytestmark = pytest.mark.cluster

REPORT = {
    "reason": "Completed", "message": "done", "step": 60, "totalSteps": 60,
    "metrics": {"trainLoss": 1.5, "evalLoss": 1.75, "tokensPerSecond": 100.0},
    "checkpoint": {"uri": "s3://b/ck/step-00000060", "step": 60},
    "output": {"adapterUri": "s3://b/out/adapter", "reportUri": "s3://b/out/report.json"},
}
# Writes the trainer's termination message and exits 0, as the trainer does when done.
INSTANT_TRAINER = json.dumps(["python", "-c", f"open('/dev/termination-log', 'w').write({json.dumps(json.dumps(REPORT))})"])


def test_success_from_termination_message_with_events(kube, namespace, operator_factory, s3_env):
    op = operator_factory(KUBETUNE_TRAINER_COMMAND=INSTANT_TRAINER, **s3_env)
    create(kube, namespace, manifest("ok"))
    st = wait_phase(kube, namespace, "ok", "Succeeded", "Failed", operator=op)
    assert st["phase"] == "Succeeded", st
    assert st["output"] == {"adapterUri": "s3://b/out/adapter", "reportUri": "s3://b/out/report.json"}
    assert st["metrics"] == {"trainLoss": 1.5, "evalLoss": 1.75, "tokensPerSecond": 100.0}
    assert st["attempts"] == 1
    assert st["observedGeneration"] == 1
    assert condition(st, "Valid")["reason"] == "Accepted"
    assert condition(st, "Succeeded")["status"] == "True"
    (job,) = jobs(kube, namespace)
    assert job["metadata"]["name"] == "ok-train"
    assert job["metadata"]["ownerReferences"][0]["name"] == "ok"
    reasons = wait_for(lambda: {e["reason"] for e in events(kube, namespace, "ok")} >= {"PhasePending", "PhaseSucceeded"}
                       and {e["reason"] for e in events(kube, namespace, "ok")}, timeout=10, what="phase events")
    assert "PhaseSucceeded" in reasons
    # Kopf's bookkeeping stays in our annotations, never in the structural status.
    assert "kopf" not in st


def test_disallowed_image_fails_without_creating_anything(kube, namespace, operator_factory, s3_env):
    op = operator_factory(**s3_env)
    create(kube, namespace, manifest("evil", {"image": "docker.io/someone/miner:latest"}))
    st = wait_phase(kube, namespace, "evil", "Failed", operator=op)
    valid = condition(st, "Valid")
    assert (valid["status"], valid["reason"]) == ("False", "ImageNotAllowed")
    assert "docker.io/someone/miner:latest" in valid["message"] and "ghcr.io/kubetune/" in valid["message"]
    assert condition(st, "Failed")["reason"] == "ImageNotAllowed"
    assert jobs(kube, namespace) == [] and pods(kube, namespace) == []
    warning = wait_for(lambda: [e for e in events(kube, namespace, "evil") if e["type"] == "Warning"], timeout=10, what="warning event")
    assert warning[0]["reason"] == "PhaseFailed"


def test_missing_secret_waits_then_proceeds(kube, namespace, operator_factory, s3_env):
    op = operator_factory(KUBETUNE_TRAINER_COMMAND=INSTANT_TRAINER, **s3_env)
    create(kube, namespace, manifest("nosecret", {"credentials": {"s3": {"secretName": "team-s3"}}}))
    st = wait_phase(kube, namespace, "nosecret", "Pending", operator=op)
    wait_for(lambda: condition(status(kube, namespace, "nosecret"), "Valid").get("reason") == "SecretMissing", timeout=30, what="SecretMissing")
    valid = condition(status(kube, namespace, "nosecret"), "Valid")
    assert "team-s3" in valid["message"] and valid["status"] == "False"
    assert jobs(kube, namespace) == []
    usable_secret(kube, namespace, "team-s3", {"AWS_ACCESS_KEY_ID": "kt-id-5f1e2d", "AWS_SECRET_ACCESS_KEY": "kt-secret-9a8b7c"})
    st = wait_phase(kube, namespace, "nosecret", "Succeeded", "Failed", timeout=60, operator=op)
    assert st["phase"] == "Succeeded"
    assert condition(st, "Valid")["reason"] == "Accepted"
    # The secret's values never reach status or events.
    text = json.dumps(st) + json.dumps(events(kube, namespace, "nosecret"))
    assert "kt-secret-9a8b7c" not in text and "kt-id-5f1e2d" not in text
    configmap = kube.raw.get(f"/api/v1/namespaces/{namespace}/configmaps/nosecret-config")
    assert "kt-secret-9a8b7c" not in json.dumps(configmap)


def test_a_refused_configmap_leaves_no_pod_waiting(kube, namespace, operator_factory, s3_env):
    # The ConfigMap and Job are created side by side; a quota that admits the Job
    # but not the ConfigMap must not leave a pod waiting for it forever.
    # (Every namespace already holds one ConfigMap, kube-root-ca.crt.)
    kube.raw.request("POST", f"/api/v1/namespaces/{namespace}/resourcequotas", {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "one-configmap"},
        "spec": {"hard": {"count/configmaps": "1"}}})
    wait_for(lambda: (kube.raw.get(f"/api/v1/namespaces/{namespace}/resourcequotas/one-configmap").get("status") or {}).get("used"),
             timeout=30, what="quota usage computed")
    op = operator_factory(KUBETUNE_TRAINER_COMMAND=INSTANT_TRAINER, **s3_env)
    create(kube, namespace, manifest("quota"))
    st = wait_phase(kube, namespace, "quota", "Failed", operator=op)
    valid = condition(st, "Valid")
    assert valid["status"] == "False" and "exceeded quota" in valid["message"] and "configmaps" in valid["message"], valid
    wait_for(lambda: [j["spec"].get("suspend") for j in jobs(kube, namespace)] == [True] and pods(kube, namespace) == [],
             timeout=30, what="the Job suspended and no pod left")


@pytest.mark.parametrize("pull_policy, kubelet_reason", [("IfNotPresent", "ErrImagePull"), ("Never", "ErrImageNeverPull")])
def test_an_allowed_image_the_node_lacks_is_said_with_the_kubelets_reason(kube, namespace, operator_factory, s3_env,
                                                                          pull_policy, kubelet_reason):
    """No registry here: an allowed image that is not on the node fails as the
    kubelet says (ErrImagePull after a pull, ErrImageNeverPull without one)."""
    op = operator_factory(KUBETUNE_IMAGE_PULL_POLICY=pull_policy, **s3_env)
    create(kube, namespace, manifest("absent", {"image": "ghcr.io/kubetune/trainer:never-built"}))

    def pulling():
        st = status(kube, namespace, "absent")
        training = condition(st, "Training")
        return st if st.get("phase") == "Pending" and training.get("reason") == "ImagePullFailed" else None

    st = wait_for(pulling, timeout=60, what="ImagePullFailed in status",
                  describe=lambda: json.dumps(status(kube, namespace, "absent")) + op.log_tail(20))
    message = condition(st, "Training")["message"]
    assert "ghcr.io/kubetune/trainer:never-built" in message and kubelet_reason in message, message
