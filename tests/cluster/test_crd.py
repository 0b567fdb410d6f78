"""The generated FineTuneJob CRD on a real kube-apiserver: the schema and CEL
rules reject the shared bad manifests with the API server's own messages, defaults
are applied, immutable fields stay immutable, and kubectl shows the printer columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from tests.unit.bad_manifests import BAD_CASES, minimal_manifest

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "finetunejobs"
CRD_CASES = [c for c in BAD_CASES if c.crd is not None]


@pytest.fixture(scope="module")
def crd(kube):
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "finetunejob.yaml"))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{PLURAL}.{GROUP}")
    return kube


def create(kube, namespace, body):
    return kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
    )


def test_most_bad_manifests_are_caught_by_the_api_server_itself():
    assert len(CRD_CASES) >= 40


@pytest.mark.parametrize("bad", CRD_CASES, ids=lambda c: c.id)
def test_api_server_rejects_bad_manifest(crd, namespace, bad):
    with pytest.raises(ApiException) as caught:
        create(crd, namespace, bad.manifest(name="bad-job" if bad.id != "bad-name" else "Bad_Name"))
    assert caught.value.status in (400, 422), caught.value.body
    message = json.loads(caught.value.body)["message"]
    assert bad.crd in message, message


def test_valid_manifest_is_accepted_with_server_side_defaults(crd, namespace):
    body = minimal_manifest("ok-job")
    body["spec"]["training"] = {"maxSteps": 10}
    body["spec"]["lora"] = {}
    created = create(crd, namespace, body)
    assert created["spec"]["training"]["learningRate"] == pytest.approx(2e-4)
    assert created["spec"]["training"]["lrScheduler"] == "cosine"
    assert created["spec"]["lora"] == {"r": 16, "alpha": 32, "dropout": 0.05, "targetModules": ["all-linear"], "useDora": False}
    assert created["spec"]["dataset"]["format"] == "auto"


@pytest.mark.parametrize(
    "field,value",
    [("method", "full"), ("model", {"uri": "hf://org/other"}), ("dataset", {"trainUri": "s3://bucket-one/other.jsonl"})],
)
def test_model_dataset_and_method_are_immutable(crd, namespace, field, value):
    create(crd, namespace, minimal_manifest("fixed"))
    with pytest.raises(ApiException) as caught:
        crd.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fixed", {"spec": {field: value}})
    assert f"{field} is immutable once the job is created" in json.loads(caught.value.body)["message"]
    # Mutable fields still change.
    crd.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fixed", {"spec": {"suspend": True}})


VALID = {"type": "Valid", "status": "True", "reason": "Accepted", "message": "spec accepted"}
REFUSED = {"type": "Valid", "status": "False", "reason": "SecretMissing", "message": "Secret s3 not found"}


@pytest.mark.parametrize("status, field, value, allowed", [
    (None, "image", "ghcr.io/kubetune/trainer:2", True),  # no Job yet: anything goes
    ({"phase": "Pending", "conditions": [REFUSED]}, "resources", {"cpu": 4}, True),  # refused: fix and go
    ({"phase": "Pending", "conditions": [VALID]}, "image", "ghcr.io/kubetune/trainer:2", False),  # the Job's template is fixed
    ({"phase": "Running", "conditions": [VALID]}, "resources", {"cpu": 4}, False),
    ({"phase": "Running", "conditions": [VALID]}, "checkpoint", {"uri": "s3://bucket-one/elsewhere"}, False),
    ({"phase": "Running", "conditions": [VALID]}, "training", {"learningRate": 0.0001}, False),  # a trainer runs on it
    ({"phase": "Queued", "conditions": [VALID]}, "training", {"learningRate": 0.0001}, True),  # rendered again
    ({"phase": "Suspended", "conditions": [VALID]}, "lora", {"r": 8}, True),
    ({"phase": "Suspended", "conditions": [VALID], "checkpoint": {"uri": "s3://b/c/run-u/step-00000010", "step": 10}},
     "training", {"learningRate": 0.0001}, False),  # its checkpoints were made with the old settings
    ({"phase": "Running", "conditions": [VALID]}, "suspend", True, True),  # always
    ({"phase": "Succeeded", "conditions": [VALID]}, "serving", {"enabled": True, "gpus": 0}, True),
])
def test_a_spec_change_is_refused_with_the_field_named_unless_it_can_take_effect(crd, namespace, status, field, value, allowed):
    create(crd, namespace, minimal_manifest("edited"))
    if status is not None:
        crd.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "edited", {"status": status})
    patch = lambda: crd.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "edited", {"spec": {field: value}})  # noqa: E731
    if allowed:
        patch()
        return
    with pytest.raises(ApiException) as caught:
        patch()
    message = json.loads(caught.value.body)["message"]
    assert f"spec.{field}" in message and ("pod template" in message or "no trainer runs on it" in message), message


def test_status_subresource_and_printer_columns(crd, namespace):
    create(crd, namespace, minimal_manifest("shown"))
    crd.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "shown",
        {"status": {"phase": "Running", "progress": {"summary": "30/100 (30%)"}, "metrics": {"trainLoss": 1.25}}},
    )
    out = crd.kubectl("get", "ftj", "-n", namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "PHASE", "MODEL", "METHOD", "PROGRESS", "LOSS", "EVAL", "AGE"]
    assert out[1].split()[:7] == ["shown", "Running", "hf://org/model", "lora", "30/100", "(30%)", "1.25"]
    # A status field the schema does not know is pruned, not stored.
    crd.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "shown", {"status": {"kopf": {"x": 1}}})
    stored = crd.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "shown")
    assert "kopf" not in stored["status"]


def test_tracking_as_the_api_server_takes_it(crd, namespace):
    """W&B offline needs no key (the rule that asks for credentials allows it);
    tracking.mode defaults to online; status.tracking is stored as the trainer
    reports it, not pruned."""
    body = minimal_manifest("wandb-offline")
    body["spec"]["tracking"] = {"backend": "wandb", "mode": "offline", "tensorboard": True}
    assert create(crd, namespace, body)["spec"]["tracking"] == {"backend": "wandb", "mode": "offline", "tensorboard": True}
    body = minimal_manifest("mlflow-online")
    body["spec"]["tracking"] = {"backend": "mlflow", "uri": "http://mlflow.mlflow:5000"}
    created = create(crd, namespace, body)
    assert created["spec"]["tracking"]["mode"] == "online" and created["spec"]["tracking"]["tensorboard"] is False
    tracking = {"backend": "mlflow", "runUrl": "http://mlflow.mlflow:5000/#/experiments/1/runs/r", "degraded": "mlflow: start failed"}
    crd.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "mlflow-online", {"status": {"tracking": tracking}})
    stored = crd.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "mlflow-online")
    assert stored["status"]["tracking"] == tracking
