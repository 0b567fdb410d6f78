"""The controller runtime: what every controller shares.

- `queue.WorkQueue`: marks, workers, per-key backoff, permanent errors;
- `cache.ObjectCache`: lock-guarded snapshots of what the watches showed;
- `watches.Watch`: one declaration per watched kind (Kopf handlers, API-server
  label selector, cache entry);
- `status.StatusWriter`: status patches and phase Events;
- `kopf_setup`: Kopf's settings and handler registration;
- `Runtime` (here): the shared context in Kopf's memo, dispatching each queued
  key to its controller.

A controller is a class with a `name`, its `watches`, and three methods:
`on_event(watch, type, key, body)` (on Kopf's loop: mark what is due),
`work(key)` (in a worker thread: one pass; returns when to come back, or None)
and `on_permanent(key, error)` (record why retrying cannot help).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from .. import metrics
from ..k8s import Kube
from ..settings import Settings
from .cache import ObjectCache
from .errors import PermanentError
from .queue import WorkQueue
from .watches import Key, Watch

# Child events within this window cost one pass: a trainer pod's way from
# Pending to Running emits several, and each status write is a watch event too.
STATUS_SYNC_WINDOW = 0.5

__all__ = ["Controller", "Key", "ObjectCache", "PermanentError", "Runtime", "Watch", "WorkQueue"]


def _observe_wait(seconds: float, urgent: bool) -> None:
    metrics.QUEUE_WAIT.labels(urgent=str(urgent).lower()).observe(seconds)


class Controller(Protocol):
    name: ClassVar[str]
    watches: ClassVar[tuple[Watch, ...]]

    def __init__(self, runtime: "Runtime") -> None: ...
    def on_event(self, watch: Watch, event_type: str, key: Key, body: dict) -> None: ...
    def work(self, key: Key) -> float | None: ...
    def on_permanent(self, key: Key, error: PermanentError) -> None: ...


@dataclass
class Runtime:
    cfg: Settings
    kube: Kube
    cache: ObjectCache = field(default_factory=ObjectCache)
    queue: WorkQueue | None = None
    controllers: dict[str, Controller] = field(default_factory=dict)

    @classmethod
    def create(cls, cfg: Settings, kube: Kube, controllers: tuple[type[Controller], ...], **queue_options) -> "Runtime":
        """A runtime with its queue and controllers, not started (tests drain its queue by hand)."""
        runtime = cls(cfg, kube)
        # Queued keys are (controller, namespace, name): each namespace takes its turn.
        options = {"window": STATUS_SYNC_WINDOW, "calm_after": STATUS_SYNC_WINDOW, "workers": cfg.max_workers,
                   "group_of": lambda queued: queued[1], "on_wait": _observe_wait, **queue_options}
        runtime.queue = WorkQueue(runtime._work, on_permanent=runtime._permanent, **options)
        runtime.controllers = {c.name: c(runtime) for c in controllers}
        return runtime

    def mark(self, controller: str, key: Key, delay: float | None = None, urgent: bool = False) -> None:
        self.queue.mark((controller, *key), delay=delay, urgent=urgent)

    def discard(self, controller: str, key: Key) -> None:
        self.queue.discard((controller, *key))

    def on_event(self, watch: Watch, event_type: str, namespace: str, name: str, labels: dict, body) -> None:
        """A watch event, on Kopf's loop: the cache first, then the controllers."""
        key = watch.key_of(namespace, name, labels)
        if key is None:
            return
        if event_type == "DELETED":
            self.cache.drop(watch.kind, key, name)
        for controller in self.controllers.values():
            if watch in controller.watches:
                controller.on_event(watch, event_type, key, body)

    def index(self, watch: Watch, namespace: str, name: str, labels: dict, body) -> None:
        """Where Kopf indexes an object (before any handler sees its event), keep our snapshot."""
        key = watch.key_of(namespace, name, labels)
        if key is not None:
            self.cache.put(watch.kind, key, name, watch.keep(body))

    def _work(self, queued: tuple) -> float | None:
        controller, *key = queued
        return self.controllers[controller].work(tuple(key))

    def _permanent(self, queued: tuple, error: PermanentError) -> None:
        controller, *key = queued
        self.controllers[controller].on_permanent(tuple(key), error)
