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
    case("no-train-uri", {"spec.dataset": {"format": "chat"}}, "spec.dataset", "dataset needs training data: set dataset.trainUri",
         "dataset needs training data: set dataset.trainUri"),
    case("train-uri-and-sources", {"spec.dataset.sources": [{"uri": "s3://bucket-one/a.jsonl"}]}, "spec.dataset",
         "set dataset.trainUri (one training set) or dataset.sources", "set dataset.trainUri (one training set) or dataset.sources"),
    case("source-weight-zero", {"spec.dataset": {"sources": [{"uri": "s3://bucket-one/a.jsonl", "weight": 0}]}},
         "spec.dataset.sources[0].weight", "must be > 0", "spec.dataset.sources[0].weight: Invalid value: 0"),
    case("s3-creds-no-secret", {"spec.credentials": {"s3": {"region": "us-east-1"}}}, "spec.credentials.s3.secretName", "required field is missing", "spec.credentials.s3.secretName: Required value"),
    # unknown fields
    case("unknown-top", {"spec.epochs": 3}, "spec.epochs", "unknown field; valid fields:", 'unknown field "spec.epochs"'),
    case("unknown-nested", {"spec.lora": {"rank": 8}}, "spec.lora.rank", "valid fields: alpha, dropout, modulesToSave, r, targetModules, useDora", 'unknown field "spec.lora.rank"'),
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
    case("fsdp-on-cpu-nodes", {"spec.distributed": {"nodes": 2, "strategy": "fsdp"}, "spec.resources": {"gpusPerNode": 0}}, "spec.distributed",
         "strategy fsdp is not available yet", "spec.distributed.strategy: Invalid value: strategy fsdp is not available yet"),
    case("deepspeed-with-ddp", {"spec.distributed": {"strategy": "ddp", "deepspeed": {"zeroStage": 2}}}, "spec.distributed", "deepspeed settings need strategy deepspeed or auto", "deepspeed settings need strategy deepspeed or auto"),
    case("merged-serving-no-merge", {"spec.serving": {"enabled": True, "mode": "merged"}}, "spec", "serving.mode merged needs a merged model", "serving.mode merged needs a merged model"),
    case("full-serving-adapter", {"spec.method": "full", "spec.serving": {"enabled": True, "mode": "adapter"}}, "spec", "serving.mode adapter needs method lora or qlora", "serving.mode adapter needs method lora or qlora"),
    case("serving-adapter-not-exported", {"spec.output": {"formats": ["merged"]}, "spec.serving": {"enabled": True}}, "spec", "serving.mode adapter needs adapter in output.formats", "serving.mode adapter needs adapter in output.formats"),
    case("serving-rank-too-big", {"spec.lora": {"r": 1024}, "spec.serving": {"enabled": True}}, "spec", "vLLM serves LoRA adapters up to rank 512: lower lora.r", "vLLM serves LoRA adapters up to rank 512: lower lora.r"),
    case("serving-dora", {"spec.lora": {"useDora": True}, "spec.serving": {"enabled": True}}, "spec", "vLLM cannot load DoRA adapters", "vLLM cannot load DoRA adapters"),
    case("serving-modules-to-save", {"spec.lora": {"modulesToSave": ["lm_head"]}, "spec.serving": {"enabled": True}}, "spec", "adapters with modulesToSave", "adapters with modulesToSave"),
    case("pool-merged", {"spec.output": {"merge": True}, "spec.serving": {"enabled": True, "mode": "merged", "pool": "team"}}, "spec", "serving.pool serves several adapters on one base model", "serving.pool serves several adapters on one base model"),
    case("bad-pool-name", {"spec.serving": {"enabled": True, "pool": "Team Pool"}}, "spec.serving.pool", "has an invalid format", "spec.serving.pool: Invalid value: \"Team Pool\""),
    case("bad-gguf-quantization", {"spec.output": {"formats": ["adapter", "gguf"], "gguf": {"quantization": "q3_k"}}}, "spec.output.gguf.quantization", "'q3_k' is not allowed; valid values: 'f16', 'q8_0' or 'q4_k_m'", 'spec.output.gguf.quantization: Unsupported value: "q3_k"'),
    case("bad-output-format", {"spec.output": {"formats": ["onnx"]}}, "spec.output.formats[0]", "'onnx' is not allowed", 'spec.output.formats[0]: Unsupported value: "onnx"'),
    case("format-twice", {"spec.output": {"formats": ["adapter", "adapter"]}}, "spec.output.formats", "output.formats lists a format twice", "output.formats lists a format twice"),
    case("merge-contradicts-formats", {"spec.output": {"merge": True, "formats": ["adapter"]}}, "spec.output", "output.merge contradicts output.formats", "output.merge contradicts output.formats"),
    case("ollama-without-gguf", {"spec.output": {"formats": ["adapter", "ollama"]}}, "spec.output", "output.formats ollama needs gguf too", "output.formats ollama needs gguf too"),
    case("gguf-settings-without-gguf", {"spec.output": {"gguf": {"quantization": "f16"}}}, "spec.output", "output.gguf applies only when output.formats lists gguf", "output.gguf applies only when output.formats lists gguf"),
    case("full-exports-adapter", {"spec.method": "full", "spec.output": {"formats": ["adapter"]}}, "spec", "output.formats adapter needs method lora or qlora", "output.formats adapter needs method lora or qlora"),
    case("early-stop-no-eval", {"spec.training": {"earlyStopping": {"patience": 2}}}, "spec", "earlyStopping needs evaluation data", "earlyStopping needs evaluation data"),
    case("wandb-no-key", {"spec.tracking": {"backend": "wandb"}}, "spec", "tracking.backend wandb needs credentials.tracking", "tracking.backend wandb needs credentials.tracking"),
    case("tracking-offline-mlflow", {"spec.tracking": {"backend": "mlflow", "mode": "offline"}}, "spec.tracking",
         "tracking.mode offline needs backend wandb: mlflow has no offline mode", "tracking.mode offline needs backend wandb: mlflow has no offline mode"),
    case("tracking-offline-no-backend", {"spec.tracking": {"mode": "offline"}}, "spec.tracking",
         "tracking.mode offline needs backend wandb", "tracking.mode offline needs backend wandb"),
    case("mlflow-no-uri", {"spec.tracking": {"backend": "mlflow"}}, "spec.tracking",
         "tracking.backend mlflow needs tracking.uri", "tracking.backend mlflow needs tracking.uri"),
    case("tracking-bad-mode", {"spec.tracking": {"backend": "wandb", "mode": "sync"}}, "spec.tracking.mode",
         "'sync' is not allowed; valid values: 'online' or 'offline'", 'spec.tracking.mode: Unsupported value: "sync"'),
    # spec.evaluation and training.keepBest
    case("test-uri-and-split", {"spec.evaluation": {"testUri": "s3://bucket-one/test.jsonl", "testSplit": 0.1}}, "spec.evaluation",
         "set either evaluation.testUri or evaluation.testSplit, not both", "set either evaluation.testUri or evaluation.testSplit, not both"),
    case("metrics-without-test-set", {"spec.evaluation": {"metrics": ["mae"]}}, "spec.evaluation",
         "evaluation.metrics needs a held-out test set: set evaluation.testUri or evaluation.testSplit",
         "evaluation.metrics needs a held-out test set"),
    case("unknown-metric", {"spec.evaluation": {"testSplit": 0.1, "metrics": ["accuracy"]}}, "spec.evaluation.metrics[0]",
         "'accuracy' is not allowed; valid values: 'exactMatch', 'tokenF1', 'rougeL', 'bleu', 'chrF', 'mae', 'rmse', 'mape' or 'preferenceAccuracy'",
         'spec.evaluation.metrics[0]: Unsupported value: "accuracy"'),
    case("metric-twice", {"spec.evaluation": {"testSplit": 0.1, "metrics": ["mae", "mae"]}}, "spec.evaluation.metrics",
         "'mae' is listed twice", 'spec.evaluation.metrics[1]: Duplicate value: "mae"'),
    case("numeric-without-numeric-metric", {"spec.evaluation": {"testSplit": 0.1, "metrics": ["exactMatch"], "numeric": {"topK": 3}}},
         "spec.evaluation", "evaluation.numeric applies only with a numeric metric (mae, rmse, mape)",
         "evaluation.numeric applies only with a numeric metric (mae, rmse, mape)"),
    case("baselines-without-numeric-metric", {"spec.evaluation": {"testSplit": 0.1, "metrics": ["rougeL"], "baselines": ["mean"]}},
         "spec.evaluation", "evaluation.baselines need a numeric metric", "evaluation.baselines need a numeric metric"),
    case("unknown-baseline", {"spec.evaluation": {"testSplit": 0.1, "metrics": ["mae"], "baselines": ["xgboost"]}},
         "spec.evaluation.baselines[0]", "'xgboost' is not allowed; valid values: 'mean', 'linear' or 'randomForest'",
         'spec.evaluation.baselines[0]: Unsupported value: "xgboost"'),
    case("top-k-zero", {"spec.evaluation": {"testSplit": 0.1, "metrics": ["mae"], "numeric": {"topK": 0}}}, "spec.evaluation.numeric.topK",
         "must be >= 1", "spec.evaluation.numeric.topK: Invalid value: 0"),
    case("test-split-large", {"spec.evaluation": {"testSplit": 0.6}}, "spec.evaluation.testSplit", "must be < 0.5",
         "spec.evaluation.testSplit: Invalid value: 0.6"),
    case("negative-temperature", {"spec.evaluation": {"generation": {"temperature": -1}}}, "spec.evaluation.generation.temperature",
         "must be >= 0", "spec.evaluation.generation.temperature: Invalid value: -1"),
    case("keep-best-no-eval", {"spec.training": {"keepBest": True}}, "spec", "training.keepBest needs evaluation data to choose by",
         "training.keepBest needs evaluation data to choose by"),
    case("validation-metrics-without-eval-data", {"spec.evaluation": {"validationMetrics": ["exactMatch"]}}, "spec",
         "evaluation.validationMetrics are scored on the validation rows: set dataset.evalUri or dataset.evalSplit",
         "evaluation.validationMetrics are scored on the validation rows"),
    case("validation-metrics-with-dpo", {"spec.objective": "dpo", "spec.dataset.evalSplit": 0.1, "spec.evaluation": {"validationMetrics": ["exactMatch"]}},
         "spec", "evaluation.validationMetrics score answers against a reference answer: they need objective sft",
         "evaluation.validationMetrics score answers against a reference answer"),
    case("unknown-validation-metric", {"spec.dataset.evalSplit": 0.1, "spec.evaluation": {"validationMetrics": ["perplexity"]}},
         "spec.evaluation.validationMetrics[0]", "'perplexity' is not allowed", 'spec.evaluation.validationMetrics[0]: Unsupported value: "perplexity"'),
    # spec.serving.gate
    case("gate-unknown-metric", {"spec.serving": {"gate": {"metric": "accuracy"}}}, "spec.serving.gate.metric",
         "'accuracy' is not allowed; valid values: 'evalLoss', 'testLoss', 'perplexity'",
         'spec.serving.gate.metric: Unsupported value: "accuracy"'),
    case("gate-metric-not-evaluated", {"spec.evaluation": {"testSplit": 0.1, "metrics": ["rougeL"]}, "spec.serving": {"enabled": True, "gate": {"metric": "mae"}}},
         "spec", "serving.gate.metric must be evaluated: a task metric listed in evaluation.metrics", "serving.gate.metric must be evaluated"),
    case("gate-test-loss-without-test-set", {"spec.serving": {"gate": {"metric": "perplexity"}}},
         "spec", "testLoss or perplexity with evaluation.testUri or evaluation.testSplit", "serving.gate.metric must be evaluated"),
    case("gate-eval-loss-without-eval-data", {"spec.serving": {"gate": {"metric": "evalLoss", "threshold": 2.0}}},
         "spec", "evalLoss with dataset.evalUri or dataset.evalSplit", "serving.gate.metric must be evaluated"),
    case("gate-threshold-and-improvement", {"spec.dataset.evalSplit": 0.1, "spec.serving": {"gate": {"metric": "evalLoss", "threshold": 2.0, "minImprovement": 0.1}}},
         "spec.serving.gate", "set at most one of serving.gate.threshold and serving.gate.minImprovement",
         "set at most one of serving.gate.threshold and serving.gate.minImprovement"),
    case("gate-base-without-base", {"spec.dataset.evalSplit": 0.1, "spec.evaluation": {"compareBase": False}, "spec.serving": {"gate": {"metric": "evalLoss"}}},
         "spec", "serving.gate compares with the base model (no threshold): it needs evaluation.compareBase true",
         "serving.gate compares with the base model"),
    case("gate-improvement-below-minus-one", {"spec.dataset.evalSplit": 0.1, "spec.serving": {"gate": {"metric": "evalLoss", "minImprovement": -2}}},
         "spec.serving.gate.minImprovement", "must be > -1", "spec.serving.gate.minImprovement: Invalid value: -2"),
    # spec.objective and its sections
    case("bad-objective", {"spec.objective": "ppo"}, "spec.objective", "valid values: 'sft', 'dpo', 'orpo', 'kto' or 'grpo'",
         'spec.objective: Unsupported value: "ppo"'),
    case("kto-on-pairwise-format", {"spec.objective": "kto", "spec.dataset.format": "preference"}, "spec",
         "dataset.format must be one the objective reads (sft: chat, completion, instruction, text; dpo: preference; orpo: preference; kto: unpaired; grpo: prompts)",
         "dataset.format must be one the objective reads"),
    case("sft-on-preference-format", {"spec.dataset.format": "preference"}, "spec", "dataset.format must be one the objective reads",
         "dataset.format must be one the objective reads"),
    case("preference-without-dpo", {"spec.preference": {"beta": 0.2}}, "spec", "preference settings apply only to objectives dpo and orpo",
         "preference settings apply only to objectives dpo and orpo"),
    case("orpo-loss-type", {"spec.objective": "orpo", "spec.preference": {"lossType": "ipo"}}, "spec",
         "preference.lossType applies only to objective dpo", "preference.lossType applies only to objective dpo"),
    case("kto-settings-with-dpo", {"spec.objective": "dpo", "spec.kto": {"desirableWeight": 2.0}}, "spec",
         "kto settings apply only to objective kto", "kto settings apply only to objective kto"),
    case("dpo-packing", {"spec.objective": "dpo", "spec.dataset.packing": True}, "spec",
         "dataset.packing applies only to objective sft", "dataset.packing applies only to objective sft"),
    case("streaming-csv", {"spec.dataset.trainUri": "s3://bucket-one/train.csv", "spec.dataset.streaming": True}, "spec.dataset",
         "dataset.streaming reads .jsonl or .parquet files", "dataset.streaming reads .jsonl or .parquet files"),
    case("streaming-hf", {"spec.dataset.trainUri": "hf://org/data", "spec.dataset.streaming": True}, "spec.dataset",
         "dataset.streaming reads .jsonl or .parquet files", "dataset.streaming reads .jsonl or .parquet files"),
    case("streaming-dedupe", {"spec.dataset.streaming": True, "spec.dataset.dedupe": True}, "spec.dataset",
         "dataset.dedupe is not available with dataset.streaming", "dataset.dedupe is not available with dataset.streaming"),
    case("streaming-sources", {"spec.dataset": {"sources": [{"uri": "s3://bucket-one/a.jsonl"}], "streaming": True}}, "spec.dataset",
         "dataset.streaming reads one training set (trainUri), not dataset.sources", "dataset.streaming reads one training set (trainUri), not dataset.sources"),
    case("streaming-dpo", {"spec.objective": "dpo", "spec.dataset.streaming": True}, "spec",
         "dataset.streaming supports objective sft only", "dataset.streaming supports objective sft only"),
    case("dpo-generation-metric", {"spec.objective": "dpo", "spec.evaluation": {"testSplit": 0.1, "metrics": ["exactMatch"]}}, "spec",
         "objectives dpo, orpo and kto are evaluated by preferenceAccuracy only", "objectives dpo, orpo and kto are evaluated by preferenceAccuracy only"),
    case("sft-preference-accuracy", {"spec.evaluation": {"testSplit": 0.1, "metrics": ["preferenceAccuracy"]}}, "spec",
         "preferenceAccuracy needs objective dpo, orpo or kto", "preferenceAccuracy needs objective dpo, orpo or kto"),
    case("dpo-beta-zero", {"spec.objective": "dpo", "spec.preference": {"beta": 0}}, "spec.preference.beta", "0 is out of range; must be > 0",
         "spec.preference.beta: Invalid value: 0"),
    case("adapter-from-full", {"spec.method": "full", "spec.model.adapterFrom": "sft-job"}, "spec",
         "model.adapterFrom continues a LoRA adapter: it needs method lora or qlora", "model.adapterFrom continues a LoRA adapter"),
    case("adapter-from-with-lora", {"spec.model.adapterFrom": "sft-job", "spec.lora": {"r": 8}}, "spec",
         "lora settings do not apply with model.adapterFrom", "lora settings do not apply with model.adapterFrom"),
    case("adapter-from-bad-name", {"spec.model.adapterFrom": "SFT Job"}, "spec.model.adapterFrom", "'SFT Job' has an invalid format",
         "spec.model.adapterFrom: Invalid value"),
    case("grpo-without-rewards", {"spec.objective": "grpo"}, "spec", "objective grpo needs grpo.rewards",
         "objective grpo needs grpo.rewards"),
    case("grpo-empty-rewards", {"spec.objective": "grpo", "spec.grpo": {"rewards": []}}, "spec.grpo.rewards",
         "too short; at least 1 items", "spec.grpo.rewards: Invalid value"),
    case("grpo-unknown-reward", {"spec.objective": "grpo", "spec.grpo": {"rewards": [{"type": "bertScore"}]}}, "spec.grpo.rewards[0].type",
         "valid values: 'exactMatch', 'numericCloseness', 'regex' or 'lengthPenalty'", 'spec.grpo.rewards[0].type: Unsupported value: "bertScore"'),
    case("grpo-regex-without-pattern", {"spec.objective": "grpo", "spec.grpo": {"rewards": [{"type": "regex"}]}}, "spec.grpo.rewards[0]",
         "pattern is required by a regex reward", "pattern is required by a regex reward"),
    case("grpo-batch-splits-groups", {"spec.objective": "grpo", "spec.grpo": {"numGenerations": 3, "rewards": [{"type": "exactMatch"}]}}, "spec",
         "training.batchSize times gradientAccumulationSteps must be a multiple of grpo.numGenerations",
         "must be a multiple of grpo.numGenerations"),
    case("grpo-with-eval-split", {"spec.objective": "grpo", "spec.dataset.evalSplit": 0.1, "spec.grpo": {"rewards": [{"type": "exactMatch"}]}},
         "spec", "objective grpo is judged by its rewards", "objective grpo is judged by its rewards"),
    case("grpo-settings-with-sft", {"spec.grpo": {"rewards": [{"type": "exactMatch"}]}}, "spec", "grpo settings apply only to objective grpo",
         "grpo settings apply only to objective grpo"),
    # A regex the API server cannot judge (CEL does not compile Python patterns): kubetune validate and the operator refuse it.
    case("grpo-regex-does-not-compile", {"spec.objective": "grpo", "spec.grpo": {"rewards": [{"type": "regex", "pattern": "(unclosed"}]}},
         "spec.grpo.rewards[0].pattern", "grpo.rewards pattern '(unclosed' does not compile", None),
    # GGUF base models: the file inside its Hub repository, no remote code, served merged
    case("gguf-hf-without-repo", {"spec.model.uri": "hf://org/model.gguf"}, "spec.model",
         "a .gguf model on the Hugging Face Hub is named with its repository: hf://org/name/file.gguf",
         "a .gguf model on the Hugging Face Hub is named with its repository"),
    case("gguf-hf-not-gguf-file", {"spec.model.uri": "hf://org/model/weights.bin"}, "spec.model.uri",
         "malformed hf:// URI 'hf://org/model/weights.bin'; expected hf://org/name or hf://org/name/file.gguf",
         "spec.model.uri: Invalid value: \"hf://org/model/weights.bin\""),
    case("gguf-trust-remote-code", {"spec.model": {"uri": "s3://bucket-one/models/m.gguf", "trustRemoteCode": True}},
         "spec.model", "trustRemoteCode does not apply to a .gguf model", "trustRemoteCode does not apply to a .gguf model"),
    case("gguf-serving-adapter", {"spec.model.uri": "file:///models/smollm2.Q4_1.gguf", "spec.serving": {"enabled": True}},
         "spec", "vLLM cannot apply a LoRA adapter to a .gguf base: set serving.mode merged",
         "vLLM cannot apply a LoRA adapter to a .gguf base"),
    # semantic checks only kubetune can make
    case("revision-on-s3", {"spec.model": {"uri": "s3://bucket-one/m", "revision": "v1"}}, "spec.model", "revision applies only to hf:// models", None),
    case("bad-name", {"metadata.name": "Bad_Name"}, "metadata.name", "has an invalid format", "metadata.name: Invalid value: \"Bad_Name\""),
    # $(NAME) in a string that reaches a command line or an env value: the kubelet would expand it (a Secret in the env)
    case("expansion-in-extra-args", {"spec.serving": {"enabled": True, "extraArgs": ["--max-model-len=$(HF_TOKEN)"]}},
         "spec.serving.extraArgs[0]", "must not contain $(", "spec.serving.extraArgs[0]: Invalid value"),
    case("expansion-in-model-uri", {"spec.model.uri": "pvc://models/$(AWS_SECRET_ACCESS_KEY)"}, "spec.model.uri", "must not contain $(",
         "must not contain $("),
    case("expansion-in-s3-endpoint", {"spec.credentials": {"s3": {"secretName": "s3", "endpoint": "http://x/$(AWS_SECRET_ACCESS_KEY)"}}},
         "spec.credentials.s3.endpoint", "must not contain $(", "spec.credentials.s3.endpoint: Invalid value"),
    case("expansion-in-tracking-uri", {"spec.tracking": {"backend": "mlflow", "uri": "http://x/$(MLFLOW_TRACKING_TOKEN)"}},
         "spec.tracking.uri", "must not contain $(", "spec.tracking.uri: Invalid value"),
    case("expansion-in-adapter-from", {"spec.model.adapterFrom": "s3://bucket-one/$(HF_TOKEN)"}, "spec.model.adapterFrom", "must not contain $(",
         "spec.model.adapterFrom: Invalid value"),
]
