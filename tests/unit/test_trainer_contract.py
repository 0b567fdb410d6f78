"""The operator <-> trainer contract: every config the operator renders sets
every field and validates as the trainer's `TrainerConfig`; the cross-field
rules refuse the same combinations with the same message on both sides; the
config carries no secrets; the operator package never imports torch or the
trainer.

The specs come from the examples and from a seeded generator that covers every
enum value of the spec and every optional section both present and absent (the
coverage is checked against the CRD schema itself, so a new field or enum value
the generator does not produce fails `test_generator_covers_the_spec`)."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune_contract.config import ConfigError, parse_config, unset_fields
from kubetune_operator.api import load_manifests, parse_job
from kubetune_operator.api.manifest import parse_document
from kubetune_operator.api.search_space import dimensions, trial_spec
from kubetune_operator.api.crd import model_schema
from kubetune_operator.api.spec import FineTuneJobSpec
from kubetune_operator.render.trainer_config import Placement, render_trainer_config

from .bad_manifests import minimal_manifest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").rglob("*.yaml"))
PLACEMENT = Placement(checkpoint_uri="s3://kubetune/ns/job/checkpoints", output_uri="s3://kubetune/ns/job/output",
                      s3_endpoint="http://minio.kubetune:9000", s3_region="us-east-1", metrics_port=9400)
GENERATED = 300


# --------------------------------------------------------------------------- a seeded spec generator


def _maybe(rng: random.Random, value, p: float = 0.5):
    return value if rng.random() < p else None


def _dataset(rng: random.Random) -> dict:
    d = {"trainUri": rng.choice(["s3://bucket-one/train.jsonl", "hf://org/data", "pvc://claim/data.jsonl", "file:///data/t.jsonl"]),
         "format": rng.choice(["auto", "instruction", "chat", "completion", "text"]),
         "maxSeqLength": rng.choice([16, 512, 2048, 131072]), "packing": rng.random() < 0.5, "dedupe": rng.random() < 0.5}
    evaluation = rng.choice(["uri", "split", None])
    if evaluation == "uri":
        d["evalUri"] = "s3://bucket-one/eval.jsonl"
    elif evaluation == "split":
        d["evalSplit"] = rng.choice([0.01, 0.1, 0.49])
    if rng.random() < 0.4:
        d["columns"] = {k: f"my_{k}" for k in rng.sample(["instruction", "input", "output", "prompt", "completion", "messages", "text"], rng.randint(1, 3))}
    return d


def _training(rng: random.Random, has_eval: bool) -> dict:
    t = {"learningRate": rng.choice([1e-5, 2e-4, 1.0]), "lrScheduler": rng.choice(
        ["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial", "inverse_sqrt"]),
        "precision": rng.choice(["auto", "bf16", "fp16", "fp32"]), "gradientCheckpointing": rng.random() < 0.5}
    length = rng.choice(["epochs", "maxSteps", None])
    if length:
        t[length] = rng.choice([1, 2.5]) if length == "epochs" else rng.randint(1, 5000)
    for key, values in (("evalEverySteps", [1, 50]), ("batchSize", [1, 8]), ("gradientAccumulationSteps", [1, 16]),
                        ("warmupRatio", [0.0, 0.1]), ("seed", [0, 7]), ("weightDecay", [0.0, 0.01])):
        if rng.random() < 0.5:
            t[key] = rng.choice(values)
    if has_eval and rng.random() < 0.5:
        t["earlyStopping"] = {"patience": rng.randint(1, 5), "threshold": rng.choice([0.0, 0.01])}
    if has_eval and rng.random() < 0.4:
        t["keepBest"] = rng.random() < 0.7
    return t


def _evaluation(rng: random.Random) -> dict | None:
    """spec.evaluation: a test set, metrics (numeric ones with their decoding and baselines), generation."""
    if rng.random() < 0.25:
        return None
    e: dict = {}
    test = rng.choice(["uri", "split", None])
    if test == "uri":
        e["testUri"] = "s3://bucket-one/test.jsonl"
    elif test == "split":
        e["testSplit"] = rng.choice([0.05, 0.2])
    if test:
        e["metrics"] = rng.sample(["exactMatch", "tokenF1", "rougeL", "bleu", "chrF", "mae", "rmse", "mape"], rng.randint(0, 3))
    if any(m in ("mae", "rmse", "mape") for m in e.get("metrics", [])):
        if rng.random() < 0.5:
            e["numeric"] = {"topK": rng.choice([1, 3, 20])}
        if rng.random() < 0.6:
            e["baselines"] = rng.sample(["mean", "linear", "randomForest"], rng.randint(1, 3))
    if rng.random() < 0.5:
        e["generation"] = {"maxNewTokens": rng.choice([1, 64]), "temperature": rng.choice([0.0, 0.7])}
    for key, values in (("maxSamples", [1, 500]), ("compareBase", [True, False])):
        if rng.random() < 0.5:
            e[key] = rng.choice(values)
    return e


def _method_sections(rng: random.Random, method: str) -> dict:
    out = {}
    if method != "full" and rng.random() < 0.6:
        out["lora"] = {"r": rng.choice([1, 8, 64]), "alpha": rng.choice([8, 16]), "dropout": rng.choice([0.0, 0.1]),
                       "targetModules": rng.choice([["all-linear"], ["q_proj", "v_proj"]])}
        if rng.random() < 0.2:
            out["lora"].update(useDora=True, modulesToSave=["lm_head"])
    if method == "qlora" and rng.random() < 0.6:
        out["quantization"] = {"bits": 4, "quantType": rng.choice(["nf4", "fp4"]), "doubleQuant": rng.random() < 0.5,
                               "computeDtype": rng.choice(["bfloat16", "float16", "float32"])}
    if method == "lora" and rng.random() < 0.3:
        out["quantization"] = {"bits": 8}
    return out


def _distributed(rng: random.Random) -> dict:
    strategy = rng.choice(["auto", "none", "ddp", "deepspeed"])
    d = {"strategy": strategy, "nodes": 1 if strategy == "none" else rng.choice([1, 2, 4])}
    if strategy in ("auto", "deepspeed") and rng.random() < 0.6:
        stage = rng.choice([0, 1, 2, 3])
        d["deepspeed"] = {"zeroStage": stage, "offloadOptimizer": rng.random() < 0.5, "offloadParams": stage == 3 and rng.random() < 0.5}
    return d


def _output(rng: random.Random, method: str) -> dict:
    out = {"uri": "s3://bucket-one/out"} if rng.random() < 0.5 else {}
    if rng.random() < 0.5:
        out["merge"] = rng.random() < 0.5
        return out
    formats = [f for f in ("adapter", "merged", "gguf", "ollama") if rng.random() < 0.5 and not (f == "adapter" and method == "full")]
    if "ollama" in formats and "gguf" not in formats:
        formats.append("gguf")
    if formats:
        out["formats"] = formats
    if "gguf" in formats and rng.random() < 0.7:
        out["gguf"] = {"quantization": rng.choice(["f16", "q8_0", "q4_k_m"])}
    return out


def _serving(rng: random.Random, method: str, output: dict) -> dict:
    formats = output.get("formats") or (["merged"] if method == "full" or output.get("merge") else ["adapter"])
    modes = [m for m in ("adapter", "merged") if (m == "adapter") == (method != "full") or (m == "merged" and "merged" in formats)]
    mode = rng.choice([*modes, None]) if ("adapter" in formats or method == "full") else "merged"
    serving = {"enabled": rng.random() < 0.5}
    if mode is not None:
        serving["mode"] = mode
    if (mode or ("merged" if method == "full" else "adapter")) == "merged" and method != "full" and "merged" not in formats:
        serving["enabled"] = False
    if (mode or ("merged" if method == "full" else "adapter")) == "adapter" and rng.random() < 0.5:
        serving["pool"] = rng.choice(["team", "coding"])
    return serving


def generated_spec(seed: int) -> dict:
    rng = random.Random(seed)
    method = rng.choice(["lora", "qlora", "full"])
    dataset = _dataset(rng)
    spec = {"model": {"uri": rng.choice(["hf://org/model", "s3://bucket-one/models/m", "pvc://models/m", "file:///models/m",
                                         "hf://org/model-GGUF/model.Q4_K_M.gguf", "s3://bucket-one/models/m.gguf"])},
            "dataset": dataset, "method": method, **_method_sections(rng, method),
            "training": _training(rng, has_eval=bool(dataset.get("evalUri") or dataset.get("evalSplit"))),
            "resources": {"gpusPerNode": rng.choice([0, 1, 8])}, "distributed": _distributed(rng)}
    for section in ("training", "resources", "distributed"):
        if rng.random() < 0.15:
            del spec[section]
    if spec["model"]["uri"].startswith("hf://") and rng.random() < 0.3:
        spec["model"]["revision"] = "main"
    if rng.random() < 0.5:
        spec["checkpoint"] = {k: v for k, v in {"uri": _maybe(rng, "s3://bucket-one/ckpt"), "everySteps": rng.choice([1, 100]),
                                                "keepLast": rng.choice([1, 5])}.items() if v is not None}
    if rng.random() < 0.6:
        spec["output"] = _output(rng, method)
    if rng.random() < 0.5:
        spec["serving"] = _serving(rng, method, spec.get("output") or {})
        if (spec.get("lora") or {}).get("useDora") and spec["serving"].get("mode", "adapter") == "adapter":
            spec["serving"]["enabled"] = False  # vLLM cannot load DoRA adapters (a rule refuses it)
        serves_adapter = spec["serving"].get("mode", "merged" if method == "full" else "adapter") == "adapter"
        if spec["model"]["uri"].endswith(".gguf") and serves_adapter:
            spec["serving"]["enabled"] = False  # nor apply one to a GGUF base (a rule refuses it)
    backend = rng.choice(["none", "wandb", "mlflow", None])
    if backend:
        spec["tracking"] = {"backend": backend, **({"project": "p", "uri": "http://mlflow:5000"} if backend == "mlflow" or rng.random() < 0.5 else {})}
        spec["tracking"].update({"mode": "offline"} if backend == "wandb" and rng.random() < 0.5 else {})
        spec["tracking"].update({"tensorboard": rng.random() < 0.5})
    credentials = {}
    if (backend == "wandb" and (spec.get("tracking") or {}).get("mode") != "offline") or rng.random() < 0.3:
        credentials["tracking"] = {"name": "tracker", "key": "key"}
    if rng.random() < 0.3:
        credentials["hfToken"] = {"name": "hf", "key": "token"}
    if rng.random() < 0.4:
        credentials["s3"] = {"secretName": "team-s3", **({"endpoint": "http://minio:9000", "region": "eu-west-1"} if rng.random() < 0.5 else {})}
    if credentials:
        spec["credentials"] = credentials
    evaluation = _evaluation(rng)
    if evaluation is not None:
        spec["evaluation"] = evaluation
    _objective(rng, spec)
    return spec


def _grpo(rng: random.Random, spec: dict) -> None:
    """objective grpo: prompts data without validation rows, its rewards, a batch that holds whole groups."""
    spec["dataset"] = {"trainUri": spec["dataset"]["trainUri"], "format": rng.choice(["auto", "prompts"]), "maxSeqLength": 512}
    spec.pop("evaluation", None)
    spec["training"] = {"batchSize": 8, "gradientAccumulationSteps": rng.choice([1, 2]), "maxSteps": 10}
    rewards = [{"type": "exactMatch"}, {"type": "numericCloseness", "relative": True, "maxError": 5.0},
               {"type": "regex", "pattern": r"^\d+$", "weight": 0.5}, {"type": "lengthPenalty", "maxChars": 200}]
    spec["grpo"] = {"numGenerations": rng.choice([2, 4, 8]), "rewards": rng.sample(rewards, rng.randint(1, 4))}


def _objective(rng: random.Random, spec: dict) -> None:
    """spec.objective with its section, and what the objective changes: its data
    formats, no packing, preferenceAccuracy as the only task metric."""
    objective = rng.choice(["sft", "sft", "dpo", "orpo", "kto", "grpo", None])
    if objective in (None, "sft"):
        if objective:
            spec["objective"] = objective
        return
    spec["objective"] = objective
    if objective == "grpo":
        _grpo(rng, spec)
        return
    dataset = spec["dataset"]
    dataset.update(format=rng.choice(["auto", "unpaired" if objective == "kto" else "preference"]), packing=False)
    if rng.random() < 0.4:
        dataset["columns"] = {k: f"my_{k}" for k in rng.sample(["prompt", "chosen", "rejected", "completion", "label"], 2)}
    evaluation = spec.get("evaluation")
    if evaluation is not None:
        for key in ("numeric", "baselines"):
            evaluation.pop(key, None)
        if "metrics" in evaluation:
            evaluation["metrics"] = ["preferenceAccuracy"] if rng.random() < 0.7 else []
    if objective == "kto" and rng.random() < 0.6:
        spec["kto"] = {"beta": rng.choice([0.05, 0.5]), "desirableWeight": rng.choice([1.0, 1.33]), "undesirableWeight": 1.0}
    elif objective != "kto" and rng.random() < 0.6:
        spec["preference"] = {"beta": rng.choice([0.05, 0.5])}
        if objective == "dpo" and rng.random() < 0.8:
            spec["preference"]["lossType"] = rng.choice(["sigmoid", "ipo", "hinge", "robust"])


def _manifest(spec: dict, name: str = "gen") -> dict:
    doc = minimal_manifest(name)
    doc["spec"] = spec
    return doc


GENERATED_SPECS = [generated_spec(seed) for seed in range(GENERATED)]


# --------------------------------------------------------------------------- coverage of the generator


def _enums_and_optionals(schema: dict, path: str = "spec") -> tuple[dict[str, list], set[str]]:
    enums, optionals = {}, set()
    required = set(schema.get("required", []))
    for name, sub in schema.get("properties", {}).items():
        here = f"{path}.{name}"
        if "enum" in sub:
            enums[here] = sub["enum"]
        if "properties" in sub:
            if name not in required:
                optionals.add(here)
            inner_enums, inner_optionals = _enums_and_optionals(sub, here)
            enums.update(inner_enums)
            optionals |= inner_optionals
    return enums, optionals


def _seen(doc: dict, path: str):
    node = {"spec": doc}
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# Enum fields and sections the generator leaves alone, and why.
NOT_GENERATED = {
    "spec.resources.tolerations",  # a list of objects: no bearing on the trainer config
    "spec.serving.gate",  # judged by the operator on status.evaluation: no bearing on the trainer config
}


# Enum values every spec using them is refused for (a rule, tested in CROSS_FIELD).
REFUSED_VALUES = {
    ("spec.distributed.strategy", "fsdp"),  # FSDP_NOT_PROVEN
}


def test_generator_covers_the_spec():
    enums, optionals = _enums_and_optionals(model_schema(FineTuneJobSpec))
    missing = []
    for path, values in enums.items():
        if any(path.startswith(skipped + ".") for skipped in NOT_GENERATED):
            continue
        values = [v for v in values if (path, v) not in REFUSED_VALUES]
        seen = {_seen(spec, path) for spec in GENERATED_SPECS}
        # A default counts as seen when the field is left out.
        missing += [f"{path}={v}" for v in values if v not in seen and not (None in seen and _default(path) == v)]
    for path in optionals - NOT_GENERATED:
        present = {(_seen(spec, path) is not None) for spec in GENERATED_SPECS}
        if present != {True, False}:
            missing.append(f"{path} {'absent' if True in present else 'present'}")
    assert not missing, f"the generator never produces: {missing}"


def _default(path: str):
    schema = model_schema(FineTuneJobSpec)
    for part in path.split(".")[1:]:
        schema = schema["properties"][part]
    return schema.get("default")


# --------------------------------------------------------------------------- every config renders explicit and valid


from kubetune_operator.controllers.finetunejob.adapter_source import with_source_adapter  # noqa: E402


def _jobs():
    """Every example job, and every example sweep's trials at their first and last grid values."""
    for path in EXAMPLES:
        for parsed in load_manifests(path, parse_document):
            assert not parsed.problems, (path, parsed.problems)
            if parsed.job is not None:
                job = parsed.job
                if job.spec.model.adapter_from_job:  # as the operator resolves it, from the named job's status
                    job = with_source_adapter(job, f"s3://bucket-one/{job.spec.model.adapter_from_job}/output/adapter")
                yield pytest.param(job, id=path.stem)
                continue
            for end in (0, -1):
                values = {d.path: d.candidates()[end] for d in dimensions(parsed.sweep.spec)}
                doc = _manifest(trial_spec(parsed.sweep.spec, values), name=f"{parsed.sweep.metadata.name}-t{end % 10}")
                yield pytest.param(parse_job(doc).job, id=f"{path.stem}-trial{end}")


def test_there_are_examples():
    assert len(EXAMPLES) >= 3


def _render_and_parse(job):
    rendered = render_trainer_config(job.spec, namespace="ns", name=job.metadata.name, placement=PLACEMENT)
    # Through JSON, as the ConfigMap carries it.
    return rendered, parse_config(json.loads(json.dumps(rendered)))


def _agrees_with_spec(job, cfg) -> None:
    spec = job.spec
    assert unset_fields(cfg) == []
    assert cfg.model.uri == spec.model.uri and cfg.method == spec.method
    assert cfg.distributed.strategy == spec.resolved_strategy
    assert cfg.checkpoint.uri == (spec.checkpoint.uri or PLACEMENT.checkpoint_uri)
    assert cfg.checkpoint.every_steps == spec.checkpoint.every_steps
    assert cfg.dataset == spec.dataset
    assert cfg.training.learning_rate == spec.training.learning_rate
    assert cfg.training.epochs == spec.training.resolved_epochs and cfg.training.max_steps == spec.training.max_steps
    assert cfg.lora == spec.resolved_lora and cfg.quantization == spec.resolved_quantization


@pytest.mark.parametrize("job", list(_jobs()))
def test_every_example_renders_an_explicit_config_the_trainer_accepts(job):
    rendered, cfg = _render_and_parse(job)
    _agrees_with_spec(job, cfg)
    if job.spec.method == "qlora":
        assert cfg.quantization.bits == 4
    # Secrets reach the trainer as env from Secret refs, never in the config.
    text = json.dumps(rendered)
    for secret_ref in ("secretName", "hfToken", "AWS_SECRET_ACCESS_KEY", "acme-s3", "hf-token"):
        assert secret_ref not in text


def test_generated_specs_render_explicit_configs_the_trainer_accepts(tmp_path):
    from kubetune_trainer.config import load_config  # the trainer's own entry point, on a file

    for seed, spec in enumerate(GENERATED_SPECS):
        parsed = parse_job(_manifest(spec))
        assert parsed.job is not None, (seed, [p.render() for p in parsed.problems])
        rendered, cfg = _render_and_parse(parsed.job)
        _agrees_with_spec(parsed.job, cfg)
        path = tmp_path / f"{seed}.json"
        path.write_text(json.dumps(rendered))
        assert load_config(path) == cfg


def test_a_config_missing_any_field_is_refused():
    rendered, _ = _render_and_parse(next(iter(_jobs())).values[0])
    for section, value in rendered.items():
        if isinstance(value, dict) and value:
            field = next(iter(value))
            partial = copy.deepcopy(rendered)
            del partial[section][field]
            with pytest.raises(ConfigError) as refused:
                parse_config(partial)
            assert f"{section}.{field}" in str(refused.value)


def test_qlora_example_golden():
    job = next(p.job for p in load_manifests(REPO / "examples" / "qlora-llama3-8b.yaml"))
    r = render_trainer_config(job.spec, namespace="ml-team", name=job.metadata.name, placement=PLACEMENT)
    assert r["quantization"] == {"bits": 4, "quantType": "nf4", "doubleQuant": True, "computeDtype": "bfloat16"}
    assert r["lora"] == {"r": 16, "alpha": 32, "dropout": 0.05, "targetModules": ["all-linear"], "useDora": False, "modulesToSave": []}
    assert r["training"]["earlyStopping"] == {"patience": 3, "threshold": 0.0}
    assert r["training"]["epochs"] == 3 and r["training"]["maxSteps"] is None
    # The API's documented defaults, not the trainer's old ones (4 and true, not 1 and false).
    assert r["training"]["gradientAccumulationSteps"] == 4 and r["training"]["gradientCheckpointing"] is True
    assert r["job"] == {"namespace": "ml-team", "name": "support-bot-llama3-8b", "uid": None}
    assert r["metrics"] == {"enabled": True, "port": 9400}


# --------------------------------------------------------------------------- the same rules on both sides

# (what breaks the rule in a manifest, the same in a rendered config)
CROSS_FIELD = [
    ({"method": "qlora", "quantization": {"bits": 8}}, {"method": "qlora", "quantization": {"bits": 8}}),
    ({"method": "full", "quantization": {"bits": 8}}, {"method": "full", "lora": None, "quantization": {"bits": 8}}),
    ({"method": "lora", "quantization": {"bits": 4}}, {"quantization": {"bits": 4}}),
    ({"method": "full", "lora": {"r": 8}}, {"method": "full"}),
    ({"training": {"earlyStopping": {"patience": 2}}}, {"training": {"earlyStopping": {"patience": 2, "threshold": 0.0}}}),
    ({"training": {"epochs": 2, "maxSteps": 10}}, {"training": {"epochs": 2, "maxSteps": 10}}),
    ({"dataset": {"evalUri": "s3://bucket-one/e.jsonl", "evalSplit": 0.1}}, {"dataset": {"evalUri": "s3://bucket-one/e.jsonl", "evalSplit": 0.1}}),
    ({"distributed": {"strategy": "fsdp", "nodes": 2}}, {"distributed": {"strategy": "fsdp", "deepspeed": None}}),
    ({"distributed": {"deepspeed": {"zeroStage": 2, "offloadParams": True}}},
     {"distributed": {"strategy": "deepspeed", "deepspeed": {"zeroStage": 2, "offloadOptimizer": False, "offloadParams": True}}}),
]


def _merged(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.mark.parametrize("in_spec,in_config", CROSS_FIELD, ids=lambda c: json.dumps(c, sort_keys=True)[:60])
def test_both_sides_refuse_a_cross_field_combination_with_the_same_message(in_spec, in_config):
    parsed = parse_job(_manifest(_merged(minimal_manifest()["spec"], in_spec)))
    assert parsed.job is None
    api_messages = {p.message for p in parsed.problems}
    valid, _ = _render_and_parse(parse_job(minimal_manifest()).job)
    bad = _merged(valid, in_config)
    if "quantization" in in_config and bad["quantization"]:
        bad["quantization"] = {"bits": 4, "quantType": "nf4", "doubleQuant": True, "computeDtype": "bfloat16", **in_config["quantization"]}
    with pytest.raises(ConfigError) as refused:
        parse_config(bad)
    trainer_message = str(refused.value).split(": ", 2)[-1]
    assert trainer_message in api_messages, (trainer_message, api_messages)


def test_operator_package_does_not_import_torch_or_the_trainer():
    code = ("import sys, kubetune_operator.render.trainer_config, kubetune_operator.cli.local_run, kubetune_operator.cli, kubetune_operator.handlers;"
            "bad=[m for m in ('torch','kubetune_trainer','transformers') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_contract_needs_only_pydantic():
    code = ("import sys, kubetune_contract.config, kubetune_contract.formats, kubetune_contract.checkpoints, kubetune_contract.metric_names;"
            "bad=[m for m in ('torch','kopf','kubetune_trainer','kubetune_operator','transformers') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
