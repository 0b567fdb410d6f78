"""A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler), MinIO and the test pod runner on loopback ports, data in one
run directory.

    python -m tests.harness.cluster up     # start, print the env lines, return
    python -m tests.harness.cluster env    # print the env lines of the running one
    python -m tests.harness.cluster down   # stop it and remove its run directory

``up`` keeps its state in ``$KUBETUNE_RUN_DIR`` (default ``~/.cache/kubetune/run``)
as ``state.json`` so that ``down``/``env`` and the pytest fixtures find it. In
Python, :func:`start` returns a :class:`Cluster`; :func:`stop` ends it.

The binaries come from ``hack/cluster-tools/build.sh`` (``$KUBETUNE_TOOLS_BIN``
if set, else the script is run, which is instant once built).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import procs
from .certs import Pki, make_pki

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RUN_DIR = Path(os.environ.get("KUBETUNE_RUN_DIR", Path.home() / ".cache/kubetune/run"))
DEFAULT_NODES = ("kt-node-0", "kt-node-1")
S3_ACCESS_KEY = "kubetune"
S3_SECRET_KEY = "kubetune-secret-key"
SERVICE_CIDR = "10.96.0.0/16"
# Component start-up budgets; a warm start takes a few seconds in total.
READY_TIMEOUT = float(os.environ.get("KUBETUNE_READY_TIMEOUT", "90"))


TEMP_PREFIX = "kubetune-cluster-"


def remove_stale_run_dirs() -> None:
    """Delete temp run dirs of sessions that died without cleaning up (SIGKILL):
    their processes died with them (PDEATHSIG); only the files stay behind."""
    for path in Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*"):
        state = Cluster.load(path)
        if state is not None and state.pids and not any(procs.pid_alive(p) for p in state.pids.values()):
            shutil.rmtree(path, ignore_errors=True)


def tools_bin() -> Path:
    """The directory with kube-apiserver & co (builds them on first use)."""
    env = os.environ.get("KUBETUNE_TOOLS_BIN")
    if env:
        return Path(env)
    out = subprocess.run(
        ["bash", str(REPO / "hack/cluster-tools/build.sh")],
        check=True, stdout=subprocess.PIPE, text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class Cluster:
    """Where a running control plane lives and how to reach it."""

    run_dir: str
    kubeconfig: str
    api_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    nodes: list[str]
    tools_bin: str
    pids: dict[str, int] = field(default_factory=dict)  # component -> pid (= pgid)
    harness_version: str = ""  # see harness_version(); a stale running cluster is not reused

    @property
    def state_file(self) -> Path:
        return Path(self.run_dir) / "state.json"

    @property
    def logs_dir(self) -> Path:
        return Path(self.run_dir) / "logs"

    @property
    def pod_logs_dir(self) -> Path:
        """Where the pod runner writes container logs (see podrunner.container_log)."""
        return Path(self.run_dir) / "pods"

    def save(self) -> None:
        self.state_file.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, run_dir: Path = DEFAULT_RUN_DIR) -> "Cluster | None":
        try:
            return cls(**json.loads((Path(run_dir) / "state.json").read_text()))
        except FileNotFoundError:
            return None

    def env(self) -> dict[str, str]:
        """Environment for clients: kubectl, boto3, the operator."""
        return {
            "KUBECONFIG": self.kubeconfig,
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "KUBETUNE_RUN_DIR": self.run_dir,
            "KUBETUNE_TOOLS_BIN": self.tools_bin,
        }

    def alive(self) -> bool:
        """All components still running and the API server answering."""
        if not self.pids or not all(procs.pid_alive(p) for p in self.pids.values()):
            return False
        try:
            return _get(self, "/readyz") == "ok"
        except Exception:
            return False


def harness_version() -> str:
    """A digest of the harness code and tool versions: a cluster started by an
    older pod runner is not reused by the fixtures (it would behave differently)."""
    digest = hashlib.sha1()
    here = Path(__file__).parent
    running_code = ("cluster.py", "podrunner.py", "images.py", "kubeapi.py", "procs.py", "certs.py")
    for path in [here / name for name in running_code] + [REPO / "hack/cluster-tools/versions.env"]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _ssl_context(pki_dir: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    ctx.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
    return ctx


def _get(cluster: Cluster, path: str) -> str:
    ctx = _ssl_context(Path(cluster.run_dir) / "pki")
    with urllib.request.urlopen(cluster.api_url + path, context=ctx, timeout=2) as r:
        return r.read().decode()


def _write_kubeconfig(path: Path, api_url: str, pki: Pki, user: str) -> None:
    # JSON is valid YAML; kubectl and the Python client both read it.
    path.write_text(json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubetune", "cluster": {
            "server": api_url, "certificate-authority": str(pki.ca_cert)}}],
        "users": [{"name": user, "user": {
            "client-certificate": str(pki.cert(user)), "client-key": str(pki.key(user))}}],
        "contexts": [{"name": "kubetune", "context": {
            "cluster": "kubetune", "user": user, "namespace": "default"}}],
        "current-context": "kubetune",
    }, indent=2))


def _kube_clients(kubeconfig: str):
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    return client.CoreV1Api(api)


def start(
    run_dir: Path | None = None,
    nodes: tuple[str, ...] = DEFAULT_NODES,
    die_with_parent: bool = True,
    start_pod_runner: bool = True,
    extra_args: dict[str, list[str]] | None = None,
) -> Cluster:
    """Start everything and wait until it is usable: API ready, nodes Ready,
    the ``default`` ServiceAccount present (controllers working), MinIO live.

    ``die_with_parent``: the components get SIGKILL when this process dies (the
    pytest case); ``cluster up`` passes False so they outlive the CLI.
    ``extra_args``: more command-line flags per component name (e.g.
    ``{"kube-apiserver": ["--feature-gates=..."]}``).
    On failure everything already started is stopped and ComponentFailed names
    the component and shows its log tail.
    """
    bin_dir = tools_bin()
    if run_dir is None:
        remove_stale_run_dirs()
    run = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    run.mkdir(parents=True, exist_ok=True)
    logs = run / "logs"
    logs.mkdir(exist_ok=True)
    pki = make_pki(run / "pki")
    names = ("etcd", "etcd_peer", "api", "s3", "s3_console", "kubelet")
    ports = dict(zip(names, procs.free_ports(len(names))))
    api_url = f"https://127.0.0.1:{ports['api']}"
    for user in ("admin", "controller-manager", "scheduler"):
        _write_kubeconfig(run / f"{user}.kubeconfig", api_url, pki, user)
    cluster = Cluster(
        run_dir=str(run),
        kubeconfig=str(run / "admin.kubeconfig"),
        api_url=api_url,
        s3_endpoint=f"http://127.0.0.1:{ports['s3']}",
        s3_access_key=S3_ACCESS_KEY,
        s3_secret_key=S3_SECRET_KEY,
        nodes=list(nodes),
        tools_bin=str(bin_dir),
        harness_version=harness_version(),
    )
    children: dict[str, subprocess.Popen] = {}

    def launch(name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        argv = argv + list((extra_args or {}).get(name, []))
        proc = procs.spawn(argv, logs / f"{name}.log", env=env, die_with_parent=die_with_parent)
        children[name] = proc
        cluster.pids[name] = proc.pid
        cluster.save()  # so that `down` can stop a half-started cluster too
        return proc

    try:
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
        etcd = launch("etcd", [
            f"{bin_dir}/etcd", "--data-dir", str(run / "etcd"), "--name", "kt",
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"kt={peer_url}",
            # Test data: durability is worthless, fsync latency is not.
            "--unsafe-no-fsync", "--log-level", "warn",
        ])
        minio_env = {**os.environ, "MINIO_ROOT_USER": S3_ACCESS_KEY,
                     "MINIO_ROOT_PASSWORD": S3_SECRET_KEY, "MINIO_BROWSER": "off",
                     "MINIO_UPDATE": "off"}
        minio = launch("minio", [
            f"{bin_dir}/minio", "server", "--quiet", "--address", f"127.0.0.1:{ports['s3']}",
            "--console-address", f"127.0.0.1:{ports['s3_console']}", str(run / "s3"),
        ], env=minio_env)
        procs.wait_until(lambda: _http_ok(etcd_url + "/health"), READY_TIMEOUT, "etcd",
                         etcd, logs / "etcd.log")
        api = launch("kube-apiserver", [
            f"{bin_dir}/kube-apiserver",
            "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(ports["api"]),
            "--tls-cert-file", str(pki.cert("apiserver")),
            "--tls-private-key-file", str(pki.key("apiserver")),
            "--client-ca-file", str(pki.ca_cert),
            "--authorization-mode", "Node,RBAC",
            "--enable-admission-plugins",
            "NamespaceLifecycle,LimitRanger,ServiceAccount,ResourceQuota,"
            "DefaultTolerationSeconds,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,"
            "ValidatingAdmissionPolicy,MutatingAdmissionPolicy,PodSecurity,Priority,"
            "StorageObjectInUseProtection,PersistentVolumeClaimResize,RuntimeClass",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(pki.sa_pub),
            "--service-account-signing-key-file", str(pki.sa_key),
            "--service-cluster-ip-range", SERVICE_CIDR,
            # kubectl logs: the API server asks the pod runner's kubelet endpoint.
            "--kubelet-preferred-address-types", "InternalIP",
            "--kubelet-certificate-authority", str(pki.ca_cert),
            "--kubelet-client-certificate", str(pki.cert("apiserver-kubelet-client")),
            "--kubelet-client-key", str(pki.key("apiserver-kubelet-client")),
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ])
        launch("kube-controller-manager", [
            f"{bin_dir}/kube-controller-manager",
            "--kubeconfig", str(run / "controller-manager.kubeconfig"),
            "--authentication-kubeconfig", str(run / "controller-manager.kubeconfig"),
            "--authorization-kubeconfig", str(run / "controller-manager.kubeconfig"),
            "--secure-port", "0",
            "--leader-elect=false",
            "--controllers", "*",
            # Each controller talks to the API as its own ServiceAccount, so
            # RBAC is exercised the way it is in a real cluster.
            "--use-service-account-credentials=true",
            "--service-account-private-key-file", str(pki.sa_key),
            "--root-ca-file", str(pki.ca_cert),
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--cluster-name", "kubetune",
            # Fast garbage collection of finished pods and quicker node checks.
            "--terminated-pod-gc-threshold", "100",
            "--node-monitor-period", "2s",
            "--v=1",
        ])
        launch("kube-scheduler", [
            f"{bin_dir}/kube-scheduler",
            "--kubeconfig", str(run / "scheduler.kubeconfig"),
            "--authentication-kubeconfig", str(run / "scheduler.kubeconfig"),
            "--authorization-kubeconfig", str(run / "scheduler.kubeconfig"),
            "--secure-port", "0",
            "--leader-elect=false",
            "--v=1",
        ])
        procs.wait_until(lambda: _get(cluster, "/readyz") == "ok", READY_TIMEOUT,
                         "kube-apiserver", api, logs / "kube-apiserver.log")
        if start_pod_runner:
            launch("pod-runner", [
                sys.executable, "-m", "tests.harness.podrunner",
                "--kubeconfig", cluster.kubeconfig, "--run-dir", str(run),
                "--api-port", str(ports["api"]),
                "--kubelet-port", str(ports["kubelet"]),
                "--tls-cert", str(pki.cert("kubelet")), "--tls-key", str(pki.key("kubelet")),
                *[arg for n in nodes for arg in ("--node", n)],
            ], env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
        core = _kube_clients(cluster.kubeconfig)
        _wait_controllers(cluster, core, children, nodes if start_pod_runner else ())
        procs.wait_until(lambda: _http_ok(cluster.s3_endpoint + "/minio/health/live"),
                         READY_TIMEOUT, "minio", minio, logs / "minio.log")
    except BaseException:
        stop(cluster)
        raise
    cluster.save()
    return cluster


def _wait_controllers(cluster: Cluster, core, children, nodes) -> None:
    def default_sa() -> bool:
        return bool(core.list_namespaced_service_account("default").items)

    def nodes_ready() -> bool:
        ready = set()
        for node in core.list_node().items:
            for cond in node.status.conditions or []:
                if cond.type == "Ready" and cond.status == "True":
                    ready.add(node.metadata.name)
        return set(nodes) <= ready

    logs = Path(cluster.run_dir) / "logs"
    procs.wait_until(default_sa, READY_TIMEOUT, "kube-controller-manager (default ServiceAccount)",
                     children["kube-controller-manager"], logs / "kube-controller-manager.log")
    if nodes:
        procs.wait_until(nodes_ready, READY_TIMEOUT, "pod-runner (nodes Ready)",
                         children["pod-runner"], logs / "pod-runner.log")
    for name, proc in children.items():
        if proc.poll() is not None:
            raise procs.ComponentFailed(
                f"{name} exited with code {proc.returncode}; log:\n"
                f"{procs.log_tail(logs / f'{name}.log')}")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


# Stop the pod runner first (it stops the pods' processes), the API server last
# but one so that controllers do not spin on a missing API, etcd last.
STOP_ORDER = ("pod-runner", "kube-scheduler", "kube-controller-manager", "minio",
              "kube-apiserver", "etcd")


def stop(cluster: Cluster, remove_data: bool = True) -> None:
    """Stop every component (SIGTERM, SIGKILL after a grace) and, by default,
    delete the run directory."""
    # Clients started beside the cluster (make demo's operator) leave
    # `<name>.pid` in the run directory: stopped first, never orphaned.
    for pidfile in sorted(Path(cluster.run_dir).glob("*.pid")):
        try:
            pid = int(pidfile.read_text().strip())
            ours = b"kubetune" in Path(f"/proc/{pid}/cmdline").read_bytes()  # not a reused pid
        except (OSError, ValueError):
            continue
        if ours and procs.pid_alive(pid):
            procs.stop_group(pid, grace=10)
    names = sorted(cluster.pids, key=lambda n: STOP_ORDER.index(n) if n in STOP_ORDER else -1)
    for name in names:
        procs.stop_group(cluster.pids[name], grace=10 if name == "pod-runner" else 5)
    cluster.pids.clear()
    if remove_data:
        shutil.rmtree(cluster.run_dir, ignore_errors=True)
    elif Path(cluster.run_dir).exists():
        cluster.save()


def _print_env(cluster: Cluster) -> None:
    for key, value in cluster.env().items():
        print(f"export {key}={value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.cluster")
    parser.add_argument("command", choices=("up", "down", "env"))
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    args = parser.parse_args(argv)
    existing = Cluster.load(args.run_dir)
    if args.command == "up":
        if existing and existing.alive():
            print(f"# already running (state {existing.state_file})", file=sys.stderr)
            if existing.harness_version != harness_version():
                print("# WARNING: it runs older harness code; tests will not reuse it. "
                      "Restart it: make cluster-down cluster-up", file=sys.stderr)
        else:
            if existing:
                stop(existing)
            t0 = time.monotonic()
            existing = start(args.run_dir, die_with_parent=False)
            print(f"# control plane, MinIO and pod runner ready in {time.monotonic() - t0:.1f}s; "
                  f"logs in {existing.logs_dir}", file=sys.stderr)
        _print_env(existing)
    elif args.command == "env":
        if not existing or not existing.alive():
            print(f"no running cluster in {args.run_dir}", file=sys.stderr)
            return 1
        _print_env(existing)
    else:
        if existing:
            stop(existing)
            print("# stopped", file=sys.stderr)
        else:
            print(f"# nothing running in {args.run_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
