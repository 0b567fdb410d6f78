"""model.uri naming one GGUF file: the forms `kubetune validate`, the API server
(the CRD's pattern and CEL rules) and the trainer's config accept, and the rules
both the FineTuneJob spec and the trainer config hold, declared once in the
contract (the bad forms, with the API server's words: tests/unit/bad_manifests.py)."""
from __future__ import annotations

import re

import pytest

from kubetune_contract.config import ConfigError, parse_config
from kubetune_contract.uris import is_gguf, split_hf_file
from kubetune_operator.api import parse_job
from kubetune_operator.api.crd import build_crd

from .bad_manifests import minimal_manifest

GGUF_URIS = ["file:///models/SmolLM2-135M-Instruct.Q4_1.gguf", "pvc://models/smollm2/model.gguf",
             "s3://bucket-one/models/model.Q8_0.gguf", "hf://org/model-GGUF/model.Q4_K_M.gguf",
             "hf://org/model-GGUF/quants/model.IQ4_XS.gguf"]


def _crd_model_uri_pattern() -> str:
    crd = build_crd()
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec["properties"]["model"]["properties"]["uri"]["pattern"]


@pytest.mark.parametrize("uri", GGUF_URIS)
def test_every_scheme_may_name_a_gguf_file(uri):
    doc = minimal_manifest()
    doc["spec"]["model"] = {"uri": uri}
    parsed = parse_job(doc)
    assert parsed.job is not None, parsed.problems
    assert parsed.job.spec.model.gguf and is_gguf(uri)
    assert re.fullmatch(_crd_model_uri_pattern(), uri), "the API server accepts what kubetune validate does"


def test_an_hf_gguf_uri_is_a_file_in_a_repository():
    assert split_hf_file("hf://org/model-GGUF/quants/model.IQ4_XS.gguf") == ("org/model-GGUF", "quants/model.IQ4_XS.gguf")
    assert not is_gguf("hf://org/model") and not is_gguf("s3://bucket-one/models/m")


def test_the_trainer_config_holds_the_same_gguf_rules(tmp_path):
    from kubetune_operator.render.trainer_config import Placement, render_trainer_config

    doc = minimal_manifest()
    doc["spec"]["model"] = {"uri": GGUF_URIS[2]}
    job = parse_job(doc).job
    cfg = render_trainer_config(job.spec, namespace="team", name="bad", placement=Placement(
        checkpoint_uri="s3://bucket-one/c", output_uri="s3://bucket-one/o", s3_endpoint=None, s3_region=None, metrics_port=0))
    assert parse_config(cfg).model.gguf
    cfg["model"]["trustRemoteCode"] = True  # what the spec refuses, written into the config by hand
    with pytest.raises(ConfigError, match="trustRemoteCode does not apply to a .gguf model"):
        parse_config(cfg)
