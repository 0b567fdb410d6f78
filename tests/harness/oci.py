"""Single-layer OCI image archives made from a few files, for the test node's
own infrastructure images (CoreDNS, and the pause image until ``make images``
provides one): a static binary ``FROM scratch``. No registry is reachable and
no image tool is needed for a binary and a config; ``ctr images import`` reads
the archive (OCI image layout, named by the ``io.containerd.image.name``
annotation).

The product's images (trainer, operator, vLLM) are built by ``make images``
from their Dockerfiles, not here.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ImageFile:
    """A file of the image: its path inside, where it comes from, its mode;
    or, with ``link``, a symbolic link to that target."""

    path: str
    source: Path | None = None
    mode: int = 0o755
    link: str | None = None


@dataclass
class ImageSpec:
    ref: str                      # e.g. localhost/kubetune/coredns:v1.15.0
    files: list[ImageFile]
    entrypoint: list[str] | None
    user: str = "65532:65532"
    env: list[str] = field(default_factory=list)
    ports: list[str] = field(default_factory=list)  # "53/udp"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(files: list[ImageFile]) -> bytes:
    """An uncompressed, reproducible tar (fixed times and owners)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for f in sorted(files, key=lambda f: f.path):
            parts = f.path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo(f.path.strip("/"))
            info.mode = f.mode
            if f.link:
                info.type, info.linkname = tarfile.SYMTYPE, f.link
                tar.addfile(info)
                continue
            data = Path(f.source).read_bytes()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_archive(spec: ImageSpec, out: Path) -> str:
    """Write ``spec`` as an OCI image-layout tar at ``out``; returns the
    manifest digest (what containerd reports as the image's digest)."""
    layer = _layer(spec.files)
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": spec.entrypoint,
            "User": spec.user,
            "Env": spec.env or ["PATH=/"],
            "ExposedPorts": {p: {} for p in spec.ports},
        },
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        "history": [{"created_by": "tests/harness/oci.py"}],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _digest(layer), "size": len(layer)}],
    }, sort_keys=True).encode()
    tag = spec.ref.rsplit(":", 1)[1] if ":" in spec.ref.rsplit("/", 1)[-1] else "latest"
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": _digest(manifest), "size": len(manifest),
            "annotations": {"io.containerd.image.name": spec.ref,
                            "org.opencontainers.image.ref.name": tag},
        }],
    }).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for blob in (layer, config, manifest):
            add("blobs/sha256/" + _digest(blob).split(":", 1)[1], blob)
    tmp.replace(out)
    return _digest(manifest)
