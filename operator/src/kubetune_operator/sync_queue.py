"""Coalesced status syncs for FineTuneJobs whose children changed.

A trainer pod passes through five or six watch events on its way to
Succeeded, its Job through three or four. Syncing the owner's status once per
event, on Kopf's handler thread pool, makes a burst of 500 new jobs queue their
Job creation behind thousands of redundant syncs. Here a child event only marks
its owner as due; a few worker threads sync each due owner once per short
window, never the same owner twice at a time, and retry a failed sync later.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Hashable

log = logging.getLogger("kubetune.sync")


class SyncQueue:
    def __init__(self, sync: Callable[[Hashable], None], *, window: float = 0.05,
                 retry_delay: float = 5.0, workers: int = 4):
        self._sync = sync
        self.window = window
        self.retry_delay = retry_delay
        self._due: dict[Hashable, float] = {}  # key -> monotonic time it may run
        self._running: set[Hashable] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self._threads = [threading.Thread(target=self._loop, name=f"kubetune-sync-{i}", daemon=True)
                         for i in range(workers)]

    def start(self) -> "SyncQueue":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def mark(self, key: Hashable, delay: float | None = None) -> None:
        """Sync `key` after `delay` (default: the coalescing window), unless it is
        already due sooner."""
        due = time.monotonic() + (self.window if delay is None else delay)
        with self._cond:
            if self._due.get(key, float("inf")) <= due:
                return
            self._due[key] = due
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._due) + len(self._running)

    def _take(self) -> Hashable | None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                waiting = {k: t for k, t in self._due.items() if k not in self._running}
                ready = [k for k, t in waiting.items() if t <= now]
                if ready:
                    key = min(ready, key=waiting.__getitem__)
                    del self._due[key]
                    self._running.add(key)
                    return key
                soonest = min(waiting.values(), default=None)
                self._cond.wait(None if soonest is None else soonest - now)
            return None

    def _loop(self) -> None:
        while (key := self._take()) is not None:
            failed = False
            try:
                self._sync(key)
            except Exception:  # noqa: BLE001 - one job's failure must not stop the others' syncs
                log.exception("status sync of %s failed; retrying in %ss", key, self.retry_delay)
                failed = True
            finally:
                with self._cond:
                    self._running.discard(key)
                    self._cond.notify_all()
            if failed:
                self.mark(key, self.retry_delay)
