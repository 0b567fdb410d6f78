"""Specs the admin policy refuses, and the policy that would allow each.

Shared by the unit tests (the operator's check and `kubetune validate --policy`)
and the cluster test that applies the same specs to a real API server running
the chart's ValidatingAdmissionPolicy: both must refuse each one, naming the
field and the knob, and accept it once the knob allows it. `{namespace}` in a
value is the namespace the job is created in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from .bad_manifests import minimal_manifest

BUCKET = "bucket-one"
# What every case starts from: the namespace's own prefix read-write, a shared models prefix read-only.
BASE_POLICY = {"storageRoots": [f"s3://{BUCKET}/{{namespace}}/"], "readOnlyRoots": [f"s3://{BUCKET}/shared/"]}


def policy(namespace: str | None = None, **extra) -> dict:
    """BASE_POLICY with `extra` added to its lists (or set, for the others)."""
    out = copy.deepcopy(BASE_POLICY)
    for key, value in extra.items():
        out[key] = out.get(key, []) + value if isinstance(value, list) else value
    return out


def allowed_manifest(namespace: str, name: str = "fine") -> dict:
    """A job the base policy allows: inputs and outputs under the namespace's prefix or the shared one."""
    doc = minimal_manifest(name)
    doc["spec"]["model"] = {"uri": f"s3://{BUCKET}/shared/models/tiny"}
    doc["spec"]["dataset"] = {"trainUri": f"s3://{BUCKET}/{namespace}/data/train.jsonl"}
    doc["spec"]["checkpoint"] = {"uri": f"s3://{BUCKET}/{namespace}/{name}/checkpoints"}
    return doc


@dataclass(frozen=True)
class PolicyCase:
    id: str
    spec: dict  # top-level spec fields set on allowed_manifest()
    field: str  # the field both refusals name (under spec.)
    knob: str  # the KubetunePolicy field that decides
    allow: dict | None = field(default=None)  # policy additions that let it through; None: nothing does

    def manifest(self, namespace: str, name: str = "bad") -> dict:
        doc = allowed_manifest(namespace, name)
        for key, value in self.spec.items():
            doc["spec"][key] = _fill(value, namespace)
        return doc


def _fill(value, namespace: str):
    if isinstance(value, str):
        return value.replace("{namespace}", namespace)
    if isinstance(value, list):
        return [_fill(v, namespace) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, namespace) for k, v in value.items()}
    return value


def _model(**extra) -> dict:
    return {"uri": f"s3://{BUCKET}/shared/models/tiny", **extra}


TOLERATE_ALL = {"operator": "Exists"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

POLICY_CASES: list[PolicyCase] = [
    PolicyCase("trust-remote-code", {"model": _model(trustRemoteCode=True)}, "model.trustRemoteCode", "trustRemoteCode",
               {"trustRemoteCode": True}),
    PolicyCase("foreign-s3-endpoint", {"credentials": {"s3": {"secretName": "s3", "endpoint": "http://sink.example:9000"}}},
               "credentials.s3.endpoint", "allowedS3Endpoints", {"allowedS3Endpoints": ["http://sink.example:9000"]}),
    PolicyCase("foreign-tracking-host", {"tracking": {"backend": "mlflow", "uri": "http://tracker.example:5000"}},
               "tracking.uri", "allowedTrackingHosts", {"allowedTrackingHosts": ["tracker.example"]}),
    PolicyCase("tracking-host-and-port", {"tracking": {"backend": "mlflow", "uri": "http://tracker.example:5000/x"}},
               "tracking.uri", "allowedTrackingHosts", {"allowedTrackingHosts": ["tracker.example:5000"]}),
    PolicyCase("wandb-key-to-wandb", {"tracking": {"backend": "wandb"}, "credentials": {"tracking": {"name": "wandb", "key": "key"}}},
               "tracking.backend", "allowedTrackingHosts", {"allowedTrackingHosts": ["api.wandb.ai"]}),
    PolicyCase("system-priority", {"priorityClassName": "system-node-critical"}, "priorityClassName", "allowedPriorityClasses",
               {"allowedPriorityClasses": ["system-node-critical"]}),
    PolicyCase("control-plane-node", {"resources": {"nodeSelector": {"node-role.kubernetes.io/control-plane": ""}}},
               "resources.nodeSelector", "allowedNodeSelectors", {"allowedNodeSelectors": {"node-role.kubernetes.io/control-plane": []}}),
    PolicyCase("gpu-product-value", {"resources": {"nodeSelector": {"gpu.product": "h100"}}},
               "resources.nodeSelector", "allowedNodeSelectors", {"allowedNodeSelectors": {"gpu.product": ["a100", "h100"]}}),
    PolicyCase("tolerate-every-taint", {"resources": {"tolerations": [TOLERATE_ALL]}}, "resources.tolerations", "allowedTolerations",
               {"allowedTolerations": [TOLERATE_ALL]}),
    PolicyCase("gpu-toleration", {"resources": {"tolerations": [GPU_TOLERATION]}}, "resources.tolerations", "allowedTolerations",
               {"allowedTolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}),
    PolicyCase("checkpoint-in-another-namespace", {"checkpoint": {"uri": f"s3://{BUCKET}/victim/job/checkpoints", "keepLast": 1}},
               "checkpoint.uri", "storageRoots", {"storageRoots": [f"s3://{BUCKET}/victim/"]}),
    PolicyCase("checkpoint-climbing-out", {"checkpoint": {"uri": f"s3://{BUCKET}/{{namespace}}/../victim/job/checkpoints"}},
               "checkpoint.uri", "storageRoots"),
    PolicyCase("output-in-another-bucket", {"output": {"uri": "s3://other-bucket/adapter"}}, "output.uri", "storageRoots",
               {"storageRoots": ["s3://other-bucket/"]}),
    PolicyCase("output-in-a-read-only-root", {"output": {"uri": f"s3://{BUCKET}/shared/models/tiny"}}, "output.uri", "storageRoots"),
    PolicyCase("model-of-another-namespace", {"model": {"uri": f"s3://{BUCKET}/victim/job/output/merged"}}, "model.uri",
               "storageRoots/readOnlyRoots", {"readOnlyRoots": [f"s3://{BUCKET}/victim/"]}),
    # A base model given as one GGUF file is an input like any other: read-only roots, no climbing out.
    PolicyCase("gguf-model-of-another-namespace", {"model": {"uri": f"s3://{BUCKET}/victim/models/SmolLM2-135M-Instruct.Q4_1.gguf"}},
               "model.uri", "storageRoots/readOnlyRoots", {"readOnlyRoots": [f"s3://{BUCKET}/victim/"]}),
    PolicyCase("gguf-model-climbing-out", {"model": {"uri": f"s3://{BUCKET}/shared/../victim/model.gguf"}},
               "model.uri", "storageRoots/readOnlyRoots"),
    PolicyCase("adapter-of-another-namespace", {"model": _model(adapterFrom=f"s3://{BUCKET}/victim/job/output/adapter")},
               "model.adapterFrom", "storageRoots/readOnlyRoots", {"readOnlyRoots": [f"s3://{BUCKET}/victim/"]}),
    PolicyCase("eval-data-of-another-namespace",
               {"dataset": {"trainUri": f"s3://{BUCKET}/{{namespace}}/train.jsonl", "evalUri": f"s3://{BUCKET}/victim/eval.jsonl"}},
               "dataset.evalUri", "storageRoots/readOnlyRoots", {"readOnlyRoots": [f"s3://{BUCKET}/victim/"]}),
    PolicyCase("a-source-of-another-namespace",
               {"dataset": {"sources": [{"uri": f"s3://{BUCKET}/{{namespace}}/a.jsonl"}, {"uri": f"s3://{BUCKET}/victim/b.jsonl"}]}},
               "dataset.sources", "storageRoots/readOnlyRoots", {"readOnlyRoots": [f"s3://{BUCKET}/victim/"]}),
    PolicyCase("test-data-of-another-namespace", {"evaluation": {"testUri": f"s3://{BUCKET}/victim/test.jsonl"}},
               "evaluation.testUri", "storageRoots/readOnlyRoots", {"readOnlyRoots": [f"s3://{BUCKET}/victim/"]}),
]
