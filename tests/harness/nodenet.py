"""The test node's network: addresses from 198.19.0.0/16 (half of 198.18.0.0/15,
reserved for network benchmarks, RFC 2544, routed nowhere), a network namespace
per node, a veth pair between it and the host.

Several clusters may run on one machine at once (a developer's ``make
cluster-up`` beside a test session): each takes a *slot*, and a slot owns a /18
and its own names, so no two clusters share an address, a bridge, an iptables
table (kube-proxy's rules live in the node's namespace, never the host's) or a
containerd root::

    slot s (0..3), base 198.19.(64*s).0
      pods       198.19.(64s).0/22      on the bridge kt-br inside the namespace
      Services   198.19.(64s+16).0/24   kubernetes .1, kube-dns .10
      host link  198.19.(64s+63).0/30   .1 on the host (kt-h<s>), .2 in the namespace (kt-n<s>)

The host routes the slot's pods and Services (198.19.(64s).0/19) to the
namespace; pods reach the API server, MinIO and other host services on the host
link address. The namespace has no default route: nothing in it reaches
beyond the host (an image pull fails at once, as it must: no registry here).
Only addresses of 198.19.0.0/16 are ever added or routed; the host's own
routes are never touched.

A slot is claimed by writing the cluster's run directory into
``<cache>/node/slot-<s>.owner`` under a lock; a slot whose owner is gone (its
processes dead) is cleaned and reused.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

NETWORK = ipaddress.ip_network("198.19.0.0/16")
SLOTS = 4
CACHE = Path(os.environ.get("KUBETUNE_CACHE", Path.home() / ".cache/kubetune"))
SLOT_DIR = CACHE / "node"


@dataclass(frozen=True)
class NodeNetwork:
    """Names and addresses of one slot."""

    slot: int

    def _ip(self, third: int, fourth: int) -> str:
        return f"198.19.{64 * self.slot + third}.{fourth}"

    @property
    def netns(self) -> str:
        return f"kt-node-{self.slot}"

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    @property
    def host_if(self) -> str:
        return f"kt-h{self.slot}"

    @property
    def node_if(self) -> str:
        return f"kt-n{self.slot}"

    bridge = "kt-br"

    @property
    def host_ip(self) -> str:
        """The host's address on the link: servers pods must reach bind here."""
        return self._ip(63, 1)

    @property
    def node_ip(self) -> str:
        """The node's InternalIP (kubelet, kube-proxy)."""
        return self._ip(63, 2)

    @property
    def pod_cidr(self) -> str:
        return f"{self._ip(0, 0)}/22"

    @property
    def pod_gateway(self) -> str:
        return self._ip(0, 1)

    @property
    def service_cidr(self) -> str:
        return f"{self._ip(16, 0)}/24"

    @property
    def kubernetes_ip(self) -> str:
        """The ``kubernetes`` Service's ClusterIP (first of the range)."""
        return self._ip(16, 1)

    @property
    def dns_ip(self) -> str:
        """The ``kube-dns`` Service's ClusterIP (CoreDNS)."""
        return self._ip(16, 10)

    @property
    def routed_cidr(self) -> str:
        """What the host routes into the namespace: pods and Services."""
        return f"{self._ip(0, 0)}/19"

    @property
    def cgroup_root(self) -> str:
        """The kubelet's cgroupRoot: every pod of this node lives below it."""
        return f"/kubetune-node-{self.slot}"

    @property
    def state_dir(self) -> Path:
        """containerd's state (sockets, mounts, pod network namespaces): tmpfs."""
        return Path(f"/run/kubetune/node-{self.slot}")

    @property
    def containerd_root(self) -> Path:
        """containerd's root (images, snapshots): kept across clusters, so an
        image loaded once stays loaded for every later cluster of this slot."""
        return SLOT_DIR / f"slot-{self.slot}" / "containerd"

    @property
    def containerd_socket(self) -> str:
        return str(self.state_dir / "containerd.sock")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def in_netns(net: NodeNetwork, *argv: str) -> list[str]:
    """``argv`` run in the node's network namespace only (mounts are shared with
    the host: the kubelet's volume mounts must be visible to containerd)."""
    return ["nsenter", f"--net={net.netns_path}", "--", *argv]


def _check_addresses(net: NodeNetwork) -> None:
    for cidr in (net.pod_cidr, net.service_cidr, net.routed_cidr, f"{net.host_ip}/30"):
        assert ipaddress.ip_network(cidr, strict=False).subnet_of(NETWORK), cidr


def setup(net: NodeNetwork) -> None:
    """Create the namespace, the veth pair, addresses and routes (after removing
    whatever a dead cluster of this slot left)."""
    _check_addresses(net)
    teardown(net)
    _run("ip", "netns", "add", net.netns)
    _run("ip", "link", "add", net.host_if, "type", "veth", "peer", "name", net.node_if,
         "netns", net.netns)
    _run("ip", "addr", "add", f"{net.host_ip}/30", "dev", net.host_if)
    _run("ip", "link", "set", net.host_if, "up")
    _run("ip", "route", "add", net.routed_cidr, "via", net.node_ip, "dev", net.host_if)
    ns = ["ip", "-n", net.netns]
    _run(*ns, "link", "set", "lo", "up")
    _run(*ns, "addr", "add", f"{net.node_ip}/30", "dev", net.node_if)
    _run(*ns, "link", "set", net.node_if, "up")
    # Per-namespace switches: the node forwards between pods and the host, and
    # bridged pod-to-pod replies of Service traffic pass iptables (kube-proxy's
    # DNAT is undone by conntrack only if they do).
    sysctls = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1",
               "net.ipv4.conf.all.rp_filter": "0"}
    for key, value in sysctls.items():
        _run(*in_netns(net, "sysctl", "-q", "-w", f"{key}={value}"))


def teardown(net: NodeNetwork) -> None:
    """Remove the namespace (its veth end, so the host's end and route go too)."""
    if Path(net.netns_path).exists():
        _run("ip", "netns", "del", net.netns, check=False)
    if _run("ip", "link", "show", net.host_if, check=False).returncode == 0:
        _run("ip", "link", "del", net.host_if, check=False)


# --- slots -------------------------------------------------------------------

@contextmanager
def _slots_locked() -> Iterator[None]:
    SLOT_DIR.mkdir(parents=True, exist_ok=True)
    with open(SLOT_DIR / ".slots.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _owner_file(slot: int) -> Path:
    return SLOT_DIR / f"slot-{slot}.owner"


def owner(slot: int) -> str | None:
    try:
        return json.loads(_owner_file(slot).read_text())["run_dir"]
    except (FileNotFoundError, ValueError, KeyError):
        return None


def claim(run_dir: str, in_use: Callable[[str], bool],
          clean: Callable[[NodeNetwork], None]) -> NodeNetwork:
    """The first slot no live cluster owns, now owned by ``run_dir``.
    ``in_use(owner_run_dir)`` says whether a previous owner still runs;
    ``clean(net)`` removes what a dead one left (called before the claim)."""
    with _slots_locked():
        for slot in range(SLOTS):
            previous = owner(slot)
            if previous == run_dir:
                return NodeNetwork(slot)
            if previous is not None and in_use(previous):
                continue
            net = NodeNetwork(slot)
            if previous is not None:
                clean(net)
            _owner_file(slot).write_text(json.dumps({"run_dir": run_dir, "pid": os.getpid()}))
            return net
    raise RuntimeError(f"all {SLOTS} node slots are in use by running clusters "
                       f"({', '.join(str(owner(s)) for s in range(SLOTS))}); stop one (make cluster-down)")


def release(net: NodeNetwork, run_dir: str) -> None:
    with _slots_locked():
        if owner(net.slot) == run_dir:
            _owner_file(net.slot).unlink(missing_ok=True)
