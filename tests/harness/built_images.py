"""kubetune's images as built here (``hack/images/build.sh``: buildah, the CPU
flavour; docs/images.md) and what tests do with them: find their references,
read their configuration, run a command in one the way a pod runs it, load them
into a containerd.

References come from ``KUBETUNE_<NAME>_IMAGE`` (``hack/test.sh`` builds the
images while the other tools install and exports them); otherwise the build
script is run, which answers in seconds when nothing changed.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAMES = ("operator", "trainer", "vllm")
BUILD = REPO / "hack/images/build.sh"
PODMAN = REPO / "hack/images/podman.sh"
LOAD = REPO / "hack/images/load.sh"


def env_name(name: str) -> str:
    return f"KUBETUNE_{name.upper()}_IMAGE"


def parse_refs(text: str) -> dict[str, str]:
    """``KUBETUNE_<NAME>_IMAGE=<ref>`` lines -> {name: ref}."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.startswith("KUBETUNE_") and key.endswith("_IMAGE"):
            out[key.removeprefix("KUBETUNE_").removesuffix("_IMAGE").lower()] = value
    return out


def build(*names: str, timeout: float = 3600) -> dict[str, str]:
    """Build (or find cached) the named images; {name: ref}."""
    proc = subprocess.run(["bash", str(BUILD), *names], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"hack/images/build.sh {' '.join(names)} failed:\n{proc.stderr[-4000:]}")
    return parse_refs(proc.stdout)


@functools.cache
def ref(name: str) -> str:
    """The reference of one built image (exported by hack/test.sh, or built now)."""
    assert name in NAMES, name
    return os.environ.get(env_name(name)) or build(name)[name]


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", str(PODMAN), *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def inspect(image: str) -> dict:
    """The image's OCI configuration as podman reports it (Config, RootFS, Size, Labels...)."""
    return json.loads(podman("image", "inspect", image).stdout)[0]


def pod_run_args(pod_spec: dict, container: dict) -> list[str]:
    """podman flags that give a container what the kubelet would from this pod
    spec: the user and group, a read-only root, dropped capabilities, no
    privilege escalation, the plain environment values, and each emptyDir as a
    writable scratch mount at its path (as the kubelet makes them: mode 0777).
    Other volumes (ConfigMaps, claims) are left out: image tests need none."""
    pod_sc, sc = pod_spec.get("securityContext", {}), container.get("securityContext", {})
    user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    group = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    args = ["--network", "none"]
    if user is not None:
        args += ["--user", f"{user}:{group if group is not None else user}"]
    if pod_sc.get("fsGroup") is not None:
        args += ["--group-add", str(pod_sc["fsGroup"])]
    if sc.get("readOnlyRootFilesystem"):
        # podman would otherwise mount its own tmpfs on /tmp, /var/tmp, /run.
        args += ["--read-only", "--read-only-tmpfs=false"]
    for cap in sc.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap.lower()]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    empty_dirs = {v["name"] for v in pod_spec.get("volumes", []) if "emptyDir" in v}
    for mount in container.get("volumeMounts", []):
        if mount["name"] in empty_dirs:
            args += ["--tmpfs", f"{mount['mountPath']}:rw,mode=1777"]
    for var in container.get("env", []):
        if "value" in var:
            args += ["--env", f"{var['name']}={var['value']}"]
    return args


def run_as_pod(image: str, pod_spec: dict, container: dict, argv: list[str], *, entrypoint: str | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``argv`` in ``image`` with the restrictions ``pod_spec`` puts on
    ``container`` (pod_run_args); ``entrypoint`` replaces the image's, like a
    container's ``command``. Returns the finished process (not checked)."""
    args = ["run", "--rm", *pod_run_args(pod_spec, container)]
    if entrypoint is not None:
        args += ["--entrypoint", entrypoint]
    return podman(*args, image, *argv, timeout=timeout, check=False)


def load(address: str, *names: str, timeout: float = 1800) -> dict[str, str]:
    """Make the named images (default: all of them) available to the containerd
    at ``address`` (namespace k8s.io) under their references; {name: ref}."""
    refs = {name: ref(name) for name in (names or NAMES)}
    proc = subprocess.run(["bash", str(LOAD), "--address", address, *refs.values()],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"hack/images/load.sh failed:\n{proc.stderr[-4000:]}")
    return refs
