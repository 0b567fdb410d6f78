"""Writing a resource's status: what changed, as one merge patch, and an Event
per phase change. Shared by every controller."""

from __future__ import annotations

import logging
import threading
from typing import Callable

from ..k8s import Kube
from .merge_patch import apply_patch, status_patch
from .watches import Key

# (old phase, new phase, new status, is it the phase the status ends in?) -> (type, reason, message) or None
PhaseEvent = Callable[[str | None, str, dict, bool], tuple[str, str, str] | None]
log = logging.getLogger("kubetune.status")


class StatusWriter:
    """Remembers what it last wrote per resource, because the watch may lag our own
    writes: a pass reads `current()`, derives the new status, and `write()`s it."""

    def __init__(self, kube: Kube, kind: str, phase_event: PhaseEvent,
                 on_phase: Callable[[Key, str | None], None] = lambda key, phase: None,
                 on_written: Callable[[Key, dict], None] = lambda key, status: None):
        self.kube = kube
        self.kind = kind
        self.phase_event = phase_event
        self.on_phase = on_phase
        self.on_written = on_written
        self._lock = threading.Lock()
        self._written: dict[Key, tuple[str, dict]] = {}  # key -> (uid, status as stored)

    def current(self, key: Key, body: dict) -> dict:
        uid = body["metadata"].get("uid")
        with self._lock:
            written = self._written.get(key)
        if written and written[0] == uid:
            return written[1]
        return dict(body.get("status") or {})

    def forget(self, key: Key) -> None:
        with self._lock:
            self._written.pop(key, None)
        self.on_phase(key, None)

    def write(self, body: dict, old: dict, new: dict, logger: logging.Logger | logging.LoggerAdapter = log,
              via: str | None = None) -> dict:
        """Patch status with what changed; an Event on a phase change. `via`: a
        phase this one write skips (its Event is still posted, so the history
        stays whole). Returns the status as stored."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        patch = status_patch(old, new)
        if not patch:
            self.on_phase(key, old.get("phase"))
            return old
        self.kube.patch_status(self.kind, *key, patch)
        stored = apply_patch(old, patch)
        with self._lock:
            self._written[key] = (meta.get("uid"), stored)
        self.on_phase(key, stored.get("phase"))
        self.on_written(key, stored)
        self._post_phase_events(body, old.get("phase"), stored, via, logger)
        return stored

    def _post_phase_events(self, body: dict, before: str | None, stored: dict, via: str | None, logger) -> None:
        steps = [before, stored.get("phase", "")]
        if via and via not in steps:
            steps.insert(1, via)
        for old_phase, new_phase in zip(steps, steps[1:]):
            event = self.phase_event(old_phase, new_phase, stored, new_phase == steps[-1])
            if event:
                self.kube.event(body, *event)
                logger.info("phase %s -> %s", old_phase, new_phase)
