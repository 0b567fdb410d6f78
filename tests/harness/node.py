"""The test cluster's real node: containerd (Debian's, with runc and the CNI
plugins), a kubelet and kube-proxy built from the same Kubernetes release as the
API server, all three in the node's own network namespace (tests/harness/nodenet.py).

What this host needs (cgroup v1 hybrid, no CAP_SYS_RESOURCE, no registry):
kubelet ``failCgroupV1: false`` and ``cgroupDriver: cgroupfs``; containerd's CRI
``restrict_oom_score_adj = true`` and ``SystemdCgroup = false``; no rlimit above
the hard limits; a pause image made here (tests/harness/node_images.py).

Per cluster (run directory ``<run>/node``): the configs, the kubelet's root
directory, pod logs, CNI address allocations. Per slot: containerd's root
(images stay loaded across clusters) and state (``/run/kubetune/node-<s>``);
pods' cgroups under ``/kubetune-node-<s>``. :func:`stop` leaves nothing behind:
containers killed and removed, mounts under the node's directories unmounted,
cgroups and the network namespace removed.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import shutil
import time
from pathlib import Path
from typing import Callable

from . import node_images, nodenet, procs
from .certs import Pki
from .nodenet import NodeNetwork

NODE_NAME = "kt-node-0"
KUBELET_PORT = 10250
# Extended resources the tests schedule against, advertised the way a cluster
# admin does for a resource no device plugin manages: in the Node's
# status.capacity (the kubelet keeps them and copies them to allocatable). No
# device is behind them: a pod asking for nvidia.com/gpu gets none.
FAKE_EXTENDED_RESOURCES = {"nvidia.com/gpu": "8"}
RUNC = shutil.which("runc") or "/usr/sbin/runc"
CNI_BIN = "/usr/lib/cni"
CGROUP_FS = Path("/sys/fs/cgroup")


def node_dir(run: Path) -> Path:
    return Path(run) / "node"


# --- configuration --------------------------------------------------------------

def containerd_config(net: NodeNetwork, run: Path) -> str:
    state = net.state_dir / "containerd"
    return f"""version = 2
root = "{net.containerd_root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{net.containerd_socket}"

[ttrpc]
  address = "{net.containerd_socket}.ttrpc"

[timeouts]
  # Another containerd on this root (a stale one) fails fast instead of hanging.
  "io.containerd.timeout.bolt.open" = "10s"

[plugins."io.containerd.internal.v1.opt"]
  path = "{net.containerd_root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{node_images.PAUSE_IMAGE}"
  # No CAP_SYS_RESOURCE here: never ask for an oom_score_adj below our own.
  restrict_oom_score_adj = true
  # Pod network namespaces under the state dir, not /run/netns: a node's
  # leftovers are found and removed with the node.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{node_dir(run) / 'cni'}"
    max_conf_num = 1
"""


def cni_config(net: NodeNetwork, run: Path) -> dict:
    return {
        "cniVersion": "0.4.0",
        "name": "kubetune",
        "plugins": [
            {"type": "bridge", "bridge": net.bridge, "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": net.pod_cidr, "gateway": net.pod_gateway}]],
                      # the pods' default route: the bridge, i.e. the node
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(node_dir(run) / "cni-ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(net: NodeNetwork, run: Path, pki: Pki) -> dict:
    d = node_dir(run)
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This host: cgroup v1 (hybrid), no systemd.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": net.cgroup_root,
        "containerRuntimeEndpoint": f"unix://{net.containerd_socket}",
        "address": net.node_ip,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "tlsCertFile": str(pki.cert("kubelet")),
        "tlsPrivateKeyFile": str(pki.key("kubelet")),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki.ca_cert)}},
        "authorization": {"mode": "Webhook"},
        "clusterDomain": "cluster.local",
        "clusterDNS": [net.dns_ip],
        "resolvConf": str(d / "resolv.conf"),
        "podLogsDir": str(d / "pod-logs"),
        "failSwapOn": False,
        # Images cannot be pulled again here: never garbage-collect one.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # A shared development machine: evict only when really out of room.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False,
        # ConfigMap/Secret volume updates and pod status within seconds.
        "syncFrequency": "5s",
        "nodeStatusUpdateFrequency": "5s",
        "shutdownGracePeriod": "0s",
        "rotateCertificates": False,
        "containerLogMaxSize": "20Mi",
    }


def kube_proxy_config(net: NodeNetwork, kubeconfig: Path) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "bindAddress": net.node_ip,
        "healthzBindAddress": f"{net.node_ip}:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "clusterCIDR": net.pod_cidr,
        # Leave the kernel's conntrack settings alone (a namespace cannot set most).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        # Service changes reach the rules at once, not after a minimum period.
        "iptables": {"minSyncPeriod": "0s", "syncPeriod": "30s"},
    }


# --- start --------------------------------------------------------------------------

Launch = Callable[[str, list[str]], "procs.subprocess.Popen"]


def prepare(net: NodeNetwork, run: Path) -> None:
    """Directories, configs the containerd needs, cgroup root; after nodenet.setup."""
    d = node_dir(run)
    for sub in ("cni", "cni-ipam", "kubelet", "pod-logs"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    net.state_dir.mkdir(parents=True, exist_ok=True)
    net.containerd_root.mkdir(parents=True, exist_ok=True)
    (d / "containerd.toml").write_text(containerd_config(net, run))
    (d / "cni" / "10-kubetune.conflist").write_text(json.dumps(cni_config(net, run), indent=2))
    (d / "resolv.conf").write_text("")  # no upstream DNS: nothing outside resolves here
    _make_cgroup_root(net)


def start_containerd(net: NodeNetwork, run: Path, launch: Launch):
    proc = launch("containerd", nodenet.in_netns(
        net, "containerd", "--config", str(node_dir(run) / "containerd.toml"), "--log-level", "warn"))
    procs.wait_until(lambda: node_images.ctr(net, "version", timeout=5).returncode == 0, 60,
                     "containerd", proc, Path(run) / "logs" / "containerd.log")
    # A containerd that died with its cluster leaves its containers' records.
    remove_containers(net)
    return proc


def load_node_images(net: NodeNetwork, tools_bin: Path) -> None:
    """The pause and CoreDNS images, imported unless the slot has them."""
    for (archive, digest), ref in ((node_images.pause_archive(), node_images.PAUSE_IMAGE),
                                   (node_images.coredns_archive(tools_bin), node_images.COREDNS_IMAGE)):
        node_images.import_archive(net, archive, ref, digest)


def start_kubelet(net: NodeNetwork, run: Path, pki: Pki, tools_bin: Path, kubeconfig: Path, launch: Launch):
    d = node_dir(run)
    (d / "kubelet.json").write_text(json.dumps(kubelet_config(net, run, pki), indent=2))
    return launch("kubelet", nodenet.in_netns(
        net, f"{tools_bin}/kubelet", "--config", str(d / "kubelet.json"), "--kubeconfig", str(kubeconfig),
        "--hostname-override", NODE_NAME, "--node-ip", net.node_ip, "--root-dir", str(d / "kubelet"),
        "--v=1"))


def start_kube_proxy(net: NodeNetwork, run: Path, tools_bin: Path, kubeconfig: Path, launch: Launch):
    d = node_dir(run)
    (d / "kube-proxy.json").write_text(json.dumps(kube_proxy_config(net, kubeconfig), indent=2))
    return launch("kube-proxy", nodenet.in_netns(
        net, f"{tools_bin}/kube-proxy", "--config", str(d / "kube-proxy.json"), "--v=1"))


# --- stop and clean up ----------------------------------------------------------------

def remove_containers(net: NodeNetwork) -> None:
    """Kill every process of the node's pods and remove every container record
    (sandboxes too) from containerd, which must be running."""
    kill_pod_processes(net)
    ids = node_images.ctr(net, "containers", "ls", "-q", check=False).stdout.split()
    for cid in ids:
        node_images.ctr(net, "tasks", "rm", "-f", cid, check=False)
    for cid in ids:
        node_images.ctr(net, "containers", "rm", cid, check=False)


def kill_pod_processes(net: NodeNetwork) -> None:
    for procs_file in (CGROUP_FS / "pids" / net.cgroup_root.lstrip("/")).rglob("cgroup.procs"):
        try:
            pids = [int(p) for p in procs_file.read_text().split()]
        except OSError:
            continue
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _shim_pids(net: NodeNetwork) -> list[int]:
    """containerd-shim processes of this node's containerd (they outlive it)."""
    needle = net.containerd_socket.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmd and needle in cmd:
                found.append(int(entry.name))
    return found


def cleanup(net: NodeNetwork, run: Path | None) -> None:
    """After the node's processes stopped: whatever is left of its pods, mounts,
    cgroups and network. Safe to call for a node that never started."""
    kill_pod_processes(net)
    for pid in _shim_pids(net):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    roots = [net.state_dir] + ([node_dir(run)] if run else [])
    unmount_below(roots)
    _remove_cgroups(net)
    if run:
        _remove_log_links(node_dir(run) / "pod-logs")
    nodenet.teardown(net)
    shutil.rmtree(net.state_dir, ignore_errors=True)


_MNT_DETACH = 2


def _mounts_below(roots: list[Path]) -> list[str]:
    prefixes = [str(Path(r).resolve()) for r in roots]
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            found.append(point)
    return found


def unmount_below(roots: list[Path]) -> None:
    """Unmount (lazily, deepest first) everything mounted at or below ``roots``:
    volumes, container root filesystems, pod network namespaces. Raises if a
    mount stays, so that nobody deletes files through it."""
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(3):
        points = _mounts_below(roots)
        if not points:
            return
        for point in sorted(points, key=lambda p: p.count("/"), reverse=True):
            libc.umount2(point.encode(), _MNT_DETACH)
    remaining = _mounts_below(roots)
    if remaining:
        raise RuntimeError(f"still mounted after cleanup: {remaining[:5]}")


def _hierarchies() -> list[Path]:
    return [p for p in CGROUP_FS.iterdir() if p.is_dir() and (p / "cgroup.procs").exists()]


def _make_cgroup_root(net: NodeNetwork) -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy; cpuset needs its
    CPUs and memory nodes set before anything can join it."""
    for hierarchy in _hierarchies():
        path = hierarchy / net.cgroup_root.lstrip("/")
        path.mkdir(exist_ok=True)
        if hierarchy.name == "cpuset":
            for key in ("cpuset.cpus", "cpuset.mems"):
                if not (path / key).read_text().strip():
                    (path / key).write_text((hierarchy / key).read_text())


def _remove_cgroups(net: NodeNetwork) -> None:
    for hierarchy in _hierarchies():
        root = hierarchy / net.cgroup_root.lstrip("/")
        if not root.exists():
            continue
        dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for path in dirs + [root]:
            for _ in range(50):  # a killed process leaves its cgroup a moment later
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def _remove_log_links(pod_logs: Path) -> None:
    """The kubelet links each container's log from /var/log/containers."""
    links = Path("/var/log/containers")
    if not links.is_dir():
        return
    for link in links.iterdir():
        try:
            if link.is_symlink() and os.readlink(link).startswith(str(pod_logs)):
                link.unlink()
        except OSError:
            pass
