"""Bad FineTuneJob manifests and what each must be rejected with.

Shared by the unit tests (pydantic / `kubetune validate`) and the cluster test
that sends the same manifests to a real API server carrying the generated CRD.
`crd` is a fragment the API server's message must contain, or None where only
`kubetune validate` can tell (semantic checks a CRD cannot express).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

_DELETE = object()


def minimal_manifest(name: str = "bad") -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "hf://org/model"},
            "dataset": {"trainUri": "s3://bucket-one/train.jsonl"},
            "method": "lora",
        },
    }


@dataclass(frozen=True)
class BadCase:
    id: str
    changes: dict  # dotted path -> value (or _DELETE)
    path: str  # the field `kubetune validate` names
    message: str  # fragment of its message
    crd: str | None  # fragment of the API server's message

    def manifest(self, name: str = "bad") -> dict:
        doc = minimal_manifest(name)
        for dotted, value in self.changes.items():
            *parents, last = dotted.split(".")
            node: Any = doc
            for part in parents:
                node = node.setdefault(part, {})
            if value is _DELETE:
                node.pop(last, None)
            else:
                node[last] = copy.deepcopy(value)
        return doc


def case(id: str, changes: dict, path: str, message: str, crd: str | None) -> BadCase:
    return BadCase(id, changes, path, message, crd)


D = _DELETE
BAD_CASES: list[BadCase] = [
    # required fields
    case("no-model", {"spec.model": D}, "spec.model", "required field is missing", "spec.model: Required value"),
    case("no-dataset", {"spec.dataset": D}, "spec.dataset", "required field is missing", "spec.dataset: Required value"),
    case("no-method", {"spec.method": D}, "spec.method", "required field is missing", "spec.method: Required value"),
    case("no-model-uri", {"spec.model": {"revision": "main"}}, "spec.model.uri", "required field is missing", "spec.model.uri: Required value"),
    case("no-train-uri", {"spec.dataset": {"format": "chat"}}, "spec.dataset.trainUri", "required field is missing", "spec.dataset.trainUri: Required value"),
    case("s3-creds-no-secret", {"spec.credentials": {"s3": {"region": "us-east-1"}}}, "spec.credentials.s3.secretName", "required field is missing", "spec.credentials.s3.secretName: Required value"),
    # unknown fields
    case("unknown-top", {"spec.epochs": 3}, "spec.epochs", "unknown field; valid fields:", 'unknown field "spec.epochs"'),
    case("unknown-nested", {"spec.lora": {"rank": 8}}, "spec.lora.rank", "valid fields: alpha, dropout, r, targetModules", 'unknown field "spec.lora.rank"'),
    case("snake-case-field", {"spec.training": {"learning_rate": 0.001}}, "spec.training.learning_rate", "unknown field", 'unknown field "spec.training.learning_rate"'),
    # enums
    case("bad-method", {"spec.method": "adapter"}, "spec.method", "valid values: 'lora', 'qlora' or 'full'", 'spec.method: Unsupported value: "adapter"'),
    case("bad-format", {"spec.dataset.format": "jsonl"}, "spec.dataset.format", "'jsonl' is not allowed", 'spec.dataset.format: Unsupported value: "jsonl"'),
    case("bad-bits", {"spec.method": "qlora", "spec.quantization": {"bits": 3}}, "spec.quantization.bits", "3 is not allowed; valid values: 4 or 8", "spec.quantization.bits: Unsupported value: 3"),
    case("bad-quant-type", {"spec.method": "qlora", "spec.quantization": {"quantType": "int4"}}, "spec.quantization.quantType", "valid values: 'nf4' or 'fp4'", 'spec.quantization.quantType: Unsupported value: "int4"'),
    case("bad-scheduler", {"spec.training": {"lrScheduler": "step"}}, "spec.training.lrScheduler", "'step' is not allowed", 'spec.training.lrScheduler: Unsupported value: "step"'),
    case("bad-strategy", {"spec.distributed": {"strategy": "horovod"}}, "spec.distributed.strategy", "'horovod' is not allowed", 'spec.distributed.strategy: Unsupported value: "horovod"'),
    case("bad-zero-stage", {"spec.distributed": {"deepspeed": {"zeroStage": 4}}}, "spec.distributed.deepspeed.zeroStage", "4 is not allowed", "spec.distributed.deepspeed.zeroStage: Unsupported value: 4"),
    case("bad-serving-mode", {"spec.serving": {"enabled": True, "mode": "lora"}}, "spec.serving.mode", "valid values: 'adapter' or 'merged'", 'spec.serving.mode: Unsupported value: "lora"'),
    case("bad-toleration-op", {"spec.resources": {"tolerations": [{"key": "gpu", "operator": "Maybe"}]}}, "spec.resources.tolerations[0].operator", "'Maybe' is not allowed", 'spec.resources.tolerations[0].operator: Unsupported value: "Maybe"'),
    # ranges
    case("lora-r-zero", {"spec.lora": {"r": 0}}, "spec.lora.r", "must be >= 1", "spec.lora.r: Invalid value: 0"),
    case("lora-alpha-negative", {"spec.lora": {"alpha": -1}}, "spec.lora.alpha", "must be >= 1", "spec.lora.alpha: Invalid value: -1"),
    case("lora-dropout-one", {"spec.lora": {"dropout": 1.0}}, "spec.lora.dropout", "must be < 1", "spec.lora.dropout: Invalid value: 1"),
    case("eval-split-large", {"spec.dataset.evalSplit": 0.7}, "spec.dataset.evalSplit", "must be < 0.5", "spec.dataset.evalSplit: Invalid value: 0.7"),
    case("seq-len-tiny", {"spec.dataset.maxSeqLength": 8}, "spec.dataset.maxSeqLength", "must be >= 16", "spec.dataset.maxSeqLength: Invalid value: 8"),
    case("lr-zero", {"spec.training": {"learningRate": 0}}, "spec.training.learningRate", "must be > 0", "spec.training.learningRate: Invalid value: 0"),
    case("warmup-too-big", {"spec.training": {"warmupRatio": 1.5}}, "spec.training.warmupRatio", "must be < 1", "spec.training.warmupRatio: Invalid value: 1.5"),
    case("batch-zero", {"spec.training": {"batchSize": 0}}, "spec.training.batchSize", "must be >= 1", "spec.training.batchSize: Invalid value: 0"),
    case("seed-negative", {"spec.training": {"seed": -1}}, "spec.training.seed", "must be >= 0", "spec.training.seed: Invalid value: -1"),
    case("too-many-gpus", {"spec.resources": {"gpusPerNode": 17}}, "spec.resources.gpusPerNode", "must be <= 16", "spec.resources.gpusPerNode: Invalid value: 17"),
    case("zero-nodes", {"spec.distributed": {"nodes": 0}}, "spec.distributed.nodes", "must be >= 1", "spec.distributed.nodes: Invalid value: 0"),
    case("keep-last-zero", {"spec.checkpoint": {"keepLast": 0}}, "spec.checkpoint.keepLast", "must be >= 1", "spec.checkpoint.keepLast: Invalid value: 0"),
    case("every-steps-zero", {"spec.checkpoint": {"everySteps": 0}}, "spec.checkpoint.everySteps", "must be >= 1", "spec.checkpoint.everySteps: Invalid value: 0"),
    case("serving-replicas-negative", {"spec.serving": {"replicas": -1}}, "spec.serving.replicas", "must be >= 0", "spec.serving.replicas: Invalid value: -1"),
    case("backoff-too-big", {"spec.backoffLimit": 101}, "spec.backoffLimit", "must be <= 100", "spec.backoffLimit: Invalid value: 101"),
    case("no-target-modules", {"spec.lora": {"targetModules": []}}, "spec.lora.targetModules", "too short; at least 1 items", "spec.lora.targetModules: Invalid value"),
    # wrong types
    case("r-string", {"spec.lora": {"r": "sixteen"}}, "spec.lora.r", "wrong type (str: 'sixteen'); must be an integer", "spec.lora.r: Invalid value: \"string\""),
    case("seq-len-quoted", {"spec.dataset.maxSeqLength": "2048"}, "spec.dataset.maxSeqLength", "must be an integer", "spec.dataset.maxSeqLength: Invalid value: \"string\""),
    case("lr-word", {"spec.training": {"learningRate": "fast"}}, "spec.training.learningRate", "must be a number", "spec.training.learningRate: Invalid value: \"string\""),
    case("suspend-yes", {"spec.suspend": "yes"}, "spec.suspend", "must be true or false", "spec.suspend: Invalid value: \"string\""),
    case("training-list", {"spec.training": [1, 2]}, "spec.training", "must be a mapping", "spec.training: Invalid value: \"array\""),
    case("targets-not-list", {"spec.lora": {"targetModules": "q_proj"}}, "spec.lora.targetModules", "must be a list", "spec.lora.targetModules: Invalid value: \"string\""),
    # bad URIs and names
    case("http-model", {"spec.model.uri": "http://example.com/model"}, "spec.model.uri", "unsupported URI 'http://example.com/model'; valid forms: hf://org/name", "spec.model.uri: Invalid value: \"http://example.com/model\""),
    case("s3-uppercase-bucket", {"spec.model.uri": "s3://My_Bucket/model"}, "spec.model.uri", "malformed s3:// URI", "spec.model.uri: Invalid value: \"s3://My_Bucket/model\""),
    case("empty-hf", {"spec.model.uri": "hf://"}, "spec.model.uri", "malformed hf:// URI", "spec.model.uri: Invalid value: \"hf://\""),
    case("gs-dataset", {"spec.dataset.trainUri": "gs://bucket/train.jsonl"}, "spec.dataset.trainUri", "unsupported URI", "spec.dataset.trainUri: Invalid value: \"gs://bucket/train.jsonl\""),
    case("hf-checkpoint", {"spec.checkpoint": {"uri": "hf://org/ckpt"}}, "spec.checkpoint.uri", "valid forms: s3://bucket/prefix, pvc://claim-name/path", "spec.checkpoint.uri: Invalid value: \"hf://org/ckpt\""),
    case("endpoint-no-scheme", {"spec.credentials": {"s3": {"secretName": "s3", "endpoint": "minio:9000"}}}, "spec.credentials.s3.endpoint", "has an invalid format", "spec.credentials.s3.endpoint: Invalid value: \"minio:9000\""),
    case("bad-secret-key", {"spec.credentials": {"hfToken": {"name": "hf", "key": "bad key!"}}}, "spec.credentials.hfToken.key", "has an invalid format", "spec.credentials.hfToken.key: Invalid value: \"bad key!\""),
    case("bad-memory", {"spec.resources": {"memory": "lots"}}, "spec.resources.memory", "is not a Kubernetes quantity; use e.g. 8, 7500m, 64Gi", "spec.resources.memory: Invalid value: \"lots\""),
    case("bad-queue-name", {"spec.queueName": "Team Queue"}, "spec.queueName", "has an invalid format", "spec.queueName: Invalid value: \"Team Queue\""),
    case("bad-image", {"spec.image": "Registry/Trainer Image"}, "spec.image", "has an invalid format", "spec.image: Invalid value: \"Registry/Trainer Image\""),
    # conflicting fields (CEL on the API server, validators here)
    case("qlora-8bit", {"spec.method": "qlora", "spec.quantization": {"bits": 8}}, "spec", "method qlora needs quantization.bits 4", "method qlora needs quantization.bits 4"),
    case("full-quantized", {"spec.method": "full", "spec.quantization": {"bits": 8}}, "spec", "method full cannot use quantization", "method full cannot use quantization"),
    case("lora-4bit", {"spec.quantization": {"bits": 4}}, "spec", "use method qlora for 4-bit", "use method qlora for 4-bit"),
    case("full-with-lora", {"spec.method": "full", "spec.lora": {"r": 8}}, "spec", "lora settings apply only to methods lora and qlora", "lora settings apply only to methods lora and qlora"),
    case("epochs-and-steps", {"spec.training": {"epochs": 2, "maxSteps": 100}}, "spec.training", "set either epochs or maxSteps, not both", "set either epochs or maxSteps, not both"),
    case("eval-uri-and-split", {"spec.dataset.evalUri": "s3://bucket-one/eval.jsonl", "spec.dataset.evalSplit": 0.1}, "spec.dataset", "set either evalUri or evalSplit, not both", "set either evalUri or evalSplit, not both"),
    case("all-linear-plus", {"spec.lora": {"targetModules": ["all-linear", "q_proj"]}}, "spec.lora.targetModules", "all-linear cannot be combined", "all-linear cannot be combined"),
    case("multinode-no-strategy", {"spec.distributed": {"nodes": 2, "strategy": "none"}}, "spec.distributed", "nodes > 1 needs a multi-node strategy", "nodes > 1 needs a multi-node strategy"),
    case("offload-params-stage2", {"spec.distributed": {"deepspeed": {"zeroStage": 2, "offloadParams": True}}}, "spec.distributed.deepspeed", "offloadParams needs zeroStage 3", "offloadParams needs zeroStage 3"),
    case("deepspeed-with-ddp", {"spec.distributed": {"strategy": "ddp", "deepspeed": {"zeroStage": 2}}}, "spec.distributed", "deepspeed settings need strategy deepspeed or auto", "deepspeed settings need strategy deepspeed or auto"),
    case("merged-serving-no-merge", {"spec.serving": {"enabled": True, "mode": "merged"}}, "spec", "serving.mode merged needs output.merge: true", "serving.mode merged needs output.merge: true"),
    case("early-stop-no-eval", {"spec.training": {"earlyStopping": {"patience": 2}}}, "spec", "earlyStopping needs evaluation data", "earlyStopping needs evaluation data"),
    case("wandb-no-key", {"spec.tracking": {"backend": "wandb"}}, "spec", "tracking.backend wandb needs credentials.tracking", "tracking.backend wandb needs credentials.tracking"),
    # semantic checks only kubetune can make
    case("revision-on-s3", {"spec.model": {"uri": "s3://bucket-one/m", "revision": "v1"}}, "spec.model", "revision applies only to hf:// models", None),
    case("bad-name", {"metadata.name": "Bad_Name"}, "metadata.name", "has an invalid format", "metadata.name: Invalid value: \"Bad_Name\""),
]
