"""A periodic resync of the watch cache against the API server.

Kopf keeps each watch going across disconnects; when the API server says a
watch's resourceVersion is too old (410 Gone), Kopf lists again and carries
on, and an object deleted in between never gets a DELETED event: without a
resync it would stay in the cache, a ghost the controllers go on acting for.
So every `KUBETUNE_RESYNC_INTERVAL` seconds each watched kind is listed (its
label selector, metadata only, paged) and what the cache held before the
listing, still holds unchanged, and the API server no longer has is dropped
and handed to the controllers as DELETED. An object that changed or appeared
meanwhile is left alone: its own watch event is newer than the listing.
"""

from __future__ import annotations

import logging
import threading

from .watches import Watch

log = logging.getLogger("kubetune.resync")
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
PAGE = 500


def _path(watch: Watch, namespace: str | None) -> str:
    prefix = f"/apis/{watch.group}/{watch.version}" if watch.group else f"/api/{watch.version}"
    return f"{prefix}/namespaces/{namespace}/{watch.plural}" if namespace else f"{prefix}/{watch.plural}"


def listed(kube, watch: Watch, namespaces: tuple[str, ...]) -> set[tuple]:
    """(owner key, name) of every object of the watch the API server has now."""
    out = set()
    for namespace in namespaces or (None,):
        token = None
        while True:
            query = {"labelSelector": watch.selector, "limit": str(PAGE), **({"continue": token} if token else {})}
            page = kube.request("GET", _path(watch, namespace), query={k: v for k, v in query.items() if v}, accept=METADATA_LIST)
            for item in page.get("items") or []:
                meta = item.get("metadata") or {}
                key = watch.key_of(meta.get("namespace"), meta.get("name"), meta.get("labels") or {})
                if key is not None:
                    out.add((key, meta.get("name")))
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
    return out


def resync(runtime, watches: tuple[Watch, ...], namespaces: tuple[str, ...] = ()) -> list[tuple[str, tuple, str]]:
    """One resync of every watch; returns (kind, key, name) of each ghost dropped."""
    dropped = []
    for watch in watches:
        before = runtime.cache.entries(watch.kind)
        present = listed(runtime.kube, watch, namespaces)
        for key, name, body in before:
            if (key, name) in present or runtime.cache.get(watch.kind, key, name) is not body:
                continue
            meta = body.get("metadata") or {}
            runtime.on_event(watch, "DELETED", key[0], name, meta.get("labels") or {}, body)
            dropped.append((watch.kind, key, name))
    if dropped:
        log.info("resync dropped %d objects deleted while a watch relisted: %s", len(dropped),
                 ", ".join(f"{kind} {key[0]}/{name}" for kind, key, name in dropped[:10]))
    return dropped


def start(runtime, watches: tuple[Watch, ...], namespaces: tuple[str, ...], interval: float) -> threading.Event:
    """Resync every `interval` seconds on a thread of its own; set the returned event to stop."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                resync(runtime, watches, namespaces)
            except Exception:  # noqa: BLE001 - the next interval tries again
                log.exception("resync failed")

    threading.Thread(target=loop, name="kubetune-resync", daemon=True).start()
    return stop
