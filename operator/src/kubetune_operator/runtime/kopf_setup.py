"""Kopf's side of the runtime: its settings, and the handlers each `Watch` needs.

Kopf watches (with peering, so one replica works and the other stands by) and
calls, for every event, first our indexer (which writes the cache) and then our
event handler (which marks what is due). Indexers are used because Kopf runs no
handler until every index has seen its initial listing: after a restart, a job
is never judged before its Job and pods are in the cache. They return None, so
Kopf's own index stays empty; the cache is ours, read under a lock.

Kopf's on.create/on.update and timers are not used: they cost each resource a
bookkeeping PATCH, the watch events that PATCH causes, and a deep copy of every
watched body (docs/operator.md).
"""

from __future__ import annotations

import gc
import logging
import random

import kopf

from ..settings import Settings
from .watches import Watch

FINALIZER = "kubetune.io/finalizer"
# Python's cyclic GC runs after this many container allocations (default 700).
# Every watch event decodes a body into hundreds of short-lived dicts and lists
# that reference counting frees anyway (measurements: docs/operator.md).
GC_ALLOCATIONS = 50_000
log = logging.getLogger("kubetune.kopf")


class _NoDiffBase(kopf.DiffBaseStorage):
    """No handler here asks Kopf what changed in an object, so Kopf need not
    deep-copy every body it sees to find out, nor keep a copy in an annotation."""

    def build(self, *, body, extra_fields=None):
        return kopf.BodyEssence()

    def fetch(self, *, body):
        return None

    def store(self, *, body, patch, essence) -> None:
        pass


def configure(settings: kopf.OperatorSettings, cfg: Settings, watches: tuple[Watch, ...]) -> None:
    # No handler needs a finalizer (deletion is never blocked by the operator);
    # one left by an older version is removed by Kopf under this name.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.diffbase_storage = _NoDiffBase()
    # The status subresource is structural: whatever Kopf keeps, it keeps in our
    # annotations, never in status.kopf.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubetune.io")
    # We post our own Events on phase changes; Kopf posts only its warnings/errors.
    settings.posting.level = logging.WARNING
    # Two replicas with the same priority would both pause: pick one at random
    # unless the deployment pins it. The higher one works, the other stands by.
    settings.peering.name = settings.peering.name if settings.peering.mandatory else cfg.peering_name
    settings.peering.priority = cfg.peering_priority if cfg.peering_priority is not None else random.randint(1, 1_000_000)
    filter_server_side(settings, watches)
    observe_cluster(settings, cfg)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    tune_gc()


def observe_cluster(settings: kopf.OperatorSettings, cfg: Settings) -> None:
    """Kopf lists namespaces and watches CRDs cluster-wide unless told not to.
    A namespaced install (KUBETUNE_WATCH_NAMESPACES, the chart's namespaced
    scope) is granted nothing cluster-wide: Kopf retried each 403 nine times,
    and served no namespace for the ~50 s that took. It serves exactly the
    namespaces it was given, and the CRDs found at startup (a changed CRD is
    served from the operator's next restart)."""
    settings.scanning.disabled = bool(cfg.watched_namespaces)


def filter_server_side(settings: kopf.OperatorSettings, watches: tuple[Watch, ...]) -> None:
    """Have the API server filter labelled watches: Kopf applies a handler's
    `labels=` after each event arrived, so without this every pod, Job and
    Deployment event of the watched namespaces would be sent, decoded and dropped.
    One Kopf watch serves every handler of a resource, so a resource is filtered
    only when one selector covers all its watches (`shared_selector`)."""
    by_resource: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for watch in watches:
        by_resource.setdefault((watch.group, watch.version, watch.plural), []).append(dict(watch.labels))
    for resource, wanted in by_resource.items():
        selector = shared_selector(wanted)
        if selector:
            settings.watching.label_selectors[resource] = selector


def shared_selector(wanted: list[dict[str, str]]) -> str | None:
    """One label selector selecting exactly what each of `wanted` selects, or None:
    all the same labels, or the same keys with values differing in one key
    (trainer and serving pods: `app.kubernetes.io/name in (a,b)`)."""
    if not wanted or any(not labels for labels in wanted):
        return None
    keys = set(wanted[0])
    if any(set(labels) != keys for labels in wanted):
        return None
    varying = [key for key in keys if len({labels[key] for labels in wanted}) > 1]
    if len(varying) > 1:
        return None
    parts = []
    for key in wanted[0]:
        values = sorted({labels[key] for labels in wanted})
        parts.append(f"{key}={values[0]}" if len(values) == 1 else f"{key} in ({','.join(values)})")
    return ",".join(parts)


def tune_gc() -> None:
    """What is loaded by now lives as long as the process: freezing it keeps every
    later full collection from walking it again."""
    gc.collect()
    gc.freeze()
    _, younger, older = gc.get_threshold()
    gc.set_threshold(GC_ALLOCATIONS, younger, older)


def register(watch: Watch) -> None:
    """The two Kopf handlers of one watch; they find the runtime in Kopf's memo."""
    labels = watch.labels or None

    # Async only to run on Kopf's event loop: a sync handler is sent to a thread
    # for every event, which costs more than the handler itself.
    async def index(namespace, name, labels, body, memo, **_):
        memo.runtime.index(watch, namespace, name, labels, body)
        return None  # Kopf's own index stays empty; the cache holds the snapshot

    async def event(type, namespace, name, labels, body, memo, **_):
        memo.runtime.on_event(watch, type, namespace, name, labels, body)

    kopf.index(watch.group, watch.version, watch.plural, labels=labels, id=f"cache-{watch.kind}")(index)
    kopf.on.event(watch.group, watch.version, watch.plural, labels=labels, id=f"watch-{watch.kind}")(event)
