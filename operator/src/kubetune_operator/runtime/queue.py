"""The operator's work queue: resources due a pass, the workers that make them,
and what happens when a pass fails.

Every watch event only marks the key of the resource it concerns: urgent and at
once for a new spec, after a short window for a child's change. Workers take
due keys, urgent ones first, each level in order of due time. One key is never
worked on twice at once; marks that arrive while it is due or being worked on
cost one more pass, not one per event. A pass may ask to run again after a
delay (a Secret still missing, the next progress scrape).

A pass that raises is retried with per-key exponential backoff (reset by the
next pass that succeeds); one that raises `PermanentError` is not retried: the
queue hands the error to `on_permanent`, which records why in the resource's
conditions, and the key waits for its next mark (a spec change).

Why one queue and not one Kopf handler per event: a trainer pod passes through
five or six watch events on its way to Succeeded, its Job through three or
four; handling each made a burst of 500 new jobs queue their Job creation
behind thousands of redundant syncs (docs/operator.md).

Within a level, due keys are taken from their groups (the runtime's: the
namespace) in turn: one namespace's backlog of hundreds of new jobs delays
another namespace's next pass by at most one pass per namespace with due work,
not by its whole backlog (tests/unit/test_work_queue.py measures the bound).

Time comes from an injected `clock`; `drain()` runs every due pass in the
calling thread, so the scheduling rules are tested without threads or sleeps.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Hashable

from .errors import PermanentError

log = logging.getLogger("kubetune.queue")
Clock = Callable[[], float]


@dataclass(frozen=True)
class Backoff:
    """Delay before the n-th retry of a failing key: base * factor**(n-1), at most cap."""

    base: float = 1.0
    factor: float = 2.0
    cap: float = 60.0

    def delay(self, failures: int) -> float:
        return min(self.cap, self.base * self.factor ** max(failures - 1, 0))


def _after(group, last) -> bool:
    """Whether `group` comes after `last` in the groups' order (the turn goes on
    from where it was when the group served last has nothing due now)."""
    try:
        return last is not None and group > last
    except TypeError:
        return False


class WorkQueue:
    def __init__(self, work: Callable[[Hashable], float | None], *,
                 on_permanent: Callable[[Hashable, PermanentError], None] | None = None,
                 clock: Clock = time.monotonic, window: float = 0.05, backoff: Backoff = Backoff(),
                 workers: int = 4, max_pass_over: float = 5.0, pass_over_share: int = 4, calm_after: float = 0.0,
                 group_of: Callable[[Hashable], Hashable] = lambda key: None,
                 on_wait: Callable[[float, bool], None] = lambda seconds, urgent: None):
        """`work(key)` does one pass; it returns None, or the seconds after which
        the key wants another pass.

        Under a burst of new specs, children are created first and status
        follows, but never starves:
        - urgent marks (a new spec) run before due ordinary ones (a child changed);
        - ordinary ones wait until no urgent mark came for `calm_after` seconds,
          so a worker free for a moment between new specs does not spend the
          API server on a status write the next new spec waits for;
        - one due for `max_pass_over` seconds runs anyway, taking every
          `pass_over_share`-th pick while urgent ones wait (taking every overdue
          one first stalled a long burst behind hundreds of status syncs);
        - within a level, groups (`group_of`) take turns (see the module).
        `on_wait(seconds, urgent)` is told how long each key taken had been due."""
        self._work, self._on_permanent, self._on_wait = work, on_permanent, on_wait
        self.clock, self.window, self.backoff = clock, window, backoff
        self.max_pass_over = max_pass_over
        self.pass_over_share = max(pass_over_share, 1)
        self.calm_after = calm_after
        self._last_urgent = float("-inf")
        self._urgent_streak = 0  # urgent picks since an ordinary one was last taken
        self._due: dict[Hashable, tuple[float, bool]] = {}  # key -> (when it may run, urgent): the truth
        self._group_of = group_of
        # Per level, one heap per group; entries may be stale (marked again since) and are skipped when popped.
        self._heaps: dict[bool, dict[Hashable, list[tuple[float, int, Hashable]]]] = {True: {}, False: {}}
        self._served: dict[bool, Hashable] = {}  # per level, the group a key was last taken from
        self._order = itertools.count()
        self._running: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._threads = [threading.Thread(target=self._loop, name=f"kubetune-work-{i}", daemon=True) for i in range(workers)]

    # ------------------------------------------------------------------ marking

    def mark(self, key: Hashable, delay: float | None = None, urgent: bool = False) -> None:
        """Work on `key` after `delay` (default: the coalescing window), unless it
        is already due sooner (an urgent mark also makes a due key urgent)."""
        now = self.clock()
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
        """Forget a pending mark and the failure count (the resource is gone)."""
        with self._cond:
            self._due.pop(key, None)
            self._failures.pop(key, None)

    def pending(self) -> int:
        with self._cond:
            return len(self._due) + len(self._running)

    def failures(self, key: Hashable) -> int:
        """Passes of `key` that failed in a row (0 after one succeeds)."""
        with self._cond:
            return self._failures.get(key, 0)

    # ------------------------------------------------------------------ running

    def run(self, key: Hashable) -> None:
        """One pass over a key already taken: its outcome decides when it comes back."""
        again = None
        try:
            again = self._work(key)
        except PermanentError as exc:
            again = self._permanent(key, exc)
        except Exception:  # noqa: BLE001 - one resource's failure must not stop the others' work
            again = self._failed(key)
        else:
            self._succeeded(key)
        finally:
            self._finish(key)
        if again is not None:
            self.mark(key, again)

    def _succeeded(self, key: Hashable) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def _permanent(self, key: Hashable, exc: PermanentError) -> float | None:
        log.warning("%s: %s: %s (not retried until it changes)", key, exc.reason, exc.message)
        if self._on_permanent is not None:
            try:
                self._on_permanent(key, exc)
            except Exception:  # noqa: BLE001 - recording the refusal failed: the whole pass is retried
                return self._failed(key)
        self._succeeded(key)
        return None

    def _failed(self, key: Hashable) -> float:
        with self._cond:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = self.backoff.delay(failures)
        log.exception("work on %s failed (%d in a row); retrying in %.1fs", key, failures, delay)
        return delay

    def take(self) -> Hashable | None:
        """The key to work on now (marked running), or None."""
        with self._cond:
            pick, _ = self._pick(self.clock())
            return pick

    def drain(self) -> list[Hashable]:
        """Run every pass due by the clock, one after another in this thread; the keys run."""
        ran = []
        while (key := self.take()) is not None:
            ran.append(key)
            self.run(key)
        return ran

    def start(self) -> "WorkQueue":
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

    def _loop(self) -> None:
        while True:
            with self._cond:
                key = None
                while not self._stopped and key is None:
                    now = self.clock()
                    key, wake = self._pick(now)
                    if key is None:
                        self._cond.wait(None if wake is None else max(wake - now, 0.0))
                if self._stopped:
                    return
            self.run(key)

    # ------------------------------------------------------------------ scheduling (under the lock)

    def _push(self, key: Hashable) -> None:
        due, urgent = self._due[key]
        heapq.heappush(self._heaps[urgent].setdefault(self._group_of(key), []), (due, next(self._order), key))

    def _group_head(self, urgent: bool, group: Hashable) -> tuple[float, Hashable] | None:
        """A group's earliest live entry (stale ones dropped; an emptied group forgotten)."""
        heap = self._heaps[urgent][group]
        while heap:
            due, _, key = heap[0]
            if self._due.get(key) == (due, urgent) and key not in self._running:
                return due, key
            heapq.heappop(heap)  # stale: marked again since, or queued again when it finishes
        del self._heaps[urgent][group]
        return None

    def _head(self, urgent: bool, now: float) -> tuple[float, Hashable] | None:
        """The level's entry to take next: of the groups with a due entry, the
        first one after the group served last (in turn); else the earliest entry."""
        heads = [(group, head) for group in list(self._heaps[urgent]) if (head := self._group_head(urgent, group)) is not None]
        due = [(group, head) for group, head in heads if head[0] <= now]
        if not due:
            return min((head for _, head in heads), key=lambda h: h[0], default=None)
        groups = [group for group, _ in due]
        last = self._served.get(urgent)
        after = groups.index(last) + 1 if last in groups else next((i for i, g in enumerate(groups) if _after(g, last)), 0)
        return due[after % len(due)][1]

    def _pick(self, now: float) -> tuple[Hashable | None, float | None]:
        """(the key taken now, or None; when to look again)."""
        urgent, ordinary = self._head(True, now), self._head(False, now)
        head, wake = self._choose(now, urgent, ordinary)
        if head is None:
            return None, wake
        self._urgent_streak = self._urgent_streak + 1 if head is urgent else 0
        level, key = head is urgent, head[1]
        self._on_wait(max(now - head[0], 0.0), level)
        group = self._group_of(key)
        heapq.heappop(self._heaps[level][group])  # the group's head is this entry
        self._served[level] = group
        del self._due[key]
        self._running.add(key)
        return key, None

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
