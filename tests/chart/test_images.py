"""Dockerfile.operator and Dockerfile.trainer: hadolint-clean, multi-stage,
non-root, labelled, pinned bases, and installing exactly the versions pinned in
hack/constraints.txt that satisfy the packages' pyprojects. (No Docker engine
here: `make images` builds them elsewhere.)"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .chartlib import ROOT
from .dockerfiles import parse, pip_installs

pytestmark = pytest.mark.chart

IMAGES = {"operator": ROOT / "Dockerfile.operator", "trainer": ROOT / "Dockerfile.trainer"}
LOCAL = {"/src/operator": ROOT / "operator", "/src/trainer": ROOT / "trainer",
         "/src/contract": ROOT / "trainer/contract", "/src/trainer/contract": ROOT / "trainer/contract"}
# Constraints that are ranges on purpose. python-dateutil: kubernetes and
# botocore disagree on its major version; STACK.md pins it `<3` to stop pip's
# backtracking. It is still checked against the pyproject below.
RANGE_ON_PURPOSE = {"python-dateutil"}


def constraints() -> dict[str, Requirement]:
    out = {}
    for line in (ROOT / "hack/constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req
    return out


def pyproject(path: Path) -> dict:
    return tomllib.loads((path / "pyproject.toml").read_text())["project"]


def requirements_of(target: str) -> list[Requirement]:
    """What one `pip install` argument asks for: a requirement, or a local
    package's dependencies (plus requested extras)."""
    if re.fullmatch(r"[\w.-]+==", target):
        # A version ARG left empty: the RUN is guarded by `if [ -n ... ]` (checked below).
        return []
    m = re.fullmatch(r"(/src/[\w/]+)(?:\[([\w,]+)\])?", target)
    if not m:
        return [Requirement(target)]
    project = pyproject(LOCAL[m.group(1)])
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in filter(None, (m.group(2) or "").split(",")):
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def installed(image: str, build_args: dict | None = None) -> dict[str, tuple[Requirement, list[str]]]:
    """Every direct requirement the image's pip commands install, with the
    constraint files in force for it."""
    _, stages = parse(IMAGES[image], build_args)
    out, local = {}, set()
    for pip in pip_installs(stages):
        for target in pip.requirements:
            if target in LOCAL:
                local.add(canonicalize_name(pyproject(LOCAL[target])["name"]))
            for req in requirements_of(target):
                out[canonicalize_name(req.name)] = (req, pip.constraints)
    # A local distribution (on no index) is installed from its sources by the image itself.
    return {name: found for name, found in out.items() if name not in local}


def exact_pin(req: Requirement) -> str | None:
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version:
        return specs[0].version
    return None


def test_hadolint_clean():
    proc = subprocess.run(["bash", str(ROOT / "hack/lint-dockerfiles.sh")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hadolint: clean" in proc.stdout


def test_hadolint_reports_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    proc = subprocess.run(["bash", str(ROOT / "hack/lint-dockerfiles.sh"), str(bad)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "DL3007" in proc.stdout and "DL3013" in proc.stdout


@pytest.mark.parametrize("image", IMAGES)
def test_every_installed_package_is_pinned_and_satisfies_its_pyproject(image):
    pins = constraints()
    copied = [rest for kw, rest in parse(IMAGES[image])[1][0].instructions if kw == "COPY"]
    assert any(c.startswith("hack/constraints.txt ") for c in copied), "constraints.txt must be in the build stage"
    wanted = installed(image, {"FLASH_ATTN_VERSION": "2.8.3.post2"})  # the optional extra, switched on
    assert wanted
    for name, (req, constraint_files) in wanted.items():
        pin = exact_pin(req)
        if pin is None:
            assert constraint_files == ["/src/constraints.txt"], f"{name}: installed without constraints"
            assert name in pins, f"{name} ({image} image) is not pinned in hack/constraints.txt"
            pin = exact_pin(pins[name])
            if name in RANGE_ON_PURPOSE:
                assert pins[name].specifier, f"{name}: hack/constraints.txt must at least bound it"
                continue
            assert pin, f"{name}: hack/constraints.txt has {pins[name]}, not an exact pin"
        assert req.specifier.contains(pin, prereleases=True), f"{name}=={pin} does not satisfy {req}"
        # A pin in the Dockerfile must agree with constraints.txt where both exist.
        if name in pins and exact_pin(pins[name]):
            assert exact_pin(pins[name]) == pin, f"{name}: Dockerfile pins {pin}, constraints.txt {pins[name]}"


def test_both_images_install_the_contract_from_its_sources():
    for image in IMAGES:
        targets = [t for pip in pip_installs(parse(IMAGES[image])[1]) for t in pip.requirements]
        contract = [t for t in targets if t in LOCAL and LOCAL[t] == ROOT / "trainer/contract"]
        assert contract, f"{image} image does not install trainer/contract"
        # In the same pip command as the package that depends on it, or an earlier one.
        package = next(t for t in targets if t == f"/src/{image}" or t.startswith(f"/src/{image}["))
        assert targets.index(contract[0]) < targets.index(package), image


def test_trainer_image_installs_the_training_stack_and_operator_image_does_not():
    trainer, operator = installed("trainer"), installed("operator")
    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "deepspeed", "accelerate", "nvidia-ml-py"):
        assert name in trainer, name
    assert "kopf" not in trainer and "kubernetes" not in trainer
    assert "kopf" in operator and not {"torch", "transformers", "deepspeed"} & set(operator)
    # flash-attn is optional: off unless the build arg names a version.
    build = parse(IMAGES["trainer"])[1][0]
    assert build.args["FLASH_ATTN_VERSION"] == ""
    assert any(kw == "RUN" and 'if [ -n "${FLASH_ATTN_VERSION}" ]' in rest for kw, rest in build.instructions)
    assert exact_pin(installed("trainer", {"FLASH_ATTN_VERSION": "2.8.3.post2"})["flash-attn"][0]) == "2.8.3.post2"


@pytest.mark.parametrize("image", IMAGES)
def test_multi_stage_non_root_labelled_and_pinned_bases(image):
    _, stages = parse(IMAGES[image])
    assert len(stages) >= 2, "multi-stage"
    for stage in stages:
        repo, _, tag = stage.base.partition(":")
        assert tag and tag != "latest" and "$" not in stage.base, f"base image not pinned: {stage.base}"
    final = stages[-1]
    users = [rest for kw, rest in final.instructions if kw == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), f"final USER must be a numeric non-root id: {users}"
    labels = " ".join(rest for kw, rest in final.instructions if kw == "LABEL")
    for key in ("title", "description", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    # The runtime stage gets the venv from the build stage, not a compiler.
    assert any(kw == "COPY" and rest.startswith("--from=build ") for kw, rest in final.instructions)
    assert not any("build-essential" in rest for kw, rest in final.instructions)


def test_dockerignore_keeps_what_the_images_copy():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "context starts empty"
    allowed = [ln[1:].rstrip("/") for ln in lines if ln.startswith("!")]
    for image in IMAGES:
        for stage in parse(IMAGES[image])[1]:
            for kw, rest in stage.instructions:
                if kw == "COPY" and not rest.startswith("--from"):
                    src = rest.split()[0].rstrip("/")
                    assert any(src == a or a.startswith(src + "/") or src.startswith(a + "/") for a in allowed), src


def test_trainer_image_has_what_gguf_export_needs():
    """output.formats gguf/ollama: the binding built from the pinned sdist (its
    compiled quantizer), the converter scripts from the same sdist where the
    exporter looks for them, the converter's tokenizer readers, and OpenMP at run time."""
    from kubetune_trainer.exporters.gguf import DEFAULT_LLAMA_CPP, LLAMA_CPP_ENV

    trainer = installed("trainer")
    for name in ("llama-cpp-python", "sentencepiece", "protobuf"):
        assert name in trainer, name
    _, stages = parse(IMAGES["trainer"])
    build, runtime = stages[0], stages[-1]
    runs = " ".join(rest for kw, rest in build.instructions if kw == "RUN")
    assert "--no-binary llama-cpp-python" in runs and "convert_hf_to_gguf.py" in runs and "gguf-py" in runs
    assert "cmake" in runs, "the binding compiles llama.cpp with CMake"
    assert any(kw == "COPY" and rest == f"--from=build {DEFAULT_LLAMA_CPP} {DEFAULT_LLAMA_CPP}" for kw, rest in runtime.instructions)
    env = " ".join(rest for kw, rest in runtime.instructions if kw == "ENV")
    assert f"{LLAMA_CPP_ENV}={DEFAULT_LLAMA_CPP}" in env
    assert "libgomp1" in " ".join(rest for kw, rest in runtime.instructions if kw == "RUN")
    # The tests build the same version (hack/llama-cpp.sh) as the image installs,
    # with the same CMake flags (neither -march=native: a native build on a CPU
    # with AMX segfaults in ggml's AMX matmul, llama.cpp#20824).
    script = (ROOT / "hack/llama-cpp.sh").read_text()
    assert f"VERSION={exact_pin(constraints()['llama-cpp-python'])}\n" in script
    (flags,) = re.findall(r'^CMAKE_FLAGS="([^"]*)"$', script, re.M)
    assert f'ARG LLAMA_CPP_CMAKE_ARGS="{flags}"' in IMAGES["trainer"].read_text()
    assert "-DGGML_NATIVE=OFF" in flags.split()


def test_trainer_image_installs_and_imports_every_tracker():
    """tracking.backend wandb|mlflow and tracking.tensorboard: each module a
    tracker imports is declared in tracking.IMPORTS with its distribution, the
    image installs that distribution pinned, the image imports the module as
    shipped (its RUN python3 -c line), and it imports here (same pins)."""
    import ast
    import importlib
    import sys

    from kubetune_trainer import tracking

    imported = set()
    for module in (ROOT / "trainer/src/kubetune_trainer/tracking").glob("*_tracker.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    third_party = {m for m in imported if m.split(".")[0] not in sys.stdlib_module_names and not m.startswith("kubetune_")}
    assert {"mlflow.tracking", "wandb", "torch.utils.tensorboard"} <= third_party  # the scan sees the lazy imports
    assert third_party <= set(tracking.IMPORTS), f"declare in tracking.IMPORTS: {sorted(third_party - set(tracking.IMPORTS))}"
    trainer = installed("trainer")
    for module, distribution in tracking.IMPORTS.items():
        assert distribution in trainer, f"{distribution} (for {module}) is not installed by Dockerfile.trainer"
        importlib.import_module(module)
    runtime = parse(IMAGES["trainer"])[1][-1]
    checks = [rest for kw, rest in runtime.instructions if kw == "RUN" and rest.startswith('python3 -c "import ')]
    assert len(checks) == 1, checks
    assert sorted(checks[0].removeprefix('python3 -c "import ').rstrip('"').split(", ")) == sorted(tracking.IMPORTS)
