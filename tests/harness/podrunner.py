"""The test-only kubelet stand-in: runs pods bound to its nodes as local processes
and reports their status to the real API server.

It is the one thing in the harness that is not the real component. What it does:

* registers its Node objects (capacity cpu, memory, pods, ``nvidia.com/gpu``)
  and keeps their Ready condition and ``kube-node-lease`` Leases fresh;
* watches pods bound to its nodes; per pod: an address of 198.18.0.0/15 put
  on lo while the pod lives (so EndpointSlices accept it; 127.x where
  addresses cannot be added) as ``status.podIP``, init containers in order, then the containers, each as
  ``command + args`` in a private mount + UTS namespace (``unshare -m -u``) where
  the pod's volumes (emptyDir, configMap, secret, downwardAPI, projected incl.
  service-account tokens, hostPath), the termination-message file and an
  ``/etc/hosts`` (pod ``hostname.subdomain`` names of the namespace) are bind
  mounted at their paths, so concurrent pods never collide on an absolute path;
* env: ``value`` (with ``$(VAR)`` expansion), ``valueFrom`` secretKeyRef /
  configMapKeyRef / fieldRef / resourceFieldRef, ``envFrom``; plus
  ``KUBERNETES_SERVICE_HOST/PORT`` pointing at the API server so in-cluster
  clients work, and ``HOSTNAME``;
* phases, conditions, container states, exit codes, reasons, restart counts,
  ``restartPolicy`` (Never/OnFailure/Always with back-off), termination message
  (``FallbackToLogsOnError`` honoured), readiness probes (httpGet, tcpSocket,
  exec); deletion with graceful termination (SIGTERM to the container's process
  group, SIGKILL after the grace period, then delete with grace 0).

What it does not do (documented limits): no images (see the image policy),
no network isolation (all pods share the host network; a process should bind
to its ``POD_IP`` or use distinct ports), no securityContext beyond what a
root process already has (runAsUser/fsGroup/readOnlyRootFilesystem are NOT
applied: the cached venv lives in root's home), no liveness/startup probes,
of lifecycle hooks only the preStop ``sleep`` action, no resource limits; of the kubelet API only container
logs exist (``kubectl logs [-f] [--tail]`` works through the API server; no
exec/attach/port-forward; :func:`container_log` reads the files directly),
ConfigMap/Secret volume contents are not updated
after the container starts, Service ClusterIPs are not routable.

Image policy (``ImagePolicy``): an image whose name contains one of the
``local`` markers (default ``kubetune/trainer``, ``kubetune/operator``,
``python``) runs its command locally with the venv's bin dir first on PATH.
An image declared in ``tests/harness/images.py`` (``vllm/vllm-openai``) runs
from its own cached environment, with the ENTRYPOINT and ENV declared there
(a container with ``args`` and no ``command`` runs the entrypoint with them). An
image declared *simulated-ready* (exact name, or name without tag/digest) in
the ConfigMap ``kube-system/kubetune-pod-runner`` (key ``simulatedReadyImages``,
one per line; see fixtures ``pod_runner.simulate_ready``) is Running and Ready
without running anything until deleted. Any other image (e.g.
``vllm/vllm-openai``) stays Waiting with reason ``ErrImagePull`` (the kubelet's
own reason, so operators react as in a real cluster) and a message that says it
cannot run on this machine. Nothing is silently faked.

Run: ``python -m tests.harness.podrunner --kubeconfig K --run-dir D --api-port P
--node kt-node-0 --node kt-node-1`` (``cluster.start`` does this).
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import images
from .kubeapi import ApiError, KubeApi

log = logging.getLogger("pod-runner")

CONFIG_NAMESPACE = "kube-system"
CONFIG_NAME = "kubetune-pod-runner"
DEFAULT_LOCAL_IMAGE_MARKERS = ("kubetune/trainer", "kubetune/operator", "python")
DEFAULT_NODE_CAPACITY = {
    "cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "8",
    "ephemeral-storage": "200Gi",
}
TERMINATION_MESSAGE_LIMIT = 4096
FALLBACK_LOG_LINES = 80
VENV_BIN = str(Path(sys.executable).parent)
# Pod addresses come from 127.0.1.0 upwards; the control plane stays on 127.0.0.1.
FIRST_POD_IP = (127 << 24) | (1 << 8) | 2
LAST_POD_IP = (127 << 24) | (255 << 16) | (255 << 8) | 254
# ... unless `pod_network` can make 198.18.0.0/16 local (see there); the other
# half of 198.18.0.0/15 belongs to the real node (tests/harness/nodenet.py).
POD_NETWORK = "198.18.0.0/16"
FIRST_NETWORK_IP = (198 << 24) | (18 << 16) | 2
LAST_NETWORK_IP = (198 << 24) | (18 << 16) | (255 << 8) | 254


def pod_network() -> tuple[int, int, bool]:
    """(first, last) pod address and whether each pod's address is put on lo.
    The API server refuses loopback addresses in EndpointSlices, so with 127.x
    pod IPs no Service has endpoints. Addresses of 198.18.0.0/15 (reserved for
    network benchmarks, RFC 2544, routed nowhere) are each added to lo while
    their pod lives (`PodAddresses`): local like 127.x, on an interface (gloo
    and other libraries look their own address up there), and published by the
    real EndpointSlice controller. Without the privilege to add addresses, pods
    keep 127.x addresses and Services stay without endpoints."""
    probe = _ip_text(FIRST_NETWORK_IP - 1)
    try:
        subprocess.run(["ip", "addr", "add", f"{probe}/32", "dev", "lo"], check=True, capture_output=True, timeout=10)
        subprocess.run(["ip", "addr", "del", f"{probe}/32", "dev", "lo"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("pod addresses stay on loopback (Services get no endpoints): cannot add %s addresses to lo: %s",
                    POD_NETWORK, getattr(exc, "stderr", b"") or exc)
        return FIRST_POD_IP, LAST_POD_IP, False
    return FIRST_NETWORK_IP, LAST_NETWORK_IP, True


def _ip_text(ip: int) -> str:
    return socket.inet_ntoa(ip.to_bytes(4, "big"))


def set_lo_address(ip: str, present: bool) -> None:
    """Add (or remove) one pod's address on lo; a failure is logged, not fatal."""
    verb = "add" if present else "del"
    proc = subprocess.run(["ip", "addr", verb, f"{ip}/32", "dev", "lo"], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0 and "File exists" not in proc.stderr and "Cannot assign" not in proc.stderr:
        log.warning("ip addr %s %s dev lo: %s", verb, ip, proc.stderr.strip())

def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def container_log(run_dir: str | Path, namespace: str, pod: str, container: str | None = None) -> str:
    """The stdout+stderr of a pod's container as the pod runner captured it
    (all restarts, in order; ``kubectl logs`` shows the same, but needs the
    runner's log endpoint and a pod object). This reads the runner's files under
    ``<run_dir>/pods/<namespace>/<pod>/<uid>/logs/``. ``container`` defaults to
    the pod's only (or first) container. Returns "" when nothing was logged."""
    base = Path(run_dir) / "pods" / namespace / pod
    uid_dirs = sorted(base.glob("*/logs"), key=lambda p: p.stat().st_mtime) if base.exists() else []
    if not uid_dirs:
        return ""
    logs = uid_dirs[-1]
    if container is None:
        files = sorted(logs.glob("*.log"), key=lambda p: p.stat().st_mtime)
        if not files:
            return ""
        path = files[0]
    else:
        path = logs / f"{container}.log"
    return path.read_text(errors="replace") if path.exists() else ""


# ----------------------------------------------------------------------------
# image policy


def image_repository(image: str) -> str:
    """``repo/name:tag`` or ``repo/name@sha256:..`` -> ``repo/name``."""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image = image[: len(image) - len(last)] + last.split(":", 1)[0]
    return image


@dataclass
class ImagePolicy:
    local_markers: tuple[str, ...] = DEFAULT_LOCAL_IMAGE_MARKERS
    simulated_ready: frozenset[str] = frozenset()

    def decide(self, image: str) -> str:
        """'simulated', 'local' or 'unrunnable'."""
        if image in self.simulated_ready or image_repository(image) in self.simulated_ready:
            return "simulated"
        if any(marker in image for marker in self.local_markers) or images.is_known(image):
            return "local"
        return "unrunnable"

    @classmethod
    def from_configmap(cls, cm: dict | None) -> "ImagePolicy":
        data = (cm or {}).get("data") or {}
        lines = lambda key: tuple(x.strip() for x in data.get(key, "").splitlines() if x.strip())
        local = lines("localImages") or DEFAULT_LOCAL_IMAGE_MARKERS
        return cls(local_markers=local, simulated_ready=frozenset(lines("simulatedReadyImages")))


def unrunnable_message(image: str) -> str:
    return (f"image {image} cannot run on this machine (no container runtime: the test pod "
            f"runner runs only images matching its local-image rules; declare the image "
            f"simulated-ready to test only the reaction to it)")


# ----------------------------------------------------------------------------
# helpers on pod specs


class ConfigError(Exception):
    """The pod references something missing (kubelet: CreateContainerConfigError)."""


def _field_path_value(pod: dict, path: str) -> str:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP", ""),
        "status.podIPs": status.get("podIP", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.hostIPs": status.get("hostIP", ""),
    }
    if path in simple:
        return simple[path]
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ConfigError(f"unsupported fieldRef {path}")


def _resource_value(pod: dict, container_name: str | None, ref: dict, node_capacity: dict) -> str:
    from kubernetes.utils.quantity import parse_quantity

    containers = pod["spec"].get("containers", []) + pod["spec"].get("initContainers", [])
    name = ref.get("containerName") or container_name
    container = next((c for c in containers if c["name"] == name), None)
    if container is None:
        raise ConfigError(f"resourceFieldRef: no container {name}")
    kind, _, resource = ref["resource"].partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(resource)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(resource)
    if value is None:  # like the kubelet: an unset limit is the node's allocatable
        value = node_capacity.get(resource, "0")
    divisor = parse_quantity(ref.get("divisor", "1"))
    result = parse_quantity(value) / divisor
    return str(int(-(-result // 1)))  # ceil, as the kubelet does


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: ``$$`` escapes to ``$``; an unknown
    reference stays as written."""
    return _VAR_REF.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def _decode_secret(data: dict) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (data or {}).items()}


# ----------------------------------------------------------------------------
# per-pod mount namespace

# Sources live under the run dir (often in /tmp), and a pod may mount an
# emptyDir over /tmp or any other ancestor of them. So every source is first
# bind-mounted into a private tmpfs at a staging dir that no mountPath of the
# pod shadows, and the pod's mounts are made from there.
STAGE_CANDIDATES = ("/run/kubetune-pod-runner", "/var/lib/kubetune-pod-runner", "/opt/kubetune-pod-runner")


def _shadows(mount_path: str, path: str) -> bool:
    mount_path = mount_path.rstrip("/") or "/"
    return mount_path == "/" or path == mount_path or path.startswith(mount_path + "/")


def runtime_paths() -> list[Path]:
    """What a locally run container needs from the host: the Python environment
    and the repository its editable packages live in."""
    repo = Path(__file__).resolve().parents[2]
    return [Path(sys.prefix).resolve(), repo]


def _mount_script(mounts: list[tuple[Path, str, bool]], workdir: Path) -> list[str]:
    """Shell lines, run as root inside ``unshare -m``, that put each
    ``(source, mountPath, readOnly)`` in place and leave the default working
    directory's path in the shell variable ``KT_WORKDIR``."""
    stage = next((c for c in STAGE_CANDIDATES if not any(_shadows(m[1], c) for m in mounts)), None)
    if stage is None:
        raise ConfigError("volume mounts shadow every staging directory of the pod runner")
    os.makedirs(stage, exist_ok=True)
    q = shlex.quote
    lines = [f"mount -t tmpfs -o size=1m,mode=0755 kt-stage {q(stage)}",
             f"mkdir {q(stage)}/work", f"mount --bind {q(str(workdir))} {q(stage)}/work"]
    for i, (src, _, _) in enumerate(mounts):
        staged = f"{stage}/{i}"
        lines.append(f"mkdir {q(staged)}" if src.is_dir() else f": > {q(staged)}")
        lines.append(f"mount --bind {q(str(src))} {q(staged)}")
    for i, (src, dst, ro) in enumerate(mounts):
        if src.is_dir():
            lines.append(f"mkdir -p {q(dst)}")
        else:
            lines.append(f"[ -e {q(dst)} ] || {{ mkdir -p \"$(dirname {q(dst)})\"; : > {q(dst)}; }}")
        lines.append(f"mount --bind {q(f'{stage}/{i}')} {q(dst)}")
        if ro:
            lines.append(f"mount -o remount,bind,ro {q(dst)}")
    lines.append(f"KT_WORKDIR={q(stage)}/work")
    return lines


# ----------------------------------------------------------------------------
# per-container process


@dataclass
class ContainerRun:
    spec: dict
    init: bool
    decision: str = "local"
    proc: subprocess.Popen | None = None
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False
    started_at: str | None = None
    next_start: float = 0.0
    backoff: float = 1.0
    probe_successes: int = 0
    probe_failures: int = 0
    next_probe: float = 0.0

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def terminated(self) -> dict | None:
        return self.state.get("terminated")

    def status(self, pod_uid: str) -> dict:
        s = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": f"kubetune-pod-runner://{self.spec.get('image', '')}",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.running,
            "state": self.state,
        }
        if self.last_state:
            s["lastState"] = self.last_state
        if self.proc is not None or self.decision == "simulated":
            s["containerID"] = f"kubetune-pod-runner://{pod_uid}/{self.name}"
        return s


class PodWorker(threading.Thread):
    """Owns one pod from acceptance until its processes are gone."""

    def __init__(self, runner: "PodRunner", pod: dict, ip: str):
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.runner = runner
        self.pod = pod
        self.ip = ip
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.dir = runner.run_dir / "pods" / self.ns / self.name / self.uid
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.delete_requested = False
        self.force_killed = False
        self.phase = "Pending"
        self.start_time = now()
        self.initialized = False
        self.init_runs = [ContainerRun(c, True) for c in pod["spec"].get("initContainers", [])]
        self.runs = [ContainerRun(c, False) for c in pod["spec"]["containers"]]
        if self.init_runs:
            for run in self.runs:
                run.state = {"waiting": {"reason": "PodInitializing"}}
        self.last_patch: str | None = None
        self.finished = False
        self.next_image_retry = time.monotonic() + 2

    # -- events from the watch -------------------------------------------------
    def update(self, pod: dict) -> None:
        with self.lock:
            self.pod = pod
            if pod["metadata"].get("deletionTimestamp"):
                self.delete_requested = True
        self.wake.set()

    def kill_now(self) -> None:
        """The pod object is gone (force deletion): stop without grace."""
        self.force_killed = True
        self.delete_requested = True
        self.wake.set()

    # -- main loop -------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception as e:
            # Say so on the pod rather than leaving a stale status behind.
            log.exception("pod %s/%s: worker crashed", self.ns, self.name)
            self._kill_all(0)
            try:
                self.runner.api.merge_patch(
                    f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status",
                    {"status": {"phase": "Failed", "reason": "PodRunnerError",
                                "message": f"test pod runner error: {type(e).__name__}: {e}"[:1000]}})
            except Exception:
                pass
        finally:
            self.finished = True
            self.runner.worker_done(self)
            # A deletion that arrived while we were finishing: complete it here,
            # as no further watch event may come for it.
            if self.delete_requested and not self.force_killed:
                self._final_delete()

    def _run(self) -> None:
        for sub in ("logs", "term", "volumes", "work"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.runner.hosts.register(self)
        policy = self.runner.image_policy()
        for run in self.init_runs + self.runs:
            run.decision = policy.decide(run.spec.get("image", ""))
        self._patch_status()
        volumes = None
        while not self.delete_requested:
            try:
                volumes = self._prepare_volumes()
                break
            except ConfigError as e:
                # As a kubelet: a volume it cannot set up (a ConfigMap not created
                # yet) keeps the pod ContainerCreating until it can.
                self._set_waiting_all("ContainerCreating", f"MountVolume.SetUp failed: {e}")
                self._patch_status()
                self.wake.wait(1.0)
                self.wake.clear()
        restart_policy = self.pod["spec"].get("restartPolicy", "Always")

        # init containers, one after another
        for run in self.init_runs:
            while not self.delete_requested:
                self._retry_unrunnable_images()
                if self._step(run, volumes, restart_policy, init=True):
                    break
                self._patch_status()
                self.wake.wait(0.2)
                self.wake.clear()
            if self.phase == "Failed" or self.delete_requested:
                break
        if not self.delete_requested and self.phase != "Failed":
            self.initialized = True
            while not self.delete_requested:
                self._retry_unrunnable_images()
                done = [self._step(run, volumes, restart_policy, init=False) for run in self.runs]
                self._probe_all()
                self._update_phase(restart_policy)
                self._patch_status()
                if all(done) or self.phase in ("Succeeded", "Failed"):
                    break
                self.wake.wait(0.2)
                self.wake.clear()
        if self.delete_requested:
            self._terminate()
        self._patch_status()

    def _retry_unrunnable_images(self) -> None:
        """Like a kubelet retrying an image pull: every 2 s, look again whether
        an image was declared simulated-ready (or local) in the meantime."""
        pending = [r for r in self.init_runs + self.runs if r.decision == "unrunnable"]
        if not pending or time.monotonic() < self.next_image_retry:
            return
        self.next_image_retry = time.monotonic() + 2
        policy = self.runner.image_policy()
        for run in pending:
            run.decision = policy.decide(run.spec.get("image", ""))

    def _set_waiting_all(self, reason: str, message: str) -> None:
        for run in self.init_runs + self.runs:
            if not run.running and not run.terminated:
                run.state = {"waiting": {"reason": reason, "message": message}}

    # -- containers ------------------------------------------------------------
    def _step(self, run: ContainerRun, volumes, restart_policy: str, init: bool) -> bool:
        """Advance one container; True when it will not change any more
        (init: completed successfully; main: finished for good)."""
        if run.decision == "unrunnable":
            run.state = {"waiting": {"reason": "ErrImagePull",
                                     "message": unrunnable_message(run.spec.get("image", ""))}}
            return False
        if run.decision == "simulated":
            if not run.running:
                run.started_at = now()
                run.state = {"running": {"startedAt": run.started_at}}
                if init:  # a simulated init container completes at once
                    run.state = {"terminated": {"exitCode": 0, "reason": "Completed",
                                                "startedAt": run.started_at, "finishedAt": now()}}
                    return True
            return False
        if run.proc is None:
            if run.terminated:
                return True
            if time.monotonic() < run.next_start:
                return False
            try:
                self._start(run, volumes)
            except ConfigError as e:
                run.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
                run.next_start = time.monotonic() + 1
            return False
        code = run.proc.poll()
        if code is None:
            return False
        self._record_exit(run, code)
        # Always restarts everything; OnFailure restarts failures; init
        # containers of a restartable pod are retried until they succeed.
        again = (restart_policy == "Always" and not init) or (restart_policy != "Never" and code != 0)
        if again:
            run.last_state = {"terminated": run.state["terminated"]}
            run.restart_count += 1
            run.next_start = time.monotonic() + run.backoff
            run.state = {"waiting": {"reason": "CrashLoopBackOff",
                                     "message": f"back-off {run.backoff:.0f}s restarting failed container={run.name} pod={self.name}"}}
            run.backoff = min(run.backoff * 2, 10.0)
            return False
        if init and code != 0:
            self.phase = "Failed"
        return True

    def _record_exit(self, run: ContainerRun, code: int) -> None:
        run.proc = None
        run.ready = False
        if code < 0:  # killed by a signal: report 128+n like a container runtime
            code = 128 - code
        message = self._termination_message(run, code)
        term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "startedAt": run.started_at or now(), "finishedAt": now(),
                "containerID": f"kubetune-pod-runner://{self.uid}/{run.name}"}
        if message:
            term["message"] = message
        run.state = {"terminated": term}

    def _termination_message(self, run: ContainerRun, code: int) -> str:
        path = self.dir / "term" / run.name
        try:
            message = path.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode(errors="replace")
        except FileNotFoundError:
            message = ""
        if not message and code != 0 and run.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = (self.dir / "logs" / f"{run.name}.log").read_text(errors="replace").splitlines()
            message = "\n".join(lines[-FALLBACK_LOG_LINES:])[-2048:]
        return message

    def _start(self, run: ContainerRun, volumes: dict[str, Path]) -> None:
        spec = run.spec
        image = images.known_image(spec.get("image", ""))
        env = images.image_env(self._env(spec), image, {e["name"] for e in spec.get("env") or []})
        command, args = images.container_argv(spec, image)
        argv = [_expand(x, env) for x in command + args]
        if not command:
            raise ConfigError(f"container {run.name}: no command (the pod runner knows the entrypoint only of "
                              f"the images in tests/harness/images.py)")
        term_file = self.dir / "term" / run.name
        term_file.write_bytes(b"")
        mounts: list[tuple[Path, str, bool]] = []
        for vm in spec.get("volumeMounts") or []:
            src = volumes.get(vm["name"])
            if src is None:
                raise ConfigError(f"volume {vm['name']} not found")
            if vm.get("subPath"):
                src = src / vm["subPath"]
                if not src.exists():
                    src.mkdir(parents=True)
            mounts.append((src, vm["mountPath"], bool(vm.get("readOnly"))))
        mounts.append((term_file, spec.get("terminationMessagePath") or "/dev/termination-log", False))
        mounts.append((self.runner.hosts.path(self), "/etc/hosts", False))
        mounts.sort(key=lambda m: m[1].rstrip("/").count("/"))
        # The "image" here is the venv and the repo it runs from: like an image's
        # files, they must stay visible when a pod mounts over an ancestor (an
        # emptyDir over /tmp while the checkout lives under /tmp).
        mounts += [(path, str(path), True) for path in runtime_paths() + ([image.root] if image and image.root else [])
                   if any(_shadows(m[1], str(path)) for m in mounts)]
        lines = ['set -e', 'hostname "$KT_HOSTNAME"', *_mount_script(mounts, self.dir / "work")]
        if spec.get("workingDir"):
            lines.append(f"mkdir -p {shlex.quote(spec['workingDir'])} && cd {shlex.quote(spec['workingDir'])}")
        else:  # no image WORKDIR to fall back on: a per-pod scratch directory
            lines.append('cd "$KT_WORKDIR"')
        lines.append('unset KT_HOSTNAME; exec "$@"')
        host_env = {"KT_HOSTNAME": self._hostname()[:63]}
        log_path = self.dir / "logs" / f"{run.name}.log"
        with open(log_path, "ab") as out:
            if run.restart_count:
                out.write(f"--- restart {run.restart_count} at {now()} ---\n".encode())
                out.flush()
            run.proc = subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", "--",
                 "unshare", "-m", "-u", "--propagation", "private", "--",
                 "/bin/sh", "-c", "\n".join(lines), "kt-container", *argv],
                env={**env, **host_env}, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        run.started_at = now()
        run.state = {"running": {"startedAt": run.started_at}}
        run.probe_successes = run.probe_failures = 0
        probe = spec.get("readinessProbe")
        run.next_probe = time.monotonic() + (probe or {}).get("initialDelaySeconds", 0)
        run.ready = probe is None

    def _hostname(self) -> str:
        return self.pod["spec"].get("hostname") or self.name

    # -- environment -----------------------------------------------------------
    def _env(self, spec: dict) -> dict[str, str]:
        pod = self._pod_with_ip()
        env = {
            "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "HOSTNAME": self._hostname(),
            "KUBERNETES_SERVICE_HOST": self.runner.api_host,
            "KUBERNETES_SERVICE_PORT": str(self.runner.api_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.runner.api_port),
        }
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                ref = source["configMapRef"]
                data = self._get_object("configmaps", ref["name"], ref.get("optional"))
                for k, v in ((data or {}).get("data") or {}).items():
                    env[prefix + k] = v
            elif "secretRef" in source:
                ref = source["secretRef"]
                data = self._get_object("secrets", ref["name"], ref.get("optional"))
                for k, v in _decode_secret((data or {}).get("data")).items():
                    env[prefix + k] = v.decode(errors="replace")
        for item in spec.get("env") or []:
            name = item["name"]
            if "valueFrom" not in item:
                env[name] = _expand(item.get("value", ""), env)
                continue
            src = item["valueFrom"]
            if "fieldRef" in src:
                env[name] = _field_path_value(pod, src["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in src:
                env[name] = _resource_value(pod, spec["name"], src["resourceFieldRef"],
                                            self.runner.node_capacity)
            elif "configMapKeyRef" in src or "secretKeyRef" in src:
                secret = "secretKeyRef" in src
                ref = src["secretKeyRef" if secret else "configMapKeyRef"]
                obj = self._get_object("secrets" if secret else "configmaps", ref["name"], ref.get("optional"))
                if obj is None:
                    continue
                data = _decode_secret(obj.get("data")) if secret else {
                    **{k: v.encode() for k, v in (obj.get("data") or {}).items()}}
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    kind = "secret" if secret else "configmap"
                    raise ConfigError(f"couldn't find key {ref['key']} in {kind} {self.ns}/{ref['name']}")
                env[name] = data[ref["key"]].decode(errors="replace")
        return env

    def _pod_with_ip(self) -> dict:
        pod = json.loads(json.dumps(self.pod))
        pod.setdefault("status", {})["podIP"] = self.ip
        pod["status"]["hostIP"] = "127.0.0.1"
        return pod

    def _get_object(self, plural: str, name: str, optional: bool | None) -> dict | None:
        try:
            return self.runner.api.get(f"/api/v1/namespaces/{self.ns}/{plural}/{name}")
        except ApiError as e:
            if e.status == 404:
                if optional:
                    return None
                raise ConfigError(f'{plural[:-1]} "{name}" not found') from None
            raise

    # -- volumes ---------------------------------------------------------------
    def _prepare_volumes(self) -> dict[str, Path]:
        out: dict[str, Path] = {}
        pod = self._pod_with_ip()
        for vol in self.pod["spec"].get("volumes") or []:
            name = vol["name"]
            target = self.dir / "volumes" / name
            if "hostPath" in vol:
                out[name] = Path(vol["hostPath"]["path"])
                continue
            target.mkdir(parents=True, exist_ok=True)
            if "emptyDir" in vol:
                target.chmod(0o777)
            elif "configMap" in vol or "secret" in vol:
                self._write_keyed(target, vol, default_mode=None)
            elif "downwardAPI" in vol:
                mode = vol["downwardAPI"].get("defaultMode", 0o644)
                self._write_downward(target, vol["downwardAPI"].get("items") or [], pod, mode)
            elif "projected" in vol:
                mode = vol["projected"].get("defaultMode", 0o644)
                for source in vol["projected"].get("sources") or []:
                    if "serviceAccountToken" in source:
                        self._write_token(target, source["serviceAccountToken"], mode)
                    elif "downwardAPI" in source:
                        self._write_downward(target, source["downwardAPI"].get("items") or [], pod, mode)
                    else:
                        self._write_keyed(target, source, default_mode=mode)
            else:
                kinds = ", ".join(k for k in vol if k != "name")
                raise ConfigError(f"volume {name}: type {kinds} is not supported by the test pod runner")
            out[name] = target
        return out

    def _write_keyed(self, target: Path, source: dict, default_mode: int | None) -> None:
        secret = "secret" in source
        ref = source["secret" if secret else "configMap"]
        name = ref.get("secretName") if secret else ref.get("name")
        obj = self._get_object("secrets" if secret else "configmaps", name, ref.get("optional"))
        if obj is None:
            return
        if secret:
            data = _decode_secret(obj.get("data"))
        else:
            data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
            data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        mode = ref.get("defaultMode", default_mode if default_mode is not None else 0o644)
        items = ref.get("items")
        if items is None:
            items = [{"key": k, "path": k} for k in data]
        for item in items:
            if item["key"] not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(f"key {item['key']} not found in {'secret' if secret else 'configmap'} {name}")
            path = target / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data[item["key"]])
            path.chmod(item.get("mode", mode))

    def _write_downward(self, target: Path, items: list[dict], pod: dict, mode: int) -> None:
        for item in items:
            if "fieldRef" in item:
                value = _field_path_value(pod, item["fieldRef"]["fieldPath"])
            else:
                value = _resource_value(pod, None, item["resourceFieldRef"], self.runner.node_capacity)
            path = target / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value)
            path.chmod(item.get("mode", mode))

    def _write_token(self, target: Path, source: dict, mode: int) -> None:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
            "audiences": [source["audience"]] if source.get("audience") else [],
            "expirationSeconds": source.get("expirationSeconds", 3607),
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.name, "uid": self.uid}}}
        try:
            token = self.runner.api.request(
                "POST", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body)["status"]["token"]
        except ApiError as e:
            raise ConfigError(f"service account token for {sa}: {e.message}") from None
        path = target / source.get("path", "token")
        path.write_text(token)
        path.chmod(mode)

    # -- readiness -------------------------------------------------------------
    def _probe_all(self) -> None:
        for run in self.runs:
            if run.decision == "simulated":
                run.ready = run.running
                continue
            probe = run.spec.get("readinessProbe")
            if not run.running or probe is None or time.monotonic() < run.next_probe:
                continue
            run.next_probe = time.monotonic() + probe.get("periodSeconds", 10)
            ok = self._probe(run, probe)
            if ok:
                run.probe_successes += 1
                run.probe_failures = 0
                if run.probe_successes >= probe.get("successThreshold", 1):
                    run.ready = True
            else:
                run.probe_failures += 1
                run.probe_successes = 0
                if run.probe_failures >= probe.get("failureThreshold", 3):
                    run.ready = False

    def _probe(self, run: ContainerRun, probe: dict) -> bool:
        timeout = probe.get("timeoutSeconds", 1)

        def port_of(value) -> int:
            if isinstance(value, int) or str(value).isdigit():
                return int(value)
            for p in run.spec.get("ports") or []:
                if p.get("name") == value:
                    return int(p["containerPort"])
            raise ValueError(f"no port named {value}")

        try:
            if "httpGet" in probe:
                h = probe["httpGet"]
                url = f"{h.get('scheme', 'HTTP').lower()}://{h.get('host') or self.ip}:{port_of(h['port'])}{h.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=timeout) as r:
                    return 200 <= r.status < 400
            if "tcpSocket" in probe:
                t = probe["tcpSocket"]
                with socket.create_connection((t.get("host") or self.ip, port_of(t["port"])), timeout=timeout):
                    return True
            if "exec" in probe:
                return subprocess.run(probe["exec"]["command"], env=self._env(run.spec),
                                      timeout=timeout, capture_output=True).returncode == 0
        except Exception:
            return False
        return False

    # -- phase and status ------------------------------------------------------
    def _update_phase(self, restart_policy: str) -> None:
        if any(r.decision == "unrunnable" for r in self.runs):
            self.phase = "Pending"
            return
        states = [r.terminated for r in self.runs]
        if all(s is not None for s in states):
            if restart_policy == "Always":
                self.phase = "Running"
            else:
                self.phase = "Succeeded" if all(s["exitCode"] == 0 for s in states) else "Failed"
        elif any(r.running for r in self.runs) or any(s is not None for s in states) or \
                any(r.restart_count for r in self.runs):
            self.phase = "Running"

    def _conditions(self) -> list[dict]:
        all_ready = self.initialized and all(r.ready for r in self.runs) and self.phase == "Running"
        ours = {
            "PodReadyToStartContainers": True,
            "Initialized": self.initialized,
            "ContainersReady": all_ready,
            "Ready": all_ready,
        }
        previous = {c["type"]: c for c in (self.pod.get("status") or {}).get("conditions") or []}
        out = [c for t, c in previous.items() if t not in ours]
        for ctype, value in ours.items():
            status = "True" if value else "False"
            old = previous.get(ctype)
            cond = {"type": ctype, "status": status, "lastProbeTime": None,
                    "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == status
                    and old.get("lastTransitionTime") else now()}
            if ctype in ("ContainersReady", "Ready") and not value:
                cond["reason"] = "PodCompleted" if self.phase in ("Succeeded", "Failed") else "ContainersNotReady"
            if ctype == "Initialized" and not value:
                cond["reason"] = "ContainersNotInitialized"
            out.append(cond)
        return out

    def _patch_status(self) -> None:
        with self.lock:
            status = {
                "phase": self.phase,
                "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": self.ip, "podIPs": [{"ip": self.ip}],
                "startTime": self.start_time,
                "qosClass": (self.pod.get("status") or {}).get("qosClass", "BestEffort"),
                "conditions": self._conditions(),
                "containerStatuses": [r.status(self.uid) for r in self.runs],
            }
            if self.init_runs:
                status["initContainerStatuses"] = [r.status(self.uid) for r in self.init_runs]
        # Conditions keep their transition times: compare without them.
        key = json.dumps({**status, "conditions": [(c["type"], c["status"]) for c in status["conditions"]]},
                         sort_keys=True)
        if key == self.last_patch:
            return
        try:
            pod = self.runner.api.merge_patch(
                f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status", {"status": status})
            with self.lock:
                if pod["metadata"]["uid"] == self.uid:
                    self.pod = pod
            self.last_patch = key
        except ApiError as e:
            if e.status == 404:
                self.kill_now()
            else:
                log.warning("pod %s/%s: status patch failed: %s", self.ns, self.name, e)

    # -- termination -----------------------------------------------------------
    def _grace_seconds(self) -> float:
        if self.force_killed:
            return 0
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(grace)

    def _terminate(self) -> None:
        grace = self._grace_seconds()
        self._kill_all(max(grace - self._pre_stop(grace), 0))
        for run in self.init_runs + self.runs:
            if run.decision == "simulated" and run.running:
                run.state = {"terminated": {"exitCode": 0, "reason": "Completed",
                                            "startedAt": run.started_at, "finishedAt": now()}}
            elif not run.terminated and not run.running:
                pass  # never started: stays waiting
            run.ready = False
        if self.phase not in ("Succeeded", "Failed"):
            codes = [r.terminated["exitCode"] for r in self.runs if r.terminated]
            restart_policy = self.pod["spec"].get("restartPolicy", "Always")
            if codes and len(codes) == len(self.runs) and all(c == 0 for c in codes) and restart_policy != "Always":
                self.phase = "Succeeded"
            else:
                self.phase = "Failed"

    def _pre_stop(self, grace: float) -> float:
        """The containers' `lifecycle.preStop` `sleep` actions (what the kubelet
        runs before SIGTERM, within the grace period); the seconds spent.
        Exec and httpGet hooks are not supported."""
        pauses = [float(((r.spec.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0))
                  for r in self.runs if r.proc is not None and r.proc.poll() is None]
        pause = min(max(pauses, default=0.0), grace)
        if pause > 0:
            time.sleep(pause)
        return pause

    def _kill_all(self, grace: float) -> None:
        live = [r for r in self.init_runs + self.runs if r.proc is not None]
        for run in live:
            try:
                os.killpg(run.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while any(r.proc.poll() is None for r in live) and time.monotonic() < deadline:
            time.sleep(0.05)
        for run in live:
            try:
                os.killpg(run.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._record_exit(run, run.proc.wait())

    def _final_delete(self) -> None:
        if self.force_killed:
            return
        try:
            self.runner.api.request(
                "DELETE", f"/api/v1/namespaces/{self.ns}/pods/{self.name}",
                {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                 "preconditions": {"uid": self.uid}})
        except ApiError as e:
            if e.status not in (404, 409):
                log.warning("pod %s/%s: final delete failed: %s", self.ns, self.name, e)


# ----------------------------------------------------------------------------
# /etc/hosts per pod


class HostsFiles:
    """Each pod's /etc/hosts: itself plus every pod of its namespace that has a
    ``hostname`` and ``subdomain`` (the names a headless Service gives Indexed
    Job pods). Files are rewritten in place when a namespace's pods change, so
    peers that start later become resolvable in running pods (bind mounts see
    in-place writes)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_ns: dict[str, dict[str, PodWorker]] = {}

    def path(self, worker: PodWorker) -> Path:
        return worker.dir / "hosts"

    def register(self, worker: PodWorker) -> None:
        with self.lock:
            self.by_ns.setdefault(worker.ns, {})[worker.uid] = worker
            # Only a peer (a pod with a subdomain) appears in the others' files:
            # rewriting all of them for every pod made 500 pods cost 250,000 writes.
            self._rewrite(worker.ns, everyone=self._is_peer(worker), only=worker)

    def unregister(self, worker: PodWorker) -> None:
        with self.lock:
            self.by_ns.get(worker.ns, {}).pop(worker.uid, None)
            if self._is_peer(worker):
                self._rewrite(worker.ns, everyone=True)

    @staticmethod
    def _is_peer(w: PodWorker) -> bool:
        return bool(w.pod["spec"].get("subdomain"))

    @staticmethod
    def _names(w: PodWorker) -> list[str]:
        spec = w.pod["spec"]
        host = spec.get("hostname") or w.name
        sub = spec.get("subdomain")
        if sub:
            return [f"{host}.{sub}.{w.ns}.svc.cluster.local", f"{host}.{sub}.{w.ns}.svc", f"{host}.{sub}", host]
        return [host]

    def _rewrite(self, ns: str, everyone: bool, only: PodWorker | None = None) -> None:
        workers = list(self.by_ns.get(ns, {}).values())
        peers = [w for w in workers if self._is_peer(w)]
        for w in workers if everyone else [only]:
            lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                     f"{w.ip}\t{' '.join(self._names(w))}"]
            lines += [f"{p.ip}\t{' '.join(self._names(p))}" for p in peers if p is not w]
            path = self.path(w)
            path.parent.mkdir(parents=True, exist_ok=True)
            # In place (no rename): running containers see it through their bind mount.
            with open(path, "a+") as f:
                f.seek(0)
                f.truncate()
                f.write("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------
# the kubelet's log endpoint, so that `kubectl logs` works


class KubeletLogServer:
    """Serves ``GET /containerLogs/<ns>/<pod>/<container>`` (with ``tailLines``,
    ``limitBytes``, ``follow``) over TLS, which is what the API server calls
    for ``kubectl logs`` / ``read_namespaced_pod_log``. Nothing else of the
    kubelet API (exec, attach, port-forward) exists."""

    def __init__(self, runner: "PodRunner", port: int, cert: str, key: str):
        import http.server
        import ssl
        from urllib.parse import parse_qs, urlparse

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # keep the runner's log readable
                pass

            def do_GET(self):
                url = urlparse(self.path)
                parts = url.path.strip("/").split("/")
                if url.path == "/healthz":
                    return self._send(200, b"ok")
                if len(parts) != 4 or parts[0] != "containerLogs":
                    return self._send(404, b"not supported by the kubetune test pod runner\n")
                _, ns, pod, container = parts
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                path = runner.log_path(ns, pod, container)
                if path is None:
                    return self._send(404, f"no logs for {ns}/{pod}/{container}\n".encode())
                data = path.read_bytes()
                if "tailLines" in query:
                    lines = data.splitlines(keepends=True)
                    data = b"".join(lines[-int(query["tailLines"]):]) if int(query["tailLines"]) else b""
                if "limitBytes" in query:
                    data = data[: int(query["limitBytes"])]
                if query.get("follow") != "true":
                    return self._send(200, data)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                offset = path.stat().st_size
                try:
                    self._chunk(data)
                    while runner.container_running(ns, pod, container):
                        time.sleep(0.2)
                        with open(path, "rb") as f:
                            f.seek(offset)
                            more = f.read()
                        offset += len(more)
                        self._chunk(more)
                    with open(path, "rb") as f:
                        f.seek(offset)
                        self._chunk(f.read())
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _chunk(self, data: bytes) -> None:
                if data:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = port

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, name="kubelet-logs", daemon=True).start()


# ----------------------------------------------------------------------------
# the runner


class PodRunner:
    """Registers ``nodes`` and runs the pods the scheduler binds to them.

    ``run()`` blocks until ``stop()``; on stop every pod's processes are
    terminated (SIGTERM, then SIGKILL after 5 s)."""

    def __init__(self, kubeconfig: str, run_dir: Path, api_port: int, nodes: list[str],
                 node_capacity: dict | None = None, kubelet_port: int = 0,
                 tls_cert: str | None = None, tls_key: str | None = None, api_host: str = "127.0.0.1"):
        self.api = KubeApi(kubeconfig)
        self.run_dir = Path(run_dir)
        self.api_host = api_host
        self.api_port = api_port
        self.nodes = list(nodes)
        self.node_capacity = dict(node_capacity or DEFAULT_NODE_CAPACITY)
        self.hosts = HostsFiles()
        self.workers: dict[str, PodWorker] = {}  # uid -> worker
        self.done_uids: set[str] = set()
        self.ips_in_use: set[int] = set()
        # A random start keeps two harness clusters on one machine (two pytest
        # sessions) from handing out the same pod address at the same time.
        self.first_ip, self.last_ip, self.own_addresses = pod_network()
        self.next_ip = random.randint(self.first_ip, self.last_ip - 4096)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.log_server = (KubeletLogServer(self, kubelet_port, tls_cert, tls_key)
                           if kubelet_port and tls_cert and tls_key else None)

    # -- logs --------------------------------------------------------------------
    def log_path(self, ns: str, pod: str, container: str) -> Path | None:
        """The log file of the newest pod of that name (as container_log reads it)."""
        base = self.run_dir / "pods" / ns / pod
        candidates = sorted(base.glob(f"*/logs/{container}.log"), key=lambda p: p.stat().st_mtime)
        return candidates[-1] if candidates else None

    def container_running(self, ns: str, pod: str, container: str) -> bool:
        for worker in list(self.workers.values()):
            if worker.ns == ns and worker.name == pod and not worker.finished:
                return any(r.name == container and r.proc is not None for r in worker.init_runs + worker.runs)
        return False

    # -- nodes -----------------------------------------------------------------
    def register_nodes(self) -> None:
        for node in self.nodes:
            body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {
                "kubernetes.io/hostname": node, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "kubetune.io/pod-runner": "true"}}}
            try:
                self.api.request("POST", "/api/v1/nodes", body)
            except ApiError as e:
                if e.status != 409:
                    raise
        self.heartbeat()

    def heartbeat(self) -> None:
        stamp, micro = now(), now_micro()
        for node in self.nodes:
            conds = [{"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": m,
                      "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
                     for t, r, m in (("MemoryPressure", "SufficientMemory", "no memory pressure"),
                                     ("DiskPressure", "NoDiskPressure", "no disk pressure"),
                                     ("PIDPressure", "SufficientPID", "enough PIDs"))]
            conds.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                          "message": "kubetune test pod runner is posting ready status",
                          "lastHeartbeatTime": stamp, "lastTransitionTime": stamp})
            status = {"capacity": self.node_capacity, "allocatable": self.node_capacity,
                      "conditions": conds,
                      "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                    {"type": "Hostname", "address": node}],
                      "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_server.port if self.log_server else 0}},
                      "nodeInfo": {"machineID": node, "systemUUID": node, "bootID": node,
                                   "kernelVersion": os.uname().release, "osImage": "kubetune pod runner",
                                   "containerRuntimeVersion": "kubetune-pod-runner://local",
                                   "kubeletVersion": "v1.36.3", "kubeProxyVersion": "",
                                   "operatingSystem": "linux", "architecture": "amd64"}}
            try:
                # Keep lastTransitionTime stable once Ready: only send it on change.
                current = self.api.get(f"/api/v1/nodes/{node}")
                old = {c["type"]: c for c in (current.get("status") or {}).get("conditions") or []}
                for c in conds:
                    if c["type"] in old and old[c["type"]]["status"] == c["status"]:
                        c["lastTransitionTime"] = old[c["type"]]["lastTransitionTime"]
                self.api.merge_patch(f"/api/v1/nodes/{node}/status", {"status": status})
                self._renew_lease(node, micro)
            except Exception as e:  # the API may be restarting; try again next beat
                log.warning("heartbeat for %s failed: %s", node, e)

    def _renew_lease(self, node: str, micro: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
        spec = {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": micro}
        try:
            self.api.merge_patch(path, {"spec": spec})
        except ApiError as e:
            if e.status != 404:
                raise
            self.api.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                             {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                              "metadata": {"name": node}, "spec": spec})

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(5):
            self.heartbeat()

    # -- config ----------------------------------------------------------------
    def image_policy(self) -> ImagePolicy:
        try:
            cm = self.api.get(f"/api/v1/namespaces/{CONFIG_NAMESPACE}/configmaps/{CONFIG_NAME}")
        except ApiError as e:
            if e.status != 404:
                raise
            cm = None
        return ImagePolicy.from_configmap(cm)

    # -- pods ------------------------------------------------------------------
    def _allocate_ip(self) -> str:
        with self.lock:
            while self.next_ip in self.ips_in_use or (self.next_ip & 0xFF) in (0, 1, 255):
                self.next_ip = self.first_ip if self.next_ip >= self.last_ip else self.next_ip + 1
            ip = self.next_ip
            self.ips_in_use.add(ip)
            self.next_ip += 1
        if self.own_addresses:
            set_lo_address(_ip_text(ip), True)
        return _ip_text(ip)

    def _release_ip(self, ip: str) -> None:
        if self.own_addresses:
            set_lo_address(ip, False)
        with self.lock:
            self.ips_in_use.discard(int.from_bytes(socket.inet_aton(ip), "big"))

    def worker_done(self, worker: PodWorker) -> None:
        with self.lock:
            self.done_uids.add(worker.uid)

    def _handle(self, kind: str, pod: dict) -> None:
        if pod["spec"].get("nodeName") not in self.nodes:
            return
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker:
                if not worker.finished:
                    worker.kill_now()
                self.hosts.unregister(worker)
                self._release_ip(worker.ip)
                del self.workers[uid]
            return
        if worker:
            if worker.finished:
                if pod["metadata"].get("deletionTimestamp"):
                    worker._final_delete()
            else:
                worker.update(pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            if pod["metadata"].get("deletionTimestamp"):
                self._delete_now(pod)
            return
        if (pod.get("status") or {}).get("podIP"):
            # Started by an earlier runner whose processes died with it.
            self._fail_orphan(pod)
            return
        if pod["metadata"].get("deletionTimestamp"):
            self._delete_now(pod)
            return
        worker = PodWorker(self, pod, self._allocate_ip())
        self.workers[uid] = worker
        worker.start()

    def _delete_now(self, pod: dict) -> None:
        meta = pod["metadata"]
        try:
            self.api.request("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                             {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                              "preconditions": {"uid": meta["uid"]}})
        except ApiError as e:
            if e.status not in (404, 409):
                log.warning("delete %s/%s: %s", meta["namespace"], meta["name"], e)

    def _fail_orphan(self, pod: dict) -> None:
        meta = pod["metadata"]
        try:
            self.api.merge_patch(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                                 {"status": {"phase": "Failed", "reason": "PodRunnerRestarted",
                                             "message": "the test pod runner restarted; this pod's processes are gone"}})
        except ApiError as e:
            log.warning("orphan %s/%s: %s", meta["namespace"], meta["name"], e)

    def _watch_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                listing = self.api.get("/api/v1/pods")
                seen = set()
                for pod in listing["items"]:
                    seen.add(pod["metadata"]["uid"])
                    self._handle("MODIFIED", pod)
                for uid, worker in list(self.workers.items()):
                    if uid not in seen:
                        self._handle("DELETED", worker.pod)
                rv = listing["metadata"]["resourceVersion"]
                while not self.stopping.is_set():
                    for event in self.api.watch("/api/v1/pods", rv, timeout_seconds=120):
                        obj = event["object"]
                        rv = obj["metadata"].get("resourceVersion", rv)
                        if event["type"] != "BOOKMARK":
                            self._handle(event["type"], obj)
                        if self.stopping.is_set():
                            return
            except ApiError as e:
                if e.status != 410:
                    log.warning("pod watch: %s", e)
                    self.stopping.wait(1)
            except Exception as e:
                if self.stopping.is_set():
                    return
                log.warning("pod watch failed (%s); relisting", e)
                self.stopping.wait(1)

    def run(self) -> None:
        if self.log_server:
            self.log_server.start()
        self.register_nodes()
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        log.info("pod runner ready for nodes %s", ", ".join(self.nodes))
        self._watch_loop()

    def stop(self) -> None:
        self.stopping.set()
        for worker in list(self.workers.values()):
            if not worker.finished:
                worker._kill_all(5)
        for worker in list(self.workers.values()):
            self._release_ip(worker.ip)  # the pods' addresses leave lo with the runner


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.harness.podrunner")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--api-host", default="127.0.0.1")
    p.add_argument("--api-port", type=int, required=True)
    p.add_argument("--node", action="append", required=True)
    p.add_argument("--kubelet-port", type=int, default=0, help="serve container logs here (kubectl logs)")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("the pod runner needs root: it gives each pod a mount namespace (unshare -m) with bind mounts")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    runner = PodRunner(args.kubeconfig, args.run_dir, args.api_port, args.node,
                       kubelet_port=args.kubelet_port, tls_cert=args.tls_cert, tls_key=args.tls_key,
                       api_host=args.api_host)

    def on_signal(signum, frame):
        runner.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
