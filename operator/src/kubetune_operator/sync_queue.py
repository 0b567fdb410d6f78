"""The operator's work queue: FineTuneJobs due a reconcile or a status sync.

Every watch event (of a FineTuneJob or of one of its children) only marks its
FineTuneJob due: urgent and at once for a new spec, after a short window for a
child's change. Worker threads take due jobs, urgent ones first, each level in
order of due time. The same job is never worked on twice at once, marks that
arrive while it is due or being worked on cost one more pass, not one per
event, and a failed pass is retried later. A pass may ask to be run again after a delay (a Secret still
missing, the next progress scrape).

Why not one Kopf handler per event: a trainer pod passes through five or six
watch events on its way to Succeeded, its Job through three or four. Handling
each, on Kopf's handler pool, made a burst of 500 new jobs queue their Job
creation behind thousands of redundant syncs.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Callable, Hashable

log = logging.getLogger("kubetune.sync")


class SyncQueue:
    def __init__(self, sync: Callable[[Hashable], float | None], *, window: float = 0.05,
                 retry_delay: float = 5.0, workers: int = 4, max_pass_over: float = 5.0, pass_over_share: int = 4,
                 calm_after: float = 0.0):
        """`sync(key)` does one pass; it returns None, or the seconds after which
        the key wants another pass.

        Under a burst of new jobs, Jobs are created first and status follows,
        but never starves:
        - urgent marks (a new spec) run before due ordinary ones (a child changed);
        - ordinary ones wait until no urgent mark came for `calm_after` seconds,
          so a worker that is free for a moment between new specs does not
          spend the API server on a status write the next new spec waits for;
        - one due for `max_pass_over` seconds runs anyway, taking every
          `pass_over_share`-th pick while urgent ones wait. (Taking every
          overdue one first made a burst longer than `max_pass_over` stall its
          Job creation behind hundreds of status syncs at once.)"""
        self._sync = sync
        self.window = window
        self.retry_delay = retry_delay
        self.max_pass_over = max_pass_over
        self.pass_over_share = max(pass_over_share, 1)
        self.calm_after = calm_after
        self._last_urgent = float("-inf")  # when the last urgent mark came
        self._urgent_streak = 0  # urgent picks since an ordinary one was last taken
        self._due: dict[Hashable, tuple[float, bool]] = {}  # key -> (when it may run, urgent): the truth
        # One heap per level; entries may be stale (marked again since) and are skipped when popped.
        self._heaps: dict[bool, list[tuple[float, int, Hashable]]] = {True: [], False: []}
        self._order = itertools.count()
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

    def mark(self, key: Hashable, delay: float | None = None, urgent: bool = False) -> None:
        """Work on `key` after `delay` (default: the coalescing window), unless it
        is already due sooner (an urgent mark also makes a due key urgent)."""
        now = time.monotonic()
        due = now + (self.window if delay is None else delay)
        with self._cond:
            if urgent:
                self._last_urgent = now
            current = self._due.get(key)
            if current is not None:
                due, urgent = min(due, current[0]), urgent or current[1]
                if (due, urgent) == current:
                    return
            self._due[key] = (due, urgent)
            if key not in self._running:  # a running key is queued again when it finishes
                self._push(key)
                self._cond.notify()

    def discard(self, key: Hashable) -> None:
        """Forget a pending mark (the job is gone)."""
        with self._cond:
            self._due.pop(key, None)

    def pending(self) -> int:
        with self._cond:
            return len(self._due) + len(self._running)

    def _push(self, key: Hashable) -> None:
        due, urgent = self._due[key]
        heapq.heappush(self._heaps[urgent], (due, next(self._order), key))

    def _head(self, urgent: bool) -> tuple[float, Hashable] | None:
        """The level's earliest live entry (stale ones dropped)."""
        heap = self._heaps[urgent]
        while heap:
            due, _, key = heap[0]
            if self._due.get(key) == (due, urgent) and key not in self._running:
                return due, key
            heapq.heappop(heap)  # stale: marked again since, or queued again when it finishes
        return None

    def _take(self) -> Hashable | None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                urgent, ordinary = self._head(True), self._head(False)
                pick, wake = self._choose(now, urgent, ordinary)
                if pick is not None:
                    key = pick[1]
                    self._urgent_streak = self._urgent_streak + 1 if pick is urgent else 0
                    heapq.heappop(self._heaps[pick is urgent])
                    del self._due[key]
                    self._running.add(key)
                    return key
                self._cond.wait(None if wake is None else max(wake - now, 0.0))
            return None

    def _choose(self, now: float, urgent, ordinary):
        """(the head to take now or None, when to look again or None)."""
        urgent_ready = urgent is not None and urgent[0] <= now
        if ordinary is not None:
            overdue_at = ordinary[0] + self.max_pass_over
            allowed_at = min(max(ordinary[0], self._last_urgent + self.calm_after), overdue_at)
            if allowed_at <= now and (not urgent_ready or (
                    overdue_at <= now and self._urgent_streak >= self.pass_over_share - 1)):
                return ordinary, None
        if urgent_ready:
            return urgent, None
        times = [urgent[0]] if urgent is not None else []
        if ordinary is not None:
            times.append(allowed_at)
        return None, min(times, default=None)

    def _finish(self, key: Hashable) -> None:
        with self._cond:
            self._running.discard(key)
            if key in self._due:
                self._push(key)
            self._cond.notify_all()

    def _loop(self) -> None:
        while (key := self._take()) is not None:
            again = None
            try:
                again = self._sync(key)
            except Exception:  # noqa: BLE001 - one job's failure must not stop the others' work
                log.exception("work on %s failed; retrying in %ss", key, self.retry_delay)
                again = self.retry_delay
            finally:
                self._finish(key)
            if again is not None:
                self.mark(key, again)
