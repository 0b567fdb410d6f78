"""A STAND-IN for worker nodes, for `make bench-operator` only: Node objects
whose pods succeed the moment they are bound, without running anything.

The operator benchmark applies 500 and 2000 FineTuneJobs whose trainer command
is `true`: it measures the operator, not containers. One real node on two
shared cores runs 110 pods at a time and would take the benchmark's CPU for
the better part of an hour starting and stopping them; a cluster running that
many jobs has as many kubelets elsewhere. So while it measures, the real node
is cordoned and these nodes take the pods: each bound pod gets the status a
kubelet reports for a container that exited 0 (phase Succeeded, reason
Completed), which is all the Job controller and the operator read of it. The
node Leases are renewed, so the node lifecycle controller sees healthy nodes.
Never used by the tests: every test pod runs on the real node.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

CAPACITY = {"cpu": "64", "memory": "256Gi", "pods": "2500", "ephemeral-storage": "500Gi", "nvidia.com/gpu": "8"}
LEASE_SECONDS = 40


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class InstantNodes:
    def __init__(self, raw, names: list[str]):
        self.raw, self.names = raw, names
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "InstantNodes":
        for name in self.names:
            self.raw.request("POST", "/api/v1/nodes", {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubetune.io/bench-stand-in": "true"}}})
            self.raw.request("PATCH", f"/api/v1/nodes/{name}/status", {"status": {
                "capacity": CAPACITY, "allocatable": CAPACITY,
                "conditions": [{"type": "Ready", "status": "True", "reason": "BenchStandIn", "message": "pods succeed at once",
                                "lastHeartbeatTime": _now(), "lastTransitionTime": _now()}]}},
                content_type="application/strategic-merge-patch+json")
            self._renew(name)
        for target in (self._leases, self._pods):
            thread = threading.Thread(target=target, daemon=True, name=f"instant-nodes-{target.__name__}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        for name in self.names:
            for path in (f"/api/v1/nodes/{name}", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"):
                try:
                    self.raw.request("DELETE", path)
                except Exception:  # noqa: BLE001 - gone already
                    pass

    def _renew(self, name: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        spec = {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": _now()}
        try:
            self.raw.merge_patch(path, {"spec": spec})
        except Exception:  # noqa: BLE001 - not there yet
            self.raw.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": spec})

    def _leases(self) -> None:
        while not self._stop.wait(10):
            for name in self.names:
                self._renew(name)

    def _pods(self) -> None:
        rv = self.raw.get("/api/v1/pods", limit="1")["metadata"]["resourceVersion"]
        for pod in self.raw.get("/api/v1/pods")["items"]:
            self._finish(pod)
        while not self._stop.is_set():
            try:
                for event in self.raw.watch("/api/v1/pods", rv, timeout_seconds=5):
                    obj = event.get("object") or {}
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._finish(obj)
                    if self._stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - a dropped or expired watch starts again from now
                rv = self.raw.get("/api/v1/pods", limit="1")["metadata"]["resourceVersion"]

    def _finish(self, pod: dict) -> None:
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        if spec.get("nodeName") not in self.names or status.get("phase") in ("Succeeded", "Failed"):
            return
        if pod["metadata"].get("deletionTimestamp"):
            return
        now = _now()
        terminated = {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}
        body = {"status": {
            "phase": "Succeeded", "startTime": now,
            "conditions": [{"type": t, "status": "False" if t in ("Ready", "ContainersReady") else "True",
                            "lastTransitionTime": now} for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "", "ready": False,
                                   "restartCount": 0, "started": False, "state": {"terminated": terminated}}
                                  for c in spec.get("containers") or []]}}
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        try:
            self.raw.merge_patch(f"/api/v1/namespaces/{ns}/pods/{name}/status", body)
        except Exception:  # noqa: BLE001 - deleted meanwhile
            pass


@contextmanager
def instant_nodes(raw, real_node: str, count: int = 2) -> Iterator[InstantNodes]:
    """The real node cordoned and `count` instant nodes taking the pods, until the block ends."""
    raw.merge_patch(f"/api/v1/nodes/{real_node}", {"spec": {"unschedulable": True}})
    nodes = InstantNodes(raw, [f"bench-instant-{i}" for i in range(count)]).start()
    try:
        yield nodes
    finally:
        nodes.stop()
        raw.merge_patch(f"/api/v1/nodes/{real_node}", {"spec": {"unschedulable": False}})
