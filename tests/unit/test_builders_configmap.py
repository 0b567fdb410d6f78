"""The ConfigMap carries exactly the trainer config the renderer produces, with
the operator's storage defaults, and no secret material; `kubetune render`
prints the same objects the operator builds."""

from __future__ import annotations

import io
import json

from kubetune_operator.builders import build_configmap, build_training_objects
from kubetune_operator.cli.render import render_manifest_objects

from .test_builders import CFG, REPO, example


def test_configmap_holds_the_rendered_config_with_operator_locations():
    job = example("qlora-llama3-8b.yaml")
    cm = build_configmap(job, CFG)
    assert cm["metadata"]["name"] == "support-bot-llama3-8b-config"
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "FineTuneJob"
    config = json.loads(cm["data"]["config.json"])
    assert config["checkpoint"]["uri"] == "s3://acme-ml-checkpoints/support-bot-llama3-8b"
    assert config["output"]["uri"] == "s3://acme-ml-models/support-bot-llama3-8b"
    assert config["s3"] == {"endpoint": "http://minio.local:9000", "region": "us-east-1"}
    text = cm["data"]["config.json"].lower()
    for secret_word in ("hf-token", "acme-s3", "secret_access", "aws_secret"):
        assert secret_word not in text


def test_configmap_defaults_to_operator_bucket():
    config = json.loads(build_configmap(example("quickstart.yaml"), CFG)["data"]["config.json"])
    assert config["checkpoint"]["uri"] == "s3://kt-bucket/team/quickstart/checkpoints"
    assert config["output"]["uri"] == "s3://kt-bucket/team/quickstart/output"


def test_render_prints_the_built_objects(monkeypatch):
    import yaml

    out = io.StringIO()
    assert render_manifest_objects(str(REPO / "examples/quickstart.yaml"), namespace="team", out=out, cfg=CFG) == 0
    docs = list(yaml.safe_load_all(out.getvalue()))
    built = build_training_objects(example("quickstart.yaml", uid=None), CFG)
    assert docs == built
    assert [d["kind"] for d in docs] == ["ConfigMap", "Job"]


def test_render_refuses_disallowed_image(tmp_path, capsys):
    text = (REPO / "examples/quickstart.yaml").read_text().replace("  method: lora", "  image: docker.io/x/y:1\n  method: lora")
    path = tmp_path / "job.yaml"
    path.write_text(text)
    assert render_manifest_objects(str(path), out=io.StringIO(), cfg=CFG) == 1
    assert "spec.image 'docker.io/x/y:1' is not allowed" in capsys.readouterr().err
