"""pytest fixtures for tests against the local control plane (loaded from
tests/conftest.py through ``pytest_plugins``).

Session scope:
  control_plane  -> cluster.Cluster   the running control plane (reused from
                    ``make cluster-up`` when one is alive in $KUBETUNE_RUN_DIR
                    and runs this same harness code, else started for this session in a temp dir and stopped at
                    the end; KUBETUNE_REUSE_CLUSTER=0 forces a private one)
  kube           -> KubeClients      typed kubernetes clients + raw client + kubectl
  real_node      -> RealNode         the node (kubelet + containerd): its name,
                    network, cluster DNS, image loading, container logs (kept
                    after their pods are gone)
  trainer_image, operator_image, vllm_image -> str  kubetune's images (make
                    images), loaded on the node
  toolbox_image  -> str              a busybox image for the node's own tests
  tools_bin      -> pathlib.Path     kube-apiserver, kubectl, helm, promtool, ...
Function scope:
  namespace      -> str              a fresh namespace (default SA ready), deleted after
  s3_bucket      -> s3.S3Bucket      a fresh MinIO bucket, emptied and deleted after
  cluster_env    -> dict             os.environ patched with KUBECONFIG/AWS_* for the test
  background_process -> factory(argv, name=, env=None, cwd=None) -> BackgroundProcess
                    (e.g. the operator, run out-of-cluster against this control
                    plane); stopped (SIGTERM, SIGKILL after 10 s) after the test
  prometheus     -> factory(targets: list[str], scrape_interval="1s") -> prometheus.Prometheus,
                    every one stopped after the test
"""
from __future__ import annotations

import os
import re
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from . import cluster as cluster_mod
from . import node_images, procs
from .nodenet import NodeNetwork
from .kubeapi import ApiError, KubeApi
from .node_logs import LogKeeper
from .prometheus import Prometheus
from .s3 import S3Bucket, create_bucket, delete_bucket, s3_client
from .waiting import wait_for


@dataclass
class KubeClients:
    """Clients for one control plane. Typed APIs from the ``kubernetes``
    package share one ApiClient; ``raw`` speaks JSON dicts (tests.harness.kubeapi)."""

    kubeconfig: str
    api_client: Any
    core: Any            # CoreV1Api
    apps: Any            # AppsV1Api
    batch: Any           # BatchV1Api
    rbac: Any            # RbacAuthorizationV1Api
    coordination: Any    # CoordinationV1Api
    apiextensions: Any   # ApiextensionsV1Api
    custom: Any          # CustomObjectsApi
    raw: KubeApi
    kubectl_path: str

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        """Run kubectl against this control plane; stdout/stderr as text.
        With ``check`` a non-zero exit raises AssertionError with stderr."""
        proc = subprocess.run([self.kubectl_path, "--kubeconfig", self.kubeconfig, *args],
                              input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc


def make_kube_clients(c: cluster_mod.Cluster) -> KubeClients:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=c.kubeconfig)
    return KubeClients(
        kubeconfig=c.kubeconfig, api_client=api, core=client.CoreV1Api(api),
        apps=client.AppsV1Api(api), batch=client.BatchV1Api(api),
        rbac=client.RbacAuthorizationV1Api(api), coordination=client.CoordinationV1Api(api),
        apiextensions=client.ApiextensionsV1Api(api), custom=client.CustomObjectsApi(api),
        raw=KubeApi(c.kubeconfig), kubectl_path=str(Path(c.tools_bin) / "kubectl"),
    )


@dataclass
class RealNode:
    """The cluster's real node: kubelet, containerd, kube-proxy, CoreDNS."""

    name: str
    network: NodeNetwork
    log_keeper: LogKeeper | None = None

    @property
    def dns_ip(self) -> str:
        return self.network.dns_ip

    def images(self) -> dict[str, str]:
        """ref -> digest of the images containerd holds."""
        return node_images.images(self.network)

    def load_image(self, archive: Path, ref: str, digest: str) -> None:
        """Import an image archive unless the node has it already."""
        node_images.import_archive(self.network, archive, ref, digest)

    def load_built(self, name: str) -> str:
        """One of kubetune's images as ``make images`` builds them (operator,
        trainer, vllm), loaded into the node's containerd; its reference."""
        from . import built_images

        return built_images.load(self.network.containerd_socket, name)[name]

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        """A container's output, every start of it, also after the pod is gone."""
        return self.log_keeper.logs(namespace, pod, container)

    def logged_pods(self, namespace: str, prefix: str = "") -> list[str]:
        """Pods of ``namespace`` that ran on the node, also those gone since."""
        return self.log_keeper.pods(namespace, prefix)


@pytest.fixture(scope="session")
def real_node(control_plane: cluster_mod.Cluster) -> Iterator[RealNode]:
    if not control_plane.real_node:
        pytest.fail("the cluster runs without its real node")
    node_dir = Path(control_plane.run_dir) / "node"
    keeper = LogKeeper(node_dir / "pod-logs", node_dir / "kept-logs").start()
    yield RealNode(control_plane.real_node, control_plane.network, keeper)
    keeper.stop()


@pytest.fixture(scope="session")
def trainer_image(real_node: RealNode) -> str:
    """The trainer image (make images), loaded on the node."""
    return real_node.load_built("trainer")


@pytest.fixture(scope="session")
def operator_image(real_node: RealNode) -> str:
    """The operator image (make images), loaded on the node."""
    return real_node.load_built("operator")


@pytest.fixture(scope="session")
def vllm_image(real_node: RealNode) -> str:
    """The test-only vLLM CPU image (make images), loaded on the node."""
    return real_node.load_built("vllm")


@pytest.fixture(scope="session")
def toolbox_image(real_node: RealNode) -> str:
    """The node tests' busybox image, loaded on the node."""
    archive, digest = node_images.toolbox_archive()
    real_node.load_image(archive, node_images.TOOLBOX_IMAGE, digest)
    return node_images.TOOLBOX_IMAGE


@pytest.fixture(scope="session")
def tools_bin() -> Path:
    """The cluster-tools bin dir (kubectl, helm, promtool, ...)."""
    return cluster_mod.tools_bin()


@pytest.fixture(scope="session")
def control_plane() -> Iterator[cluster_mod.Cluster]:
    """The local control plane, MinIO and node for this session."""
    with cluster_mod.running(reuse=os.environ.get("KUBETUNE_REUSE_CLUSTER", "1") != "0") as c:
        yield c


@pytest.fixture(scope="session")
def kube(control_plane: cluster_mod.Cluster) -> KubeClients:
    return make_kube_clients(control_plane)


@pytest.fixture
def namespace(kube: KubeClients, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test; deleted (not awaited) after it.
    Waits until its ``default`` ServiceAccount exists, as pods need it."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:5]}"
    kube.raw.request("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubetune.io/test": "true"}}})
    wait_for(lambda: kube.raw.get(f"/api/v1/namespaces/{name}/serviceaccounts")["items"],
             timeout=30, what=f"default ServiceAccount in {name}")
    yield name
    try:
        kube.raw.request("DELETE", f"/api/v1/namespaces/{name}")
    except ApiError as e:
        if e.status != 404:
            raise


@pytest.fixture
def s3_bucket(control_plane: cluster_mod.Cluster, request: pytest.FixtureRequest) -> Iterator[S3Bucket]:
    """A fresh, empty bucket on MinIO; emptied and deleted after the test."""
    client = s3_client(control_plane.s3_endpoint, control_plane.s3_access_key, control_plane.s3_secret_key)
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"kt-{stem}-{uuid.uuid4().hex[:6]}"
    create_bucket(client, name)
    yield S3Bucket(name=name, client=client, endpoint=control_plane.s3_endpoint,
                   access_key=control_plane.s3_access_key, secret_key=control_plane.s3_secret_key)
    delete_bucket(client, name)


@pytest.fixture
def cluster_env(control_plane: cluster_mod.Cluster, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """os.environ gets KUBECONFIG and AWS_* for this control plane for the
    duration of the test (e.g. for an in-process Kopf operator)."""
    env = control_plane.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


class BackgroundProcess:
    """A process started for one test, in its own process group, its output in
    ``log_path``. ``stop()`` sends SIGTERM, then SIGKILL after ``grace``."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str], cwd: str | None):
        self.argv = argv
        self.log_path = log_path
        self.proc = procs.spawn(argv, log_path, env=env, cwd=cwd, die_with_parent=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, grace: float = 10) -> int:
        """Stop it; its exit code (negative: killed by that signal)."""
        if self.proc.poll() is None:
            procs.stop_group(self.proc.pid, grace=grace)
        return self.proc.wait()


@pytest.fixture
def background_process(control_plane: cluster_mod.Cluster, tmp_path: Path):
    """Factory: ``background_process([sys.executable, "-m", "kopf", "run", ...],
    name="operator")`` starts a process with ``os.environ`` plus this control
    plane's ``KUBECONFIG``/``AWS_*`` (override with ``env``), returns a
    :class:`BackgroundProcess`; every one is stopped after the test."""
    started: list[BackgroundProcess] = []

    def start(argv: list[str], name: str = "process", env: dict[str, str] | None = None,
              cwd: str | None = None) -> BackgroundProcess:
        full_env = {**os.environ, **control_plane.env(), **(env or {})}
        proc = BackgroundProcess(list(argv), tmp_path / f"{name}-{len(started)}.log", full_env, cwd)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[..., Prometheus]]:
    """Factory: ``prometheus(["127.0.0.1:PORT"], scrape_interval="1s")`` starts a
    Prometheus scraping those targets (job ``kubetune-test``) and returns it
    started; all are stopped after the test."""
    started: list[Prometheus] = []

    def start(targets: list[str], scrape_interval: str = "1s") -> Prometheus:
        prom = Prometheus(targets, run_dir=tmp_path / f"prometheus-{len(started)}",
                          scrape_interval=scrape_interval)
        started.append(prom)
        return prom.start()

    yield start
    for prom in started:
        prom.stop(remove_data=False)
