"""Run the kubetune operator as a real subprocess against the local control plane,
so tests can kill, restart and duplicate it exactly as a cluster would.

Fixtures (registered for every test by tests/conftest.py):
  kubetune_crds    session: the FineTuneJob and Kopf peering CRDs applied, Established
  operator_identity session: the chart's ServiceAccount and Role, the kubeconfig every operator runs with
  operator_factory function: start(namespace, **settings) -> OperatorProcess; all stopped after
  s3_env           function: the test bucket as the operator's default bucket, plus an S3 Secret
  tiny_assets      session: a tiny random-init model and a completion dataset on disk
  bucket_with_assets function: the test bucket holding them (models/tiny-llama/, data/train.jsonl)
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml

from . import procs
from .kubeapi import ApiError
from .waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CRD_FILES = [REPO / "crds" / "finetunejob.yaml", REPO / "crds" / "finetunesweep.yaml", REPO / "crds" / "kubetunepolicy.yaml",
             REPO / "charts" / "kubetune" / "crds" / "kopf-peering.yaml"]
PEERING_NAME = "kubetune"
S3_SECRET = "kubetune-s3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess:
    """`python -m kopf run -m kubetune_operator.handlers --namespace=NS --peering=kubetune`,
    or `python -m kopf ARGS...` with the given `kopf_args` (whose `--liveness`
    is replaced by a free loopback port)."""

    def __init__(self, namespace: str, env: dict[str, str], log_path: Path, kopf_args: list[str] | None = None):
        self.namespace = namespace
        self.env = env
        self.log_path = log_path
        self.metrics_port = int(env["KUBETUNE_METRICS_PORT"])
        self.liveness_port = free_port()
        self.kopf_args = kopf_args or ["run", "-m", "kubetune_operator.handlers", f"--namespace={namespace}",
                                       f"--peering={PEERING_NAME}", "--verbose"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> "OperatorProcess":
        argv = [sys.executable, "-m", "kopf", *(a for a in self.kopf_args if not a.startswith("--liveness")),
                f"--liveness=http://127.0.0.1:{self.liveness_port}/healthz"]
        # Like the cluster's components: it dies with pytest, even a SIGKILLed one
        # (it would otherwise retry against a dead API server, a stray process in the next run).
        self.proc = procs.spawn(argv, self.log_path, env=self.env, cwd=str(REPO))
        wait_for(self._healthy, timeout=60, what="operator liveness endpoint", describe=self.log_tail)
        return self

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", self.liveness_port), timeout=0.5):
                return True
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as when a node dies."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture(scope="session")
def kubetune_crds(kube) -> None:
    for path in CRD_FILES:
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    for name in ("finetunejobs.kubetune.io", "finetunesweeps.kubetune.io", "kubetunepolicies.kubetune.io", "kopfpeerings.kopf.dev",
                 "clusterkopfpeerings.kopf.dev"):
        kube.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


class OperatorIdentity:
    """Who the harness's operators are: the chart's ServiceAccount, holding in
    each test namespace exactly the Role the chart grants a watched namespace
    (rendered by helm in namespaced scope), and a token the API server issued
    to it. A verb the chart does not grant is a 403 in a test, not a surprise
    on a cluster."""

    NAMESPACE, ACCOUNT, ROLE = "kubetune-harness", "kubetune", "kubetune-harness-operator"

    def __init__(self, kube, kubeconfig: Path):
        from tests.chart.chartlib import template

        self.kube = kube
        rendered = template({"scope": "namespaced", "watchNamespaces[0]": "harness", "peering.enabled": "true",
                             "peering.name": PEERING_NAME}, extra=["--show-only", "templates/rbac-namespaced.yaml"]).stdout
        (role,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Role"]
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.NAMESPACE}},
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": self.ACCOUNT, "namespace": self.NAMESPACE}},
            # The Role's rules as a ClusterRole only so that one object serves every test
            # namespace: it is bound by a RoleBinding in each, never cluster-wide.
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": self.ROLE},
             "rules": role["rules"]}]))
        token = kube.kubectl("create", "token", self.ACCOUNT, "-n", self.NAMESPACE, "--duration=12h").stdout.strip()
        admin = json.loads(Path(kube.kubeconfig).read_text())
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "operator",
            "clusters": [{"name": "kubetune", "cluster": admin["clusters"][0]["cluster"]}],
            "users": [{"name": "operator", "user": {"token": token}}],
            "contexts": [{"name": "operator", "context": {"cluster": "kubetune", "user": "operator"}}]}))
        self.kubeconfig = str(kubeconfig)

    def grant(self, namespace: str) -> None:
        """The chart's RoleBinding in `namespace` (a watched namespace)."""
        try:
            self.kube.raw.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings", {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "kubetune-operator"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": self.ROLE},
                "subjects": [{"kind": "ServiceAccount", "name": self.ACCOUNT, "namespace": self.NAMESPACE}]})
        except ApiError as exc:
            if exc.status != 409:
                raise


@pytest.fixture(scope="session")
def operator_identity(kube, kubetune_crds, tmp_path_factory) -> OperatorIdentity:
    return OperatorIdentity(kube, tmp_path_factory.mktemp("operator-identity") / "operator.kubeconfig")


# The label the admin policy's default secretLabel asks of a Secret a job may use.
USABLE = {"kubetune.io/usable": "true"}


def harness_policy(bucket: str, endpoint: str, host_ip: str) -> dict:
    """The admin policy the harness's operators run with: the chart's default for
    this bucket and endpoint (a prefix per namespace, labelled Secrets), plus what
    the test admin shares read-only (the tiny model and data every test uploads,
    the examples' demo bucket) and the MLflow servers as tracking hosts: the one
    pods reach on the host end of the node's link (``host_ip``), the loopback one
    of local trainers."""
    return {
        "storageRoots": [f"s3://{bucket}/{{namespace}}/"],
        "readOnlyRoots": [f"s3://{bucket}/models/", f"s3://{bucket}/data/", "s3://kubetune-demo/"],
        "allowedS3Endpoints": [endpoint],
        "allowedTrackingHosts": [host_ip, "127.0.0.1"],
    }


def usable_secret(kube, namespace: str, name: str, data: dict[str, str]) -> dict:
    """A Secret labelled usable by jobs, as the namespace's admin would create it."""
    return kube.raw.request("POST", f"/api/v1/namespaces/{namespace}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": dict(USABLE)}, "stringData": data})


@pytest.fixture
def s3_env(kube, namespace, s3_bucket, control_plane) -> dict[str, str]:
    """Operator settings pointing at the test's bucket, and the default S3 Secret in the namespace."""
    usable_secret(kube, namespace, S3_SECRET, {"AWS_ACCESS_KEY_ID": s3_bucket.access_key,
                                               "AWS_SECRET_ACCESS_KEY": s3_bucket.secret_key})
    return {
        "KUBETUNE_DEFAULT_BUCKET_URI": f"s3://{s3_bucket.name}",
        "KUBETUNE_DEFAULT_S3_SECRET": S3_SECRET,
        "KUBETUNE_DEFAULT_S3_ENDPOINT": s3_bucket.endpoint,
        "KUBETUNE_DEFAULT_S3_REGION": "us-east-1",
        "KUBETUNE_POLICY": json.dumps(harness_policy(s3_bucket.name, s3_bucket.endpoint, control_plane.network.host_ip)),
    }


@pytest.fixture
def operator_factory(kube, kubetune_crds, control_plane, namespace, tmp_path, operator_identity, trainer_image
                     ) -> Iterator[Callable[..., OperatorProcess]]:
    """start(**settings) runs an operator watching the test namespace (a
    process here, as the chart's ServiceAccount with the chart's Role there);
    its trainer pods run the trainer image on the real node. Every one started
    is stopped after the test, and its log is printed if the test failed."""
    started: list[OperatorProcess] = []
    operator_identity.grant(namespace)
    kube.raw.request("POST", f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings", {
        "apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING_NAME},
    })

    def start(**settings: str) -> OperatorProcess:
        env = dict(os.environ)
        env.update(control_plane.env())
        env.update({
            "KUBECONFIG": operator_identity.kubeconfig,
            "KUBETUNE_WATCH_NAMESPACES": namespace,  # as the chart sets it in namespaced scope
            "KUBETUNE_TRAINER_IMAGE": trainer_image,
            "KUBETUNE_ALLOWED_IMAGE_PREFIXES": "ghcr.io/kubetune/",
            "KUBETUNE_METRICS_PORT": str(free_port()),
            "KUBETUNE_METRICS_SCRAPE_INTERVAL": "1",
            "PYTHONUNBUFFERED": "1",
        })
        env.update({k: str(v) for k, v in settings.items()})
        op = OperatorProcess(namespace, env, tmp_path / f"operator-{len(started)}.log")
        started.append(op)
        return op.start()

    yield start
    for op in started:
        op.stop()
    for i, op in enumerate(started):
        print(f"----- operator {i} log (tail) -----\n{op.log_tail(80)}")


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory) -> Path:
    """The tiny model and dataset, made once per session."""
    from kubetune_trainer.testing.tiny_model import make_tiny_dataset, make_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    make_tiny_model(root / "model")
    make_tiny_dataset(root / "train.jsonl", fmt="completion", n=192)
    return root


@pytest.fixture
def bucket_with_assets(s3_bucket, tiny_assets):
    for path in (tiny_assets / "model").rglob("*"):
        if path.is_file():
            s3_bucket.client.upload_file(str(path), s3_bucket.name, f"models/tiny-llama/{path.relative_to(tiny_assets / 'model')}")
    s3_bucket.client.upload_file(str(tiny_assets / "train.jsonl"), s3_bucket.name, "data/train.jsonl")
    return s3_bucket
