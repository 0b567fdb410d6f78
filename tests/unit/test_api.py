"""The FineTuneJob API: bad manifests rejected with located, actionable messages;
examples valid and lossless; the CRD and README generated from the model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubetune_operator.api import load_manifests, parse_job
from kubetune_operator.api.manifest import parse_document
from kubetune_operator.api.crd import build_crd, build_crds
from kubetune_operator.api.reference import BEGIN, END, spec_reference
from kubetune_operator.api.yamlio import dump_yaml

from .bad_manifests import BAD_CASES, minimal_manifest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))


def test_there_are_at_least_40_distinct_bad_manifests():
    assert len({c.id for c in BAD_CASES}) == len(BAD_CASES) >= 40


@pytest.mark.parametrize("bad", BAD_CASES, ids=lambda c: c.id)
def test_bad_manifest_is_rejected_naming_the_field(bad):
    parsed = parse_job(bad.manifest())
    assert parsed.job is None, f"{bad.id} was accepted"
    rendered = [f"{p.path}: {p.message}" for p in parsed.problems]
    assert any(p.path == bad.path and bad.message in p.message for p in parsed.problems), rendered


def test_minimal_manifest_is_valid_and_resolves_defaults():
    job = parse_job(minimal_manifest()).job
    assert job is not None
    spec = job.spec
    assert (spec.resolved_lora.r, spec.resolved_lora.alpha, spec.resolved_lora.target_modules) == (16, 32, ["all-linear"])
    assert spec.training.learning_rate == 2e-4 and spec.training.resolved_epochs == 3
    assert spec.training.lr_scheduler == "cosine" and spec.training.warmup_ratio == 0.03
    assert spec.resolved_quantization is None


def test_qlora_defaults_to_4bit_nf4_double_quant():
    doc = minimal_manifest()
    doc["spec"]["method"] = "qlora"
    q = parse_job(doc).job.spec.resolved_quantization
    assert (q.bits, q.quant_type, q.double_quant) == (4, "nf4", True)


@pytest.mark.parametrize(
    "method,gpus,nodes,strategy",
    [("lora", 1, 1, "none"), ("lora", 8, 1, "ddp"), ("full", 8, 2, "deepspeed"), ("qlora", 0, 2, "ddp")],
)
def test_auto_strategy_resolution(method, gpus, nodes, strategy):
    doc = minimal_manifest()
    doc["spec"].update(method=method, resources={"gpusPerNode": gpus}, distributed={"nodes": nodes})
    assert parse_job(doc).job.spec.resolved_strategy == strategy


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates_and_round_trips(path):
    (parsed,) = load_manifests(path, parse_document)
    assert not parsed.problems, [p.render() for p in parsed.problems]
    original = yaml.safe_load(path.read_text())
    assert (parsed.job or parsed.sweep).to_manifest() == original


def test_yaml_problems_carry_file_and_line(tmp_path):
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        "apiVersion: kubetune.io/v1alpha1\nkind: FineTuneJob\nmetadata:\n  name: x\nspec:\n"
        "  model:\n    uri: hf://org/m\n  dataset:\n    trainUri: s3://bkt/x\n  method: lora\n"
        "  lora:\n    r: 0\n    rank: 4\n"
    )
    (parsed,) = load_manifests(manifest)
    rendered = sorted(p.render(str(manifest)) for p in parsed.problems)
    assert rendered == [
        f"{manifest}:12: spec.lora.r: 0 is out of range; must be >= 1",
        f"{manifest}:13: spec.lora.rank: unknown field; valid fields: alpha, dropout, modulesToSave, r, targetModules, useDora",
    ]


def test_yaml_1_2_floats_are_numbers(tmp_path):
    doc = minimal_manifest()
    doc["spec"]["training"] = {"learningRate": "__LR__"}
    path = tmp_path / "job.yaml"
    path.write_text(dump_yaml(doc).replace("__LR__", "2e-4"))
    (parsed,) = load_manifests(path)
    assert parsed.job.spec.training.learning_rate == pytest.approx(2e-4)


def test_invalid_yaml_and_wrong_kind_are_reported_not_raised(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec:\n  model: [unclosed\n")
    (parsed,) = load_manifests(broken)
    assert parsed.problems[0].message.startswith("not valid YAML") and parsed.problems[0].line
    other = tmp_path / "deploy.yaml"
    other.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n")
    (parsed,) = load_manifests(other)
    assert "is not a FineTuneJob" in parsed.problems[0].message


def test_crd_files_are_generated_from_the_models():
    """A stale crds/<kind>.yaml fails here: run `make crds`."""
    crds = build_crds()
    assert [c["spec"]["names"]["kind"] for c in crds] == ["FineTuneJob", "FineTuneSweep", "KubetunePolicy"]
    for crd in crds:
        name = f"{crd['spec']['names']['singular']}.yaml"
        assert (ROOT / "crds" / name).read_text() == dump_yaml(crd), f"crds/{name} is stale: run make crds"


def test_the_chart_carries_the_same_crds():
    for name in ("finetunejob.yaml", "finetunesweep.yaml"):
        assert (ROOT / "charts" / "kubetune" / "crds" / name).read_text() == (ROOT / "crds" / name).read_text(), name


def test_crd_has_printer_columns_status_and_short_name():
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Phase", "Model", "Method", "Progress", "Loss", "Eval", "Age"]
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["shortNames"] == ["ftj"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for immutable in ("model", "dataset", "method"):
        assert {"rule": "self == oldSelf", "message": f"{immutable} is immutable once the job is created"} in spec["properties"][immutable]["x-kubernetes-validations"]


def test_crd_schema_is_structural():
    """No $ref, no unions other than int-or-string, no titles: what the API server demands."""

    def walk(node, path="spec"):
        assert "$ref" not in node and "title" not in node and "allOf" not in node, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), path
        for key, child in node.get("properties", {}).items():
            walk(child, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}{{}}")

    walk(build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_readme_spec_reference_is_current():
    """Regenerate with: kubetune docs, pasted between the markers in README.md."""
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    assert readme[start:end] + "\n" == spec_reference()


def test_cli_validate_exit_codes_and_output(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(dump_yaml(BAD_CASES[0].manifest()))
    run = lambda *a: subprocess.run([sys.executable, "-m", "kubetune_operator.cli", *a], capture_output=True, text=True)
    ok = run("validate", *map(str, EXAMPLES))
    assert ok.returncode == 0 and ok.stdout.count("is valid") == len(EXAMPLES)
    failed = run("validate", str(bad))
    assert failed.returncode == 1
    assert f"{bad}:5: spec.model: required field is missing" in failed.stderr
    assert "Traceback" not in failed.stderr
    for args in (["--help"], ["validate", "--help"], ["render", "--help"], ["run", "--help"]):
        shown = run(*args)
        assert shown.returncode == 0 and "usage: kubetune" in shown.stdout
