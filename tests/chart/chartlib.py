"""Shared helpers for the chart tests: locating the tools, running helm,
rendering the chart into Kubernetes objects."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import yaml

from tests.harness import procs

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubetune"
# helm built with `go install` (no release ldflags) assumes Kubernetes v1.20,
# which the chart's kubeVersion rejects: render for the version the harness runs.
KUBE_VERSION = "1.36.3"
MONITORING_API = "monitoring.coreos.com/v1"


@functools.cache
def tools_bin() -> Path:
    """The directory with helm, promtool, prometheus, kubectl (hack/test.sh exports
    it; otherwise ask the idempotent build script, which prints it)."""
    return procs.setup_output("KUBETUNE_TOOLS_BIN", ROOT / "hack/cluster-tools/build.sh")


def tool(name: str) -> str:
    path = tools_bin() / name
    assert path.exists(), f"{name} missing from {tools_bin()}: run hack/cluster-tools/build.sh"
    return str(path)


def run(*args: str, check: bool = True, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def value_args(values: dict[str, str] | None = None, string_values: dict[str, str] | None = None) -> list[str]:
    args: list[str] = []
    for key, val in (values or {}).items():
        args += ["--set", f"{key}={val}"]
    for key, val in (string_values or {}).items():
        args += ["--set-string", f"{key}={val}"]
    return args


def template(values: dict[str, str] | None = None, *, monitoring_api: bool = False, namespace: str = "kubetune-system",
             check: bool = True, extra: list[str] | None = None, string_values: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess:
    args = [tool("helm"), "template", "kt", str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION,
            *value_args(values, string_values), *(extra or [])]
    if monitoring_api:
        args += ["--api-versions", MONITORING_API]
    return run(*args, check=check)


def render(values: dict[str, str] | None = None, **kw) -> list[dict]:
    """The chart's objects (templates only; CRDs come from crds/) for these values."""
    docs = [d for d in yaml.safe_load_all(template(values, **kw).stdout) if d]
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]
