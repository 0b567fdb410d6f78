"""The operator's one Kubernetes client module: every API call the operator
makes itself (Kopf's own watching and metadata patches aside) goes through here.

Objects are plain dicts, paths are built from apiVersion/kind, and a token
bucket keeps the operator within its QPS/burst budget so that 500 jobs created
at once do not flood the API server.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import quote

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from . import metrics

log = logging.getLogger("kubetune.k8s")

COMPONENT = "kubetune-operator"
# Events waiting for the poster thread; past this many a new one is dropped (and logged).
EVENT_BACKLOG = 10_000

# kind -> (API prefix, plural)
RESOURCES = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Service": ("/api/v1", "services"),
    "Secret": ("/api/v1", "secrets"),
    "Pod": ("/api/v1", "pods"),
    "Event": ("/api/v1", "events"),
    "Job": ("/apis/batch/v1", "jobs"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "FineTuneJob": ("/apis/kubetune.io/v1alpha1", "finetunejobs"),
    "Workload": ("/apis/kueue.x-k8s.io/v1beta2", "workloads"),  # Kueue's (read for queued jobs' status)
    "FineTuneSweep": ("/apis/kubetune.io/v1alpha1", "finetunesweeps"),
}
# Errors that are part of normal flow, not API failures worth counting.
EXPECTED_STATUSES = {404, 409}


_PLURAL_KIND = {plural: kind for kind, (_, plural) in RESOURCES.items()}


def _kind_of(path: str) -> str:
    """The resource kind a request path is about (for the request counter)."""
    parts = path.split("/")
    if "namespaces" in parts:
        i = parts.index("namespaces") + 2
        if i < len(parts):
            return _PLURAL_KIND.get(parts[i], parts[i])
    return "other"


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status in (408, 429) or self.status >= 500 or self.status == 0

    @property
    def rbac_denied(self) -> bool:
        """The authorizer's 403 (`User "..." cannot create resource ...`), not
        a quota's or an admission plugin's: the caller's RBAC lacks a verb."""
        return self.status == 403 and " cannot " in self.message and "resource" in self.message


class RateLimiter:
    """Token bucket: `qps` tokens per second, at most `burst` saved up."""

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.qps = max(qps, 0.001)
        self.burst = max(burst, 1)
        self._clock, self._sleep = clock, sleep
        self._tokens = float(self.burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take a token, waiting for one if need be; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.qps)
            self._stamp = now
            self._tokens -= 1
            wait = -self._tokens / self.qps if self._tokens < 0 else 0.0
        if wait:
            self._sleep(wait)
        return wait


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube:
    """A thread-safe JSON client for the few calls the operator makes."""

    def __init__(self, api_client: k8s_client.ApiClient, qps: float = 50, burst: int = 100, fanout: int = 16):
        self.api = api_client
        self.limiter = RateLimiter(qps, burst)
        # Events are posted off the passes, by one thread with a budget of its own
        # (as client-go's event recorder does): a pass never waits for one, and a
        # burst's Events do not take the requests its creates and status writes need.
        self.event_limiter = RateLimiter(qps, burst)
        self._events: queue.Queue[dict] = queue.Queue(EVENT_BACKLOG)
        self._event_poster: threading.Thread | None = None
        self._event_poster_lock = threading.Lock()
        # For requests made side by side (one pass's creates); threads start as needed.
        self._fanout = ThreadPoolExecutor(max_workers=fanout, thread_name_prefix="kubetune-api")

    @classmethod
    def from_environment(cls, qps: float, burst: int, threads: int) -> "Kube":
        """In-cluster credentials when running in a pod, else $KUBECONFIG.
        `threads`: how many threads make requests at once."""
        configuration = k8s_client.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)
        # A connection for each request in flight: one from every worker thread
        # and one from each of the threads its creates fan out to. (A full pool
        # drops connections, and each new one costs a TLS handshake.)
        configuration.connection_pool_maxsize = 2 * threads
        return cls(k8s_client.ApiClient(configuration), qps, burst, fanout=threads)

    # ------------------------------------------------------------------ transport

    def request(self, method: str, path: str, body=None, *, query: dict | None = None, content_type: str | None = None,
                accept: str = "application/json", timeout: float = 30, limiter: RateLimiter | None = None) -> dict:
        waited = (limiter or self.limiter).acquire()
        if waited and limiter is None:
            metrics.CLIENT_THROTTLE.inc(waited)
        kind = _kind_of(path)
        metrics.API_REQUESTS.labels(kind=kind, verb=method).inc()
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        method, url, headers, body_out, _ = self.api.param_serialize(
            method=method, resource_path=path, query_params=list((query or {}).items()),
            header_params=headers, body=body, auth_settings=["BearerToken"],
        )
        started = time.perf_counter()
        try:
            response = self.api.call_api(method, url, header_params=headers, body=body_out, _request_timeout=timeout)
            data = response.read()
        except Exception as exc:  # connection refused, timeouts: all retryable
            metrics.API_ERRORS.inc()
            raise ApiError(0, type(exc).__name__, str(exc)) from None
        finally:
            metrics.API_REQUEST_DURATION.labels(kind=kind, verb=method).observe(time.perf_counter() - started)
        if response.status >= 400:
            try:
                payload = json.loads(data)
                reason, message = payload.get("reason", ""), payload.get("message", "")
            except ValueError:
                reason, message = response.reason or "", data[:500].decode("utf-8", "replace")
            if response.status not in EXPECTED_STATUSES:
                metrics.API_ERRORS.inc()
            raise ApiError(response.status, reason, message)
        return json.loads(data) if data else {}

    # ------------------------------------------------------------------ paths

    @staticmethod
    def path(kind: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        prefix, plural = RESOURCES[kind]
        out = f"{prefix}/namespaces/{quote(namespace)}/{plural}"
        if name:
            out += f"/{quote(name)}"
        if subresource:
            out += f"/{subresource}"
        return out

    # ------------------------------------------------------------------ verbs

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        try:
            return self.request("GET", self.path(kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def exists(self, kind: str, namespace: str, name: str) -> bool:
        """Existence only: asks for metadata, so a Secret's data never reaches us."""
        return self.metadata(kind, namespace, name) is not None

    def metadata(self, kind: str, namespace: str, name: str) -> dict | None:
        """An object's metadata alone (PartialObjectMetadata: a Secret's data never
        reaches us), or None when it does not exist."""
        try:
            found = self.request("GET", self.path(kind, namespace, name), accept="application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return found.get("metadata") or {}

    def create_if_absent(self, obj: dict) -> tuple[dict, bool]:
        """(the object as stored, created?). An existing object is returned as is:
        deterministic names make a retried or restarted reconcile a no-op."""
        meta = obj["metadata"]
        try:
            return self.request("POST", self.path(obj["kind"], meta["namespace"]), obj), True
        except ApiError as exc:
            if exc.status != 409:
                raise
        existing = self.get(obj["kind"], meta["namespace"], meta["name"])
        if existing is None:  # deleted in between: let the caller retry
            raise ApiError(409, "Conflict", f"{obj['kind']} {meta['name']} is being deleted")
        return existing, False

    def create_all_if_absent(self, objs: list[dict]) -> list[tuple[dict, bool] | ApiError]:
        """create_if_absent for each object, side by side: under load, a pass
        waits for one round trip instead of one per object. Each result is
        (stored, created) or the ApiError that object got."""
        def attempt(obj):
            try:
                return self.create_if_absent(obj)
            except ApiError as exc:
                return exc

        others = [self._fanout.submit(attempt, obj) for obj in objs[:-1]]
        mine = [attempt(obj) for obj in objs[-1:]]  # this thread makes one of the requests itself
        return [f.result() for f in others] + mine

    def delete(self, kind: str, namespace: str, name: str, uid: str) -> bool:
        """Delete the object of that name only while it is the one with `uid` (never
        a namesake made since). False when it is gone or another object by now."""
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}, "propagationPolicy": "Background"}
        try:
            self.request("DELETE", self.path(kind, namespace, name), options)
            return True
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise

    def merge_patch(self, kind: str, namespace: str, name: str, patch: dict, subresource: str | None = None) -> dict:
        return self.request("PATCH", self.path(kind, namespace, name, subresource), patch, content_type="application/merge-patch+json")

    def apply(self, obj: dict, field_manager: str = COMPONENT) -> dict:
        """Server-side apply: create or converge the fields this manager owns
        (fields it applied before and no longer sends are removed)."""
        meta = obj["metadata"]
        return self.request("PATCH", self.path(obj["kind"], meta["namespace"], meta["name"]), obj,
                            query={"fieldManager": field_manager, "force": "true"}, content_type="application/apply-patch+yaml")

    def list(self, kind: str, namespace: str, label_selector: str) -> list[dict]:
        return self.request("GET", self.path(kind, namespace), query={"labelSelector": label_selector}).get("items") or []

    def evict(self, namespace: str, name: str) -> bool:
        """Evict a pod (the Eviction API: graceful, honours PodDisruptionBudgets, and
        marks the pod DisruptionTarget). False when it is already gone."""
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
        try:
            self.request("POST", self.path("Pod", namespace, name, "eviction"), body)
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

    def patch_status(self, kind: str, namespace: str, name: str, status: dict) -> dict:
        return self.merge_patch(kind, namespace, name, {"status": status}, subresource="status")

    def event(self, owner: dict, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the FineTuneJob, handed to the poster thread: posting
        it never delays, and failing to post it never fails, a reconcile."""
        meta = owner["metadata"]
        stamp = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": owner.get("apiVersion", "kubetune.io/v1alpha1"), "kind": owner.get("kind", "FineTuneJob"),
                "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid"),
            },
            "type": type_, "reason": reason, "message": message[:1024],
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
            "source": {"component": COMPONENT},
            "reportingComponent": f"kubetune.io/{COMPONENT}", "reportingInstance": socket.gethostname()[:128],
        }
        try:
            self._events.put_nowait(event)
        except queue.Full:
            log.warning("dropped event %s on %s/%s: %d events wait to be posted", reason, meta["namespace"], meta["name"], EVENT_BACKLOG)
            return
        self._start_event_poster()

    def _start_event_poster(self) -> None:
        with self._event_poster_lock:
            if self._event_poster is None:
                self._event_poster = threading.Thread(target=self._post_events, name="kubetune-events", daemon=True)
                self._event_poster.start()

    def _post_events(self) -> None:
        while True:
            event = self._events.get()
            where = event["involvedObject"]
            try:
                self.request("POST", self.path("Event", where["namespace"]), event, limiter=self.event_limiter)
            except ApiError as exc:
                log.warning("could not post event %s on %s/%s: %s", event["reason"], where["namespace"], where["name"], exc)
            finally:
                self._events.task_done()

