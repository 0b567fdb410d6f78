"""The operator ↔ trainer contract: every config the operator renders validates
as the trainer's `TrainerConfig`, carries no secrets, and the operator package
never imports torch or the trainer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune_operator.api import load_manifests
from kubetune_operator.render.trainer_config import RenderDefaults, render_trainer_config
from kubetune_trainer.config import TrainerConfig, parse_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
DEFAULTS = RenderDefaults(checkpoint_uri="s3://kubetune/ns/job/checkpoints", output_uri="s3://kubetune/ns/job/output",
                          s3_endpoint="http://minio.kubetune:9000", s3_region="us-east-1")


def _jobs():
    for path in EXAMPLES:
        for parsed in load_manifests(path):
            assert not parsed.problems, (path, parsed.problems)
            yield pytest.param(parsed.job, id=f"{path.stem}")


def test_there_are_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("job", list(_jobs()))
def test_every_example_renders_a_valid_trainer_config(job):
    rendered = render_trainer_config(job.spec, namespace="ns", name=job.metadata.name, defaults=DEFAULTS)
    cfg = parse_config(json.loads(json.dumps(rendered)))  # through JSON, as the ConfigMap carries it
    assert isinstance(cfg, TrainerConfig)
    assert cfg.model.uri == job.spec.model.uri and cfg.method == job.spec.method
    assert cfg.distributed.strategy == job.spec.resolved_strategy
    assert cfg.checkpoint.uri == (job.spec.checkpoint.uri or DEFAULTS.checkpoint_uri)
    assert cfg.checkpoint.every_steps == job.spec.checkpoint.every_steps
    assert cfg.data.max_seq_length == job.spec.dataset.max_seq_length and cfg.data.packing == job.spec.dataset.packing
    assert cfg.training.learning_rate == job.spec.training.learning_rate
    if job.spec.method == "qlora":
        assert cfg.resolved_quantization.bits == 4
    # Secrets reach the trainer as env from Secret refs, never in the config.
    text = json.dumps(rendered)
    for secret_ref in ("secretName", "hfToken", "AWS_SECRET_ACCESS_KEY", "acme-s3", "hf-token"):
        assert secret_ref not in text


def test_operator_dict_defaults_match_dataclass_defaults():
    job = next(iter(_jobs())).values[0]
    as_dict = render_trainer_config(job.spec, namespace="ns", name="n", defaults={
        "checkpointUri": DEFAULTS.checkpoint_uri, "outputUri": DEFAULTS.output_uri, "s3Endpoint": DEFAULTS.s3_endpoint, "s3Region": DEFAULTS.s3_region})
    assert as_dict == render_trainer_config(job.spec, namespace="ns", name="n", defaults=DEFAULTS)


def test_qlora_example_golden():
    job = next(p.job for p in load_manifests(REPO / "examples" / "qlora-llama3-8b.yaml"))
    r = render_trainer_config(job.spec, namespace="ml-team", name=job.metadata.name, defaults=DEFAULTS)
    assert r["quantization"] == {"bits": 4, "quantType": "nf4", "doubleQuant": True, "computeDtype": "bfloat16"}
    assert r["lora"] == {"r": 16, "alpha": 32, "dropout": 0.05, "targetModules": ["all-linear"]}
    assert r["training"]["earlyStopping"] == {"patience": 3, "threshold": 0.0}
    assert r["training"]["epochs"] == 3 and "maxSteps" not in r["training"]
    assert r["job"] == {"namespace": "ml-team", "name": "support-bot-llama3-8b"}
    assert r["metrics"] == {"enabled": True, "port": 9400}


def test_operator_package_does_not_import_torch_or_the_trainer():
    code = ("import sys, kubetune_operator.render.trainer_config, kubetune_operator.local_run, kubetune_operator.cli;"
            "bad=[m for m in ('torch','kubetune_trainer','transformers') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
