"""The images as built (hack/images/build.sh: buildah, the CPU flavour of
Dockerfile.operator and Dockerfile.trainer):
who they run as, what they start, what they contain and at which versions, and
that they work the way our pods run them (non-root, read-only root, writable
only where the pod mounts scratch space). Plus hadolint on every Dockerfile.

The images come from tests/harness/built_images.py (hack/test.sh builds them
while the other tools install; a warm build answers in seconds). Commands run
in them through podman with runc, the runtime the node's containerd uses.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.harness import built_images
from tests.harness.waiting import wait_for

from .chartlib import ROOT, one, render

pytestmark = pytest.mark.chart

ENTRYPOINTS = {"operator": ["kopf"], "trainer": ["kubetune-train"]}
# The optional groups each image installs besides its package's dependencies.
EXTRAS = {"operator": (), "trainer": ("gguf", "deepspeed", "nvml", "tracking")}
PROJECTS = {"operator": ROOT / "operator", "trainer": ROOT / "trainer", "contract": ROOT / "trainer/contract"}
# Where libraries put caches and scratch files; each one the image sets must be writable in a pod.
CACHE_VARS = ("HOME", "HF_HOME", "TRITON_CACHE_DIR", "TORCH_EXTENSIONS_DIR", "MPLCONFIGDIR", "XDG_CACHE_HOME", "TMPDIR")
# Run inside the image: imports, writability, checks; one JSON line out.
PROBE = r'''
import importlib, json, os, shutil, sys, tempfile
spec = json.loads(sys.argv[1])
out = {"uid": os.getuid(), "gid": os.getgid(), "imports": {}, "writable": {}, "checks": {},
       "env": {k: os.environ[k] for k in spec["env"] if k in os.environ}, "tempdir": tempfile.gettempdir(),
       "compilers": [c for c in ("cc", "gcc", "c++", "g++", "nvcc") if shutil.which(c)]}
def attempt(code):
    try:
        return repr(eval(code, {"importlib": importlib, "os": os}))
    except BaseException as exc:
        return f"ERROR {type(exc).__name__}: {exc}"
for module in spec["imports"]:
    out["imports"][module] = attempt(f"importlib.import_module({module!r}).__name__")
for path in spec["writable"] + list(out["env"].values()) + [out["tempdir"]]:
    try:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, ".kubetune-probe"), "w") as f:
            f.write("x")
        out["writable"][path] = True
    except OSError as exc:
        out["writable"][path] = f"{type(exc).__name__}: {exc}"
for name, code in spec["checks"].items():
    out["checks"][name] = attempt(code)
print(json.dumps(out))
'''
DISTRIBUTIONS = r'''
import importlib.metadata as md, json
print(json.dumps({d.metadata["Name"]: d.version for d in md.distributions()}))
'''


def ref(name: str) -> str:
    return built_images.ref(name)


def project(path) -> dict:
    return tomllib.loads((path / "pyproject.toml").read_text())["project"]


def constraints() -> dict[str, Requirement]:
    out = {}
    for line in (ROOT / "hack/constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req
    return out


def exact_pin(req: Requirement) -> str | None:
    specs = list(req.specifier)
    return specs[0].version if len(specs) == 1 and specs[0].operator == "==" else None


def probe(image: str, pod_spec: dict, container: dict, *, imports=(), writable=(), checks=None) -> dict:
    spec = {"imports": list(imports), "writable": list(writable), "env": list(CACHE_VARS), "checks": checks or {}}
    proc = built_images.run_as_pod(image, pod_spec, container, ["-c", PROBE, json.dumps(spec)], entrypoint="python3")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def installed(image: str) -> dict[str, str]:
    proc = built_images.podman("run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c", DISTRIBUTIONS)
    return {canonicalize_name(k): v for k, v in json.loads(proc.stdout).items()}


def trainer_pod() -> tuple[dict, dict]:
    """The pod spec and container the operator's builders give a training job."""
    from kubetune_operator.api import load_manifests
    from kubetune_operator.builders import build_training_job
    from kubetune_operator.settings import Settings

    job = load_manifests(ROOT / "examples/quickstart.yaml")[0].job
    cfg = Settings(trainer_image=ref("trainer"), allowed_image_prefixes=("ghcr.io/kubetune/",))
    pod = build_training_job(job, cfg)["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def operator_pod() -> tuple[dict, dict]:
    """The pod spec and container the chart gives the operator."""
    tag = ref("operator").rsplit(":", 1)[1]
    pod = one(render({"image.tag": tag}), "Deployment")["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def writable_mounts(pod: dict, container: dict) -> list[str]:
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    return [m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs]


def under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


# --- hadolint -------------------------------------------------------------

def test_hadolint_clean():
    proc = subprocess.run(["bash", str(ROOT / "hack/lint-dockerfiles.sh")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hadolint: clean" in proc.stdout
    for linted in ("Dockerfile.operator", "Dockerfile.trainer", "tests/images/vllm/Containerfile"):
        assert linted in proc.stdout, f"{linted} is not linted"


def test_hadolint_reports_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    proc = subprocess.run(["bash", str(ROOT / "hack/lint-dockerfiles.sh"), str(bad)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "DL3007" in proc.stdout and "DL3013" in proc.stdout


# --- the Dockerfiles' published defaults ----------------------------------

def dockerfile_args(path) -> dict[str, str]:
    """The global ARG defaults (before the first FROM) of a Dockerfile."""
    text = path.read_text().split("\nFROM ", 1)[0]
    return dict(re.findall(r'^ARG (\w+)="?([^"\n]*)"?$', text, re.M))


def test_the_published_trainer_builds_on_cuda_and_the_heavy_pins_match_the_constraints():
    """`make images` builds the CPU flavour by build arguments; the defaults,
    what a plain `docker build` publishes for GPU clusters, stay the pinned
    CUDA images. The heavy layers' own pins are hack/constraints.txt's."""
    args = dockerfile_args(ROOT / "Dockerfile.trainer")
    assert re.fullmatch(r"nvidia/cuda:[\d.]+-cudnn-devel-ubuntu[\d.]+", args["BUILD_IMAGE"]), args["BUILD_IMAGE"]
    assert args["RUNTIME_IMAGE"] == args["BUILD_IMAGE"].replace("-devel-", "-runtime-")
    pins = constraints()
    for arg, dist in (("TORCH_VERSION", "torch"), ("LLAMA_CPP_PYTHON_VERSION", "llama-cpp-python"),
                      ("DEEPSPEED_VERSION", "deepspeed")):
        assert args[arg] == exact_pin(pins[dist]), f"Dockerfile.trainer {arg}={args[arg]}, hack/constraints.txt {pins[dist]}"
    operator = dockerfile_args(ROOT / "Dockerfile.operator")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", operator["RUNTIME_IMAGE"]), operator["RUNTIME_IMAGE"]


# --- configuration --------------------------------------------------------

@pytest.mark.parametrize("name", ENTRYPOINTS)
def test_runs_as_a_numeric_non_root_user_with_its_entrypoint_and_labels(name):
    image = ref(name)
    config = built_images.inspect(image)["Config"]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", config["User"]), f"USER must be numeric and non-root: {config['User']!r}"
    assert config["Entrypoint"] == ENTRYPOINTS[name]
    # The tag names the content: <version>-cpu-<first 12 of the image ID>.
    version = project(PROJECTS[name])["version"]
    image_id = built_images.inspect(image)["Id"]
    assert image.rsplit(":", 1)[1] == f"{version}-cpu-{image_id[:12]}"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == f"kubetune-{name}"
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.revision"] not in ("", "unknown")
    for key in ("description", "source", "licenses"):
        assert labels[f"org.opencontainers.image.{key}"], key
    # Without a securityContext the container is that user, not root.
    proc = built_images.podman("run", "--rm", "--network", "none", "--entrypoint", "id", image, "-u")
    assert proc.stdout.strip() == config["User"].split(":")[0]


def test_the_vllm_test_image_loads_vllms_compiled_cpu_ops():
    # vllm._C links libnuma: without it vLLM's engine fails at start-up, and a
    # serving test on the node would only see a server that never gets Ready.
    proc = built_images.podman("run", "--rm", "--network", "none", "--entrypoint", "python3", ref("vllm"),
                               "-c", "import torch, vllm._C", check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_chart_runs_the_operator_image_as_it_is_built():
    pod, container = operator_pod()
    config = built_images.inspect(ref("operator"))["Config"]
    assert container["image"] == ref("operator")
    assert container["command"] == config["Entrypoint"]
    user, group = config["User"].split(":")
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(user), int(group))


# --- contents -------------------------------------------------------------

@pytest.mark.parametrize("name", ENTRYPOINTS)
def test_installs_the_pinned_version_of_everything_its_pyprojects_ask_for(name):
    """Every requirement of the package (and the contract, and the extras the
    image installs) is in the image at the exact version hack/constraints.txt
    pins; our own packages at their pyproject versions; nothing from the other
    image's stack; flash-attn only when asked for."""
    dists = installed(ref(name))
    pins = constraints()
    wanted = []
    for part in (name, "contract"):
        meta = project(PROJECTS[part])
        assert dists.get(canonicalize_name(meta["name"])) == meta["version"], meta["name"]
        wanted += [Requirement(r) for r in meta["dependencies"]]
        for extra in EXTRAS[name] if part == name else ():
            wanted += [Requirement(r) for r in meta["optional-dependencies"][extra]]
    for req in wanted:
        dist = canonicalize_name(req.name)
        if dist == "kubetune-contract":
            continue
        assert dist in dists, f"{req} is not installed in the {name} image"
        assert req.specifier.contains(dists[dist], prereleases=True), f"{dist} {dists[dist]} does not satisfy {req}"
        assert dist in pins, f"{dist} ({name} image) is not pinned in hack/constraints.txt"
    for dist, req in pins.items():
        if dist in dists and exact_pin(req):
            assert dists[dist] == exact_pin(req), f"{name} image: {dist} {dists[dist]}, hack/constraints.txt {req}"
    other = {"operator": ("torch", "transformers", "deepspeed", "kubetune-trainer"),
             "trainer": ("kopf", "kubernetes", "kubetune-operator")}[name]
    assert not set(other) & set(dists), f"{name} image has {set(other) & set(dists)}"
    assert "flash-attn" not in dists


def test_trainer_image_works_read_only_as_the_builders_run_it():
    """A training pod as the operator builds it (uid 1000, read-only root, all
    capabilities dropped, /tmp an emptyDir): the training stack imports, the
    trainer's config module imports and kopf does not; every cache directory
    the image points libraries at is writable and lies on the pod's scratch
    volume; the root is not; DeepSpeed's CPU Adam is precompiled (no compiler
    in the image); llama.cpp's quantizer and converter are where the GGUF
    exporter looks."""
    from kubetune_operator.builders.pod import RUN_AS_USER
    from kubetune_trainer.exporters.gguf import DEFAULT_LLAMA_CPP, LLAMA_CPP_ENV

    pod, container = trainer_pod()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    result = probe(ref("trainer"), pod, container,
                   imports=("kubetune_trainer.run", "torch", "transformers", "peft", "trl", "accelerate", "datasets",
                            "bitsandbytes", "deepspeed", "llama_cpp", "matplotlib.pyplot", "kopf", "kubetune_operator"),
                   writable=("/", "/opt/kubetune"),
                   checks={"cpu_adam": "importlib.import_module('deepspeed.ops.op_builder').CPUAdamBuilder().load().__name__",
                           "shm_comm": "importlib.import_module('deepspeed.ops.op_builder').ShareMemCommBuilder().load().__name__",
                           "quantize": "hasattr(importlib.import_module('llama_cpp'), 'llama_model_quantize')",
                           "converter": f"os.path.isfile(os.environ[{LLAMA_CPP_ENV!r}] + '/convert_hf_to_gguf.py')"
                                        f" and os.path.isdir(os.environ[{LLAMA_CPP_ENV!r}] + '/gguf-py')"})
    assert (result["uid"], result["gid"]) == (RUN_AS_USER, RUN_AS_USER)
    for module, outcome in result["imports"].items():
        if module in ("kopf", "kubetune_operator"):
            assert outcome.startswith("ERROR ModuleNotFoundError"), f"{module} imports in the trainer image"
        else:
            assert not outcome.startswith("ERROR"), f"{module}: {outcome}"
    assert result["writable"].pop("/") is not True and result["writable"].pop("/opt/kubetune") is not True
    scratch = writable_mounts(pod, container)
    assert "/tmp" in scratch
    for path, outcome in result["writable"].items():
        assert outcome is True, f"{path}: {outcome}"
        assert under(path, scratch), f"{path} is not on a volume the builders mount ({scratch})"
    assert {"HOME", "HF_HOME", "TRITON_CACHE_DIR", "TORCH_EXTENSIONS_DIR", "MPLCONFIGDIR"} <= set(result["env"])
    assert result["compilers"] == [], f"compilers in the runtime image: {result['compilers']}"
    # Imported as compiled into the wheel (an op built at load time would say "Error building extension ...").
    assert result["checks"]["cpu_adam"] == repr("deepspeed.ops.adam.cpu_adam_op"), result["checks"]["cpu_adam"]
    assert result["checks"]["shm_comm"] == repr("deepspeed.ops.comm.deepspeed_shm_comm_op"), result["checks"]["shm_comm"]  # deepspeed.comm on CPU (ZeRO)
    assert result["checks"]["quantize"] == "True"
    assert result["checks"]["converter"] == "True"
    assert built_images.inspect(ref("trainer"))["Config"]["Env"].count(f"{LLAMA_CPP_ENV}={DEFAULT_LLAMA_CPP}") == 1


def test_operator_image_works_read_only_as_the_chart_runs_it():
    """The operator's pod as the chart renders it: its handlers import (Kopf,
    the Kubernetes client), torch and the trainer do not; HOME and the temp dir
    are writable on the pod's /tmp volume, the root is not."""
    pod, container = operator_pod()
    result = probe(ref("operator"), pod, container,
                   imports=("kubetune_operator.handlers", "kopf", "kubernetes", "torch", "transformers", "kubetune_trainer"),
                   writable=("/", "/opt/kubetune"))
    assert result["uid"] == pod["securityContext"]["runAsUser"]
    for module, outcome in result["imports"].items():
        if module in ("torch", "transformers", "kubetune_trainer"):
            assert outcome.startswith("ERROR ModuleNotFoundError"), f"{module} imports in the operator image"
        else:
            assert not outcome.startswith("ERROR"), f"{module}: {outcome}"
    assert result["writable"].pop("/") is not True and result["writable"].pop("/opt/kubetune") is not True
    scratch = writable_mounts(pod, container)
    for path, outcome in result["writable"].items():
        assert outcome is True and under(path, scratch), f"{path}: {outcome} (scratch: {scratch})"
    assert result["compilers"] == []


def test_trainer_image_installs_and_imports_every_tracker():
    """tracking.backend wandb|mlflow and tracking.tensorboard: each module a
    tracker imports is declared in tracking.IMPORTS with its distribution, and
    each imports in the image as shipped."""
    import ast
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
    pod, container = trainer_pod()
    result = probe(ref("trainer"), pod, container, imports=sorted(tracking.IMPORTS))
    dists = installed(ref("trainer"))
    for module, distribution in tracking.IMPORTS.items():
        assert canonicalize_name(distribution) in dists, f"{distribution} (for {module}) is not in the trainer image"
        assert not result["imports"][module].startswith("ERROR"), f"{module}: {result['imports'][module]}"


def test_llama_cpp_is_built_as_the_tests_build_it():
    """The image compiles llama.cpp with the flags and version hack/llama-cpp.sh
    uses for the tests (neither -march=native: a native build on a CPU with AMX
    segfaults in ggml's AMX matmul, llama.cpp#20824)."""
    script = (ROOT / "hack/llama-cpp.sh").read_text()
    pin = exact_pin(constraints()["llama-cpp-python"])
    assert f"VERSION={pin}\n" in script
    assert installed(ref("trainer"))["llama-cpp-python"] == pin
    (flags,) = re.findall(r'^CMAKE_FLAGS="([^"]*)"$', script, re.M)
    assert f'ARG LLAMA_CPP_CMAKE_ARGS="{flags}"' in (ROOT / "Dockerfile.trainer").read_text()
    assert "-DGGML_NATIVE=OFF" in flags.split()


# --- loading into a containerd ---------------------------------------------

@pytest.fixture
def scratch_containerd(tmp_path):
    """A containerd of its own (Debian's, no CRI: only its image store is
    used), its socket address; stopped and its store deleted afterwards."""
    root, socket = tmp_path / "root", tmp_path / "containerd.sock"
    config = tmp_path / "config.toml"
    config.write_text(f'version = 2\nroot = "{root}"\nstate = "{tmp_path / "state"}"\n'
                      f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                      f'[grpc]\n  address = "{socket}"\n[ttrpc]\n  address = "{socket}.ttrpc"\n')
    log = tmp_path / "containerd.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["containerd", "--config", str(config), "--log-level", "warn"],
                                stdout=subprocess.DEVNULL, stderr=out)
    try:
        wait_for(lambda: subprocess.run(["ctr", "--address", str(socket), "version"], capture_output=True).returncode == 0,
                 timeout=30, what="the scratch containerd", describe=lambda: log.read_text()[-2000:])
        yield str(socket)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        # (The unpacked image is hundreds of MB: not left to pytest's tmp retention.)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_load_puts_a_built_image_into_containerd_under_its_reference_once(scratch_containerd):
    """hack/images/load.sh: the image arrives in the k8s.io namespace under its
    own reference (what pods name), the call exits 0 after a real load (it
    used to exit with the stopped loopback registry's status), and a second
    call finds the image and moves nothing; an older build of our images
    (a tag no checkout's refs file names) leaves the containerd, other
    images stay."""
    def load():
        return subprocess.run(["bash", str(built_images.LOAD), "--address", scratch_containerd, image],
                              capture_output=True, text=True, timeout=900)

    def ctr(*args):
        return subprocess.run(["ctr", "--address", scratch_containerd, "--namespace", "k8s.io", "images", *args],
                              capture_output=True, text=True, check=True).stdout.split()

    image = ref("operator")
    first = load()
    assert first.returncode == 0, first.stderr[-4000:]
    assert f"loaded {image} in" in first.stderr
    assert ctr("ls", "--quiet") == [image]  # the staging reference on the loopback registry is gone
    older, other = "ghcr.io/kubetune/operator:0.0.0-cpu-000000000000", "localhost/not-ours:1"
    ctr("tag", image, older, other)
    second = load()
    assert second.returncode == 0, second.stderr[-4000:]
    assert "has all 1 images" in second.stderr and "loaded" not in second.stderr
    assert f"removed {older}" in second.stderr
    assert sorted(ctr("ls", "--quiet")) == sorted([image, other])


def test_load_keeps_only_what_a_node_runs_from(scratch_containerd):
    """A node runs containers from the unpacked snapshots: load.sh leaves no
    compressed layer in the content store (the trainer's are 2.8 GiB per node)
    and the image stays unpacked. A reference by image ID (the CRI adds one,
    sha256:<config>, beside each name) goes with the last name of its image,
    else the older build's snapshots stay on the node for good; one that shares
    its image with a name stays."""
    def ctr(*args):
        return subprocess.run(["ctr", "--address", scratch_containerd, "--namespace", "k8s.io", *args],
                              capture_output=True, text=True, check=True).stdout

    def load(*images):
        proc = subprocess.run(["bash", str(built_images.LOAD), "--address", scratch_containerd, *images],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:]

    def manifests():
        return {row.split()[0]: row.split()[2] for row in ctr("images", "ls").splitlines()[1:]}

    image = ref("operator")
    # Another build of it: one more layer, so its own manifest and config.
    older = "ghcr.io/kubetune/operator:0.0.0-cpu-111111111111"
    built_images.podman("create", "--name", "kt-load-test", image, "true")
    try:
        built_images.podman("commit", "--quiet", "kt-load-test", older)
    finally:
        built_images.podman("rm", "kt-load-test")
    try:
        load(older, image)
        stored = {row.split()[0] for row in ctr("content", "ls").splitlines()[1:]}
        for name in (image, older):
            manifest = json.loads(ctr("content", "get", manifests()[name]))
            assert not {layer["digest"] for layer in manifest["layers"]} & stored, name
            assert manifest["config"]["digest"] in stored
        assert all(line.split()[-1] == "true" for line in ctr("images", "check").splitlines()[1:])
        ids = {name: "sha256:" + json.loads(ctr("content", "get", manifests()[name]))["config"]["digest"][7:]
               for name in (image, older)}
        for name, image_id in ids.items():
            ctr("images", "tag", name, image_id)
        load(image)  # the older build is no checkout's: its name goes, then its ID
        assert sorted(manifests()) == sorted([image, ids[image]])
    finally:
        built_images.podman("rmi", "--ignore", older)
