"""A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler), MinIO and a real node (containerd, kubelet, kube-proxy,
CoreDNS: tests/harness/node.py), data in one run directory.

The API server and MinIO listen on the host's end of the node's link
(tests/harness/nodenet.py: an address of 198.19.0.0/16), so pods reach them as
they would in a cluster; etcd stays on loopback.

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
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator

from . import coredns, node, node_images, nodenet, procs
from .certs import Pki, make_pki

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RUN_DIR = Path(os.environ.get("KUBETUNE_RUN_DIR", Path.home() / ".cache/kubetune/run"))
S3_ACCESS_KEY = "kubetune"
S3_SECRET_KEY = "kubetune-secret-key"
# Component start-up budgets; a warm start takes a few seconds in total.
READY_TIMEOUT = float(os.environ.get("KUBETUNE_READY_TIMEOUT", "90"))


TEMP_PREFIX = "kubetune-cluster-"


def remove_stale_run_dirs() -> None:
    """Delete temp run dirs of sessions that died without cleaning up (SIGKILL):
    their processes died with them (PDEATHSIG); only the files stay behind."""
    for path in Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*"):
        state = Cluster.load(path)
        if state is not None and state.pids and not any(procs.pid_alive(p) for p in state.pids.values()):
            # Its kubelet's volume mounts outlive it: never delete through them.
            _clean_node(state)
            shutil.rmtree(path, ignore_errors=True)


def tools_bin() -> Path:
    """The directory with kube-apiserver & co (builds them on first use)."""
    return procs.setup_output("KUBETUNE_TOOLS_BIN", REPO / "hack/cluster-tools/build.sh")


@dataclass
class Cluster:
    """Where a running control plane lives and how to reach it."""

    run_dir: str
    kubeconfig: str
    api_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    tools_bin: str
    pids: dict[str, int] = field(default_factory=dict)  # component -> pid (= pgid)
    harness_version: str = ""  # see harness_version(); a stale running cluster is not reused
    node_slot: int = -1  # nodenet slot: addresses, namespace, containerd root
    real_node: str = ""  # the real node's name ("" when started without it)
    # Seconds from the start call until each milestone (cluster up prints them).
    startup: dict[str, float] = field(default_factory=dict)

    @property
    def network(self) -> nodenet.NodeNetwork:
        return nodenet.NodeNetwork(self.node_slot)

    @property
    def dns_ip(self) -> str:
        """The cluster DNS (CoreDNS behind the kube-dns Service)."""
        return self.network.dns_ip

    @property
    def state_file(self) -> Path:
        return Path(self.run_dir) / "state.json"

    @property
    def logs_dir(self) -> Path:
        return Path(self.run_dir) / "logs"

    def save(self) -> None:
        self.state_file.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, run_dir: Path = DEFAULT_RUN_DIR) -> "Cluster | None":
        try:
            state = json.loads((Path(run_dir) / "state.json").read_text())
        except FileNotFoundError:
            return None
        # A state file written by other harness code (another checkout) may
        # name fields this one lacks.
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in known})

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
    """A digest of the harness code and tool versions: a cluster started by
    older harness code is not reused by the fixtures (it would behave differently)."""
    digest = hashlib.sha1()
    here = Path(__file__).parent
    running_code = ("cluster.py", "kubeapi.py", "procs.py", "certs.py",
                    "node.py", "nodenet.py", "node_images.py", "coredns.py", "oci.py")
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


def _slot_in_use(run_dir: str) -> bool:
    state = Cluster.load(Path(run_dir))
    return bool(state and state.pids and any(procs.pid_alive(p) for p in state.pids.values()))


def start(
    run_dir: Path | None = None,
    die_with_parent: bool = True,
    start_node: bool = True,
    extra_args: dict[str, list[str]] | None = None,
) -> Cluster:
    """Start everything and wait until it is usable: API ready, the
    ``default`` ServiceAccount present (controllers working), MinIO live, and
    with ``start_node`` the node Ready with CoreDNS answering.

    ``die_with_parent``: the components get SIGKILL when this process dies (the
    pytest case); ``cluster up`` passes False so they outlive the CLI.
    ``extra_args``: more command-line flags per component name (e.g.
    ``{"kube-apiserver": ["--feature-gates=..."]}``).
    On failure everything already started is stopped and ComponentFailed names
    the component and shows its log tail.
    """
    t0 = time.monotonic()
    bin_dir = tools_bin()
    if run_dir is None:
        remove_stale_run_dirs()
    run = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    run.mkdir(parents=True, exist_ok=True)
    logs = run / "logs"
    logs.mkdir(exist_ok=True)
    net = nodenet.claim(str(run), _slot_in_use, lambda n: node.cleanup(n, None))
    cluster = Cluster(
        run_dir=str(run), kubeconfig=str(run / "admin.kubeconfig"), api_url="", s3_endpoint="",
        s3_access_key=S3_ACCESS_KEY, s3_secret_key=S3_SECRET_KEY,
        tools_bin=str(bin_dir), harness_version=harness_version(), node_slot=net.slot,
        real_node=node.NODE_NAME if start_node else "",
    )
    cluster.save()  # from here on `down` cleans the slot up too
    children: dict[str, subprocess.Popen] = {}

    def reached(milestone: str) -> None:
        cluster.startup[milestone] = round(time.monotonic() - t0, 2)

    def launch(name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        argv = argv + list((extra_args or {}).get(name, []))
        proc = procs.spawn(argv, logs / f"{name}.log", env=env, die_with_parent=die_with_parent)
        children[name] = proc
        cluster.pids[name] = proc.pid
        cluster.save()  # so that `down` can stop a half-started cluster too
        return proc

    try:
        nodenet.setup(net)
        if start_node:
            node.prepare(net, run)
            node.start_containerd(net, run, launch)
            reached("containerd")
        pki = make_pki(run / "pki", api_ips=(net.host_ip, net.kubernetes_ip), node_ip=net.node_ip)
        names = ("api", "s3", "s3_console")
        ports = dict(zip(names, procs.free_ports(len(names), host=net.host_ip)))
        etcd_port, etcd_peer_port = procs.free_ports(2)
        cluster.api_url = api_url = f"https://{net.host_ip}:{ports['api']}"
        cluster.s3_endpoint = f"http://{net.host_ip}:{ports['s3']}"
        for user in ("admin", "controller-manager", "scheduler", "kubelet-client", "kube-proxy"):
            _write_kubeconfig(run / f"{user}.kubeconfig", api_url, pki, user)
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{etcd_peer_port}"
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
            f"{bin_dir}/minio", "server", "--quiet", "--address", f"{net.host_ip}:{ports['s3']}",
            "--console-address", f"{net.host_ip}:{ports['s3_console']}", str(run / "s3"),
        ], env=minio_env)
        if start_node:
            # Imported while etcd and the API server start (once per slot).
            node.load_node_images(net, bin_dir)
            reached("node images")
        procs.wait_until(lambda: _http_ok(etcd_url + "/health"), READY_TIMEOUT, "etcd",
                         etcd, logs / "etcd.log")
        api = launch("kube-apiserver", [
            f"{bin_dir}/kube-apiserver",
            "--etcd-servers", etcd_url,
            "--bind-address", net.host_ip, "--advertise-address", net.host_ip,
            "--secure-port", str(ports["api"]),
            "--tls-cert-file", str(pki.cert("apiserver")),
            "--tls-private-key-file", str(pki.key("apiserver")),
            "--client-ca-file", str(pki.ca_cert),
            "--authorization-mode", "Node,RBAC",
            "--enable-admission-plugins",
            "NamespaceLifecycle,LimitRanger,ServiceAccount,ResourceQuota,"
            "DefaultTolerationSeconds,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,"
            "ValidatingAdmissionPolicy,MutatingAdmissionPolicy,PodSecurity,Priority,"
            "StorageObjectInUseProtection,PersistentVolumeClaimResize,RuntimeClass,NodeRestriction",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(pki.sa_pub),
            "--service-account-signing-key-file", str(pki.sa_key),
            "--service-cluster-ip-range", net.service_cidr,
            # kubectl logs/exec: the API server asks the node's kubelet.
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
            "--service-cluster-ip-range", net.service_cidr,
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
        if start_node:
            # Both retry until the API server answers.
            node.start_kubelet(net, run, pki, bin_dir, run / "kubelet-client.kubeconfig", launch)
            node.start_kube_proxy(net, run, bin_dir, run / "kube-proxy.kubeconfig", launch)
        procs.wait_until(lambda: _get(cluster, "/readyz") == "ok", READY_TIMEOUT,
                         "kube-apiserver", api, logs / "kube-apiserver.log")
        reached("kube-apiserver")
        core = _kube_clients(cluster.kubeconfig)
        _wait_controllers(cluster, core, children)
        reached("controllers")
        if start_node:
            _wait_real_node(cluster, core, children, reached)
        procs.wait_until(lambda: _http_ok(cluster.s3_endpoint + "/minio/health/live"),
                         READY_TIMEOUT, "minio", minio, logs / "minio.log")
        reached("ready")
    except BaseException:
        stop(cluster)
        raise
    cluster.save()
    return cluster


def _node_ready(core, name: str) -> bool:
    node_obj = core.read_node(name)
    return any(c.type == "Ready" and c.status == "True" for c in node_obj.status.conditions or [])


def _wait_real_node(cluster: Cluster, core, children, reached: Callable[[str], None]) -> None:
    """The node Ready with its extended resources, CoreDNS serving."""
    logs = Path(cluster.run_dir) / "logs"
    name = cluster.real_node
    procs.wait_until(lambda: _node_ready(core, name), READY_TIMEOUT, f"kubelet (node {name} Ready)",
                     children["kubelet"], logs / "kubelet.log")
    reached("node Ready")
    core.patch_node_status(name, [
        {"op": "add", "path": f"/status/capacity/{key.replace('/', '~1')}", "value": value}
        for key, value in node.FAKE_EXTENDED_RESOURCES.items()])
    tolerations = [{"key": "CriticalAddonsOnly", "operator": "Exists"}]
    manifest = coredns.manifest_text(cluster.network, node_images.COREDNS_IMAGE, name, tolerations)
    subprocess.run([f"{cluster.tools_bin}/kubectl", "--kubeconfig", cluster.kubeconfig, "apply",
                    "--server-side", "-f", "-"], input=manifest, text=True, check=True, capture_output=True)

    def dns_answers() -> bool:
        return coredns.resolve("kubernetes.default.svc.cluster.local", cluster.dns_ip, timeout=0.5) == [
            cluster.network.kubernetes_ip]

    procs.wait_until(dns_answers, READY_TIMEOUT, "CoreDNS (kubernetes.default answers through the kube-dns Service)",
                     children["kube-proxy"], logs / "kube-proxy.log")
    reached("cluster DNS")


def _wait_controllers(cluster: Cluster, core, children) -> None:
    def default_sa() -> bool:
        return bool(core.list_namespaced_service_account("default").items)

    logs = Path(cluster.run_dir) / "logs"
    procs.wait_until(default_sa, READY_TIMEOUT, "kube-controller-manager (default ServiceAccount)",
                     children["kube-controller-manager"], logs / "kube-controller-manager.log")
    for name, proc in children.items():
        if proc.poll() is not None:
            raise procs.ComponentFailed(
                f"{name} exited with code {proc.returncode}; log:\n"
                f"{procs.log_tail(logs / f'{name}.log')}")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


# The node first (the kubelet first so that it restarts nothing, containerd
# after its containers), the API server last but one so that controllers do not
# spin on a missing API, etcd last.
STOP_ORDER = ("kubelet", "kube-proxy", "containerd", "kube-scheduler",
              "kube-controller-manager", "minio", "kube-apiserver", "etcd")


@contextmanager
def running(reuse: bool = True, run_dir: Path | None = None) -> Iterator[Cluster]:
    """With `reuse`, the cluster running in DEFAULT_RUN_DIR (`make cluster-up`,
    `make demo`) when it runs this harness's code; else a new one, stopped when
    the block ends: in `run_dir` (its logs left there, for `down` to remove) or
    in a temporary directory, removed. Stopping also removes what outlives the
    components: the node's containerd shims, mounts and network."""
    if reuse:
        existing = Cluster.load(DEFAULT_RUN_DIR)
        if existing and existing.alive():
            if existing.harness_version == harness_version():
                yield existing
                return
            warnings.warn(f"not reusing the cluster in {existing.run_dir}: it runs other harness "
                          f"code (restart it with make cluster-down cluster-up); starting a private one")
            run_dir = None  # that directory is the other cluster's
    cluster = start(run_dir=run_dir, die_with_parent=True)
    try:
        yield cluster
    finally:
        stop(cluster, remove_data=run_dir is None)


def stop(cluster: Cluster, remove_data: bool = True) -> None:
    """Stop every component (SIGTERM, SIGKILL after a grace), remove the node's
    pods, mounts, cgroups and network and, by default, delete the run directory."""
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
        if name == "containerd" and procs.pid_alive(cluster.pids[name]):
            node.remove_containers(cluster.network)
        procs.stop_group(cluster.pids[name], grace=5)
    cluster.pids.clear()
    _clean_node(cluster)
    if remove_data:
        shutil.rmtree(cluster.run_dir, ignore_errors=True)
    elif Path(cluster.run_dir).exists():
        cluster.save()


def _clean_node(cluster: Cluster) -> None:
    """The node's leftovers (pods, mounts, cgroups, network), once its
    processes are gone; the slot's are only touched while this cluster owns it."""
    if cluster.node_slot < 0:
        return
    run = Path(cluster.run_dir)
    if nodenet.owner(cluster.node_slot) == cluster.run_dir:
        node.cleanup(cluster.network, run)
        nodenet.release(cluster.network, cluster.run_dir)
    else:
        node.unmount_below([node.node_dir(run)])


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
            print(f"# control plane, MinIO and node ready in {time.monotonic() - t0:.1f}s "
                  f"({', '.join(f'{k} {v}s' for k, v in existing.startup.items())}); "
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
