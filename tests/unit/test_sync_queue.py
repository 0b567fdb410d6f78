"""SyncQueue: coalescing, one sync per key at a time, retry after a failure."""

from __future__ import annotations

import threading
import time

from kubetune_operator.sync_queue import SyncQueue
from tests.harness.waiting import wait_for


def test_a_burst_of_marks_costs_one_sync_per_key():
    calls: list[str] = []
    queue = SyncQueue(calls.append, window=0.2).start()
    try:
        for _ in range(50):
            queue.mark("a")
            queue.mark("b")
        wait_for(lambda: queue.pending() == 0 and len(calls) >= 2, timeout=5, what="syncs")
        time.sleep(0.3)
        assert sorted(calls) == ["a", "b"]
    finally:
        queue.stop()


def test_a_key_is_never_synced_twice_at_once_and_a_mark_during_a_sync_runs_after_it():
    active, overlaps, calls = set(), [], []
    release = threading.Event()

    def sync(key):
        if key in active:
            overlaps.append(key)
        active.add(key)
        calls.append(key)
        if len(calls) == 1:
            release.wait(5)
        active.discard(key)

    queue = SyncQueue(sync, window=0.01, workers=4).start()
    try:
        queue.mark("a")
        wait_for(lambda: calls, timeout=5, what="first sync")
        queue.mark("a")  # arrives while the first sync of "a" runs
        time.sleep(0.2)
        assert calls == ["a"], "a second sync of the same key started while the first ran"
        release.set()
        wait_for(lambda: len(calls) == 2, timeout=5, what="the second sync, after the first")
        assert overlaps == []
    finally:
        queue.stop()


def test_a_failed_sync_is_retried_after_the_delay():
    stamps: list[float] = []

    def sync(key):
        stamps.append(time.monotonic())
        if len(stamps) == 1:
            raise RuntimeError("API server unavailable")

    queue = SyncQueue(sync, window=0.01, retry_delay=0.5).start()
    try:
        queue.mark("a")
        wait_for(lambda: len(stamps) == 2, timeout=5, what="the retry")
        assert stamps[1] - stamps[0] >= 0.45
    finally:
        queue.stop()


def test_an_earlier_mark_is_not_postponed_by_a_later_one():
    calls: list[float] = []
    queue = SyncQueue(lambda key: calls.append(time.monotonic()), window=0.05).start()
    try:
        start = time.monotonic()
        queue.mark("a")
        queue.mark("a", delay=10)
        wait_for(lambda: calls, timeout=5, what="sync")
        assert calls[0] - start < 1
    finally:
        queue.stop()


def test_a_pass_that_asks_to_come_back_runs_again_after_its_delay():
    stamps: list[float] = []

    def sync(key):
        stamps.append(time.monotonic())
        return 0.3 if len(stamps) == 1 else None

    queue = SyncQueue(sync, window=0.01).start()
    try:
        queue.mark("a", delay=0)
        wait_for(lambda: len(stamps) == 2, timeout=5, what="the second pass")
        assert stamps[1] - stamps[0] >= 0.25
        time.sleep(0.5)
        assert len(stamps) == 2, "a pass that returned None was run again"
    finally:
        queue.stop()


def test_keys_run_in_order_of_their_due_time_and_a_discarded_key_not_at_all():
    calls: list[str] = []
    queue = SyncQueue(calls.append, window=0.01, workers=1)
    queue.mark("late", delay=0.4)
    queue.mark("gone", delay=0.1)
    queue.mark("soon", delay=0.2)
    queue.mark("now", delay=0)
    queue.discard("gone")
    queue.start()
    try:
        wait_for(lambda: len(calls) == 3, timeout=5, what="three passes")
        time.sleep(0.2)
        assert calls == ["now", "soon", "late"]
    finally:
        queue.stop()


def test_urgent_keys_go_first_but_an_ordinary_one_is_not_passed_over_for_long():
    calls: list[str] = []
    queue = SyncQueue(calls.append, window=0.01, workers=1, max_pass_over=0.5, pass_over_share=3)
    queue.mark("status", delay=0)
    for i in range(5):
        queue.mark(f"new-spec-{i}", delay=0.01 * i, urgent=True)
    queue.mark("status-due-long-ago", delay=-1)
    queue.mark("status-due-long-ago-too", delay=-0.9)
    time.sleep(0.1)  # everything is due before the worker starts
    queue.start()
    try:
        wait_for(lambda: len(calls) == 8, timeout=5, what="eight passes")
        # Every third pick goes to a status sync overdue by max_pass_over; one
        # due for less waits until no urgent key is left.
        assert calls == ["new-spec-0", "new-spec-1", "status-due-long-ago", "new-spec-2", "new-spec-3",
                         "status-due-long-ago-too", "new-spec-4", "status"]
    finally:
        queue.stop()


def test_status_syncs_wait_for_a_calm_moment_between_new_specs():
    calls: list[tuple[str, float]] = []
    queue = SyncQueue(lambda key: calls.append((key, time.monotonic())), window=0.01, workers=1, calm_after=0.3)
    queue.start()
    try:
        queue.mark("new-spec-a", delay=0, urgent=True)
        queue.mark("status", delay=0)
        time.sleep(0.1)  # the worker is idle now, and "status" is due: it still waits
        marked_b = time.monotonic()
        queue.mark("new-spec-b", delay=0, urgent=True)
        wait_for(lambda: len(calls) == 3, timeout=5, what="three passes")
        assert [key for key, _ in calls] == ["new-spec-a", "new-spec-b", "status"]
        assert calls[2][1] >= marked_b + 0.3
    finally:
        queue.stop()
