"""The images the test node itself needs, made here (no registry is reachable)
and imported into the node's containerd:

* the pause image (every pod's sandbox): Kubernetes' own ``pause.c`` from the
  cached ``k8s.io/kubernetes`` module, compiled static, ``FROM scratch``;
* CoreDNS: the ``coredns`` binary ``hack/cluster-tools/build.sh`` built from its
  Go module, ``FROM scratch``, non-root;
* a toolbox for the node's own tests (a shell, ``id``, ``wget``, ``nslookup``,
  ``httpd``): Debian's static busybox, ``FROM scratch``, loaded by the tests
  that use it.

Both archives are cached under ``<cache>/node/images`` (keyed by version) and
imported once per containerd root (a slot keeps its root across clusters).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from . import oci
from .nodenet import SLOT_DIR, NodeNetwork

REPO = Path(__file__).resolve().parents[2]
IMAGES_DIR = SLOT_DIR / "images"


def _versions() -> dict[str, str]:
    out = {}
    for line in (REPO / "hack/cluster-tools/versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


VERSIONS = _versions()
PAUSE_IMAGE = f"localhost/kubetune/pause:{VERSIONS['KUBE_VERSION']}"
COREDNS_IMAGE = f"localhost/kubetune/coredns:{VERSIONS['COREDNS_VERSION']}"
TOOLBOX_IMAGE = "localhost/kubetune/toolbox:busybox"
BUSYBOX = Path("/bin/busybox")
TOOLBOX_APPLETS = ("sh", "id", "wget", "nslookup", "cat", "sleep", "httpd", "echo", "touch", "nc",
                   "hostname", "kill", "ls", "mkdir", "env", "printf", "test", "true", "false", "grep")


def _gopath() -> Path:
    return Path(os.environ.get("GOPATH") or subprocess.run(
        ["go", "env", "GOPATH"], capture_output=True, text=True, check=True).stdout.strip())


def pause_binary() -> Path:
    """``pause`` built from the Kubernetes module's own source (static C)."""
    version = VERSIONS["KUBE_VERSION"]
    out = IMAGES_DIR / f"pause-{version}"
    if out.exists():
        return out
    src = _gopath() / f"pkg/mod/k8s.io/kubernetes@{version}/build/pause/linux/pause.c"
    if not src.exists():
        subprocess.run(["go", "mod", "download", f"k8s.io/kubernetes@{version}"], check=True,
                       env={**os.environ, "GOFLAGS": "-mod=mod"}, capture_output=True)
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    subprocess.run(["gcc", "-Os", "-static", "-Wall", f"-DVERSION={version}", "-o", str(tmp), str(src)],
                   check=True, capture_output=True)
    subprocess.run(["strip", str(tmp)], check=True)
    tmp.replace(out)
    return out


def pause_archive() -> tuple[Path, str]:
    """(archive, manifest digest) of the pause image."""
    spec = oci.ImageSpec(ref=PAUSE_IMAGE, files=[oci.ImageFile("pause", pause_binary())],
                         entrypoint=["/pause"], user="65535:65535")
    return _archive(spec, f"pause-{VERSIONS['KUBE_VERSION']}")


def coredns_archive(tools_bin: Path) -> tuple[Path, str]:
    spec = oci.ImageSpec(ref=COREDNS_IMAGE, files=[oci.ImageFile("coredns", Path(tools_bin) / "coredns")],
                         entrypoint=["/coredns"], ports=["1053/udp", "1053/tcp"])
    return _archive(spec, f"coredns-{VERSIONS['COREDNS_VERSION']}")


def toolbox_archive() -> tuple[Path, str]:
    if not BUSYBOX.exists():
        _apt_install("busybox-static")
    version = subprocess.run([str(BUSYBOX)], capture_output=True, text=True).stdout.split()[1]
    files = [oci.ImageFile("bin/busybox", BUSYBOX)]
    files += [oci.ImageFile(f"bin/{applet}", link="busybox") for applet in TOOLBOX_APPLETS]
    spec = oci.ImageSpec(ref=TOOLBOX_IMAGE, files=files, entrypoint=None, user="65532:65532",
                         env=["PATH=/bin"])
    return _archive(spec, f"toolbox-busybox-{version}")


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(cmd, env=env, capture_output=True, check=True)


def _archive(spec: oci.ImageSpec, name: str) -> tuple[Path, str]:
    path = IMAGES_DIR / f"{name}.tar"
    digest_file = path.with_suffix(".digest")
    if path.exists() and digest_file.exists():
        return path, digest_file.read_text().strip()
    digest = oci.write_archive(spec, path)
    digest_file.write_text(digest)
    return path, digest


# --- containerd ----------------------------------------------------------------

def ctr(net: NodeNetwork, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """``ctr`` against the node's containerd, in the ``k8s.io`` namespace (the CRI's)."""
    proc = subprocess.run(["ctr", "--address", net.containerd_socket, "--namespace", "k8s.io", *args],
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def images(net: NodeNetwork) -> dict[str, str]:
    """ref -> manifest digest of every image in the node's containerd."""
    out = {}
    for line in ctr(net, "images", "ls").stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            out[parts[0]] = parts[2]
    return out


def import_archive(net: NodeNetwork, archive: Path, ref: str, digest: str) -> bool:
    """Import ``archive`` unless ``ref`` is already there with ``digest``;
    True if it imported."""
    if images(net).get(ref) == digest:
        return False
    ctr(net, "images", "import", str(archive))
    return True
