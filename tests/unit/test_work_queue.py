"""WorkQueue: coalescing, one pass per key at a time, due-time order, urgent
first without starving status syncs, per-key backoff and permanent errors.
Time is a fake clock and passes run in the test's thread (`drain`): nothing
here sleeps."""

from __future__ import annotations

import threading

import pytest

from kubetune_operator.runtime.errors import PermanentError
from kubetune_operator.runtime.queue import Backoff, WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_burst_of_marks_costs_one_pass_per_key(clock):
    calls: list[str] = []
    queue = WorkQueue(calls.append, clock=clock, window=0.2)
    for _ in range(50):
        queue.mark("a")
        queue.mark("b")
    assert queue.drain() == []  # the window has not passed
    clock.advance(0.2)
    assert sorted(queue.drain()) == ["a", "b"]
    clock.advance(10)
    assert queue.drain() == [] and sorted(calls) == ["a", "b"] and queue.pending() == 0


def test_a_key_being_worked_on_is_not_taken_again_and_a_mark_meanwhile_runs_after_it(clock):
    queue = WorkQueue(lambda key: None, clock=clock, window=0.0)
    queue.mark("a")
    assert queue.take() == "a"
    queue.mark("a")  # arrives while the first pass runs
    assert queue.take() is None, "a second pass of the same key was handed out while the first ran"
    queue.run("a")  # the first pass ends
    assert queue.take() == "a"


def test_threaded_workers_never_run_one_key_twice_at_once():
    active, overlaps, passes = set(), [], []
    lock, first_running, release, second_done = threading.Lock(), threading.Event(), threading.Event(), threading.Event()

    def work(key):
        with lock:
            if key in active:
                overlaps.append(key)
            active.add(key)
            passes.append(key)
        if len(passes) == 1:
            first_running.set()
            release.wait(5)
        with lock:
            active.discard(key)
        if len(passes) == 2:
            second_done.set()

    queue = WorkQueue(work, window=0.0, workers=4).start()
    try:
        queue.mark("a")
        assert first_running.wait(5)
        for _ in range(20):
            queue.mark("a")  # while the first pass runs, on four idle workers
        release.set()
        assert second_done.wait(5)
        assert overlaps == [] and passes == ["a", "a"]
    finally:
        queue.stop()


def test_a_success_resets_the_backoff(clock):
    outcomes = ["fail", "fail", "ok", "fail"]

    def work(key):
        if outcomes.pop(0) == "fail":
            raise RuntimeError("API server unavailable")
        return 1.0  # come back in a second

    queue = WorkQueue(work, clock=clock, window=0.0, backoff=Backoff(base=1.0, factor=4.0, cap=60.0))
    queue.mark("a")
    queue.drain()
    clock.advance(1.0)
    queue.drain()  # the second failure: next retry in 4 s
    clock.advance(4.0)
    queue.drain()  # success
    assert queue.failures("a") == 0
    clock.advance(1.0)
    queue.drain()  # fails again: back to the base delay, not 16 s
    assert queue.failures("a") == 1
    clock.advance(1.0)
    assert queue.drain() == ["a"]


def test_retry_delays_follow_the_backoff(clock):
    failures = {"n": 0}

    def work(key):
        if failures["n"] < 4:
            failures["n"] += 1
            raise RuntimeError("down")

    queue = WorkQueue(work, clock=clock, window=0.0, backoff=Backoff(base=1.0, factor=2.0, cap=5.0))
    queue.mark("a")
    assert queue.drain() == ["a"] and queue.failures("a") == 1
    for delay, failures_after in ((1.0, 2), (2.0, 3), (4.0, 4), (5.0, 0)):  # 8 capped at 5; the 5th pass succeeds
        clock.advance(delay - 0.01)
        assert queue.drain() == [], f"retried before {delay}s"
        clock.advance(0.01)
        assert queue.drain() == ["a"]
        assert queue.failures("a") == failures_after
    clock.advance(100)
    assert queue.drain() == [], "a pass that succeeded was retried"


def test_a_permanent_error_is_recorded_once_and_not_retried(clock):
    recorded = []

    def work(key):
        raise PermanentError("InvalidSpec", "spec.lora.r: must be >= 1")

    queue = WorkQueue(work, on_permanent=lambda key, exc: recorded.append((key, exc.reason, exc.message)), clock=clock, window=0.0)
    queue.mark("a")
    assert queue.drain() == ["a"]
    clock.advance(3600)
    assert queue.drain() == []
    assert recorded == [("a", "InvalidSpec", "spec.lora.r: must be >= 1")] and queue.failures("a") == 0
    queue.mark("a")  # the spec changed
    assert queue.drain() == ["a"]


def test_a_permanent_error_that_cannot_be_recorded_is_retried_with_backoff(clock):
    def record(key, exc):
        raise RuntimeError("status write failed")

    queue = WorkQueue(lambda key: (_ for _ in ()).throw(PermanentError("InvalidSpec", "bad")), on_permanent=record,
                      clock=clock, window=0.0, backoff=Backoff(base=2.0))
    queue.mark("a")
    queue.drain()
    assert queue.failures("a") == 1
    clock.advance(2.0)
    assert queue.drain() == ["a"]


def test_an_earlier_mark_is_not_postponed_by_a_later_one(clock):
    queue = WorkQueue(lambda key: None, clock=clock, window=0.05)
    queue.mark("a")
    queue.mark("a", delay=10)
    clock.advance(0.05)
    assert queue.drain() == ["a"]


def test_a_pass_that_asks_to_come_back_runs_again_after_its_delay(clock):
    passes: list[float] = []

    def work(key):
        passes.append(clock())
        return 0.3 if len(passes) == 1 else None

    queue = WorkQueue(work, clock=clock, window=0.01)
    queue.mark("a", delay=0)
    queue.drain()
    clock.advance(0.29)
    assert queue.drain() == []
    clock.advance(0.01)
    assert queue.drain() == ["a"] and passes[1] - passes[0] == pytest.approx(0.3)
    clock.advance(100)
    assert queue.drain() == [], "a pass that returned None was run again"


def test_keys_run_in_order_of_their_due_time_and_a_discarded_key_not_at_all(clock):
    queue = WorkQueue(lambda key: None, clock=clock, window=0.01)
    queue.mark("late", delay=0.4)
    queue.mark("gone", delay=0.1)
    queue.mark("soon", delay=0.2)
    queue.mark("now", delay=0)
    queue.discard("gone")
    clock.advance(1)
    assert queue.drain() == ["now", "soon", "late"]


def test_urgent_keys_go_first_but_an_ordinary_one_is_not_passed_over_for_long(clock):
    queue = WorkQueue(lambda key: None, clock=clock, window=0.01, max_pass_over=0.5, pass_over_share=3)
    queue.mark("status", delay=0)
    for i in range(5):
        queue.mark(f"new-spec-{i}", delay=0.01 * i, urgent=True)
    queue.mark("status-due-long-ago", delay=-1)
    queue.mark("status-due-long-ago-too", delay=-0.9)
    clock.advance(0.1)  # everything is due before the worker starts
    # Every third pick goes to a status sync overdue by max_pass_over; one due
    # for less waits until no urgent key is left.
    assert queue.drain() == ["new-spec-0", "new-spec-1", "status-due-long-ago", "new-spec-2", "new-spec-3",
                             "status-due-long-ago-too", "new-spec-4", "status"]


def test_status_syncs_wait_for_a_calm_moment_between_new_specs(clock):
    queue = WorkQueue(lambda key: None, clock=clock, window=0.01, calm_after=0.3)
    queue.mark("new-spec-a", delay=0, urgent=True)
    queue.mark("status", delay=0)
    assert queue.drain() == ["new-spec-a"]  # "status" is due, but a new spec just came
    clock.advance(0.1)
    assert queue.drain() == []
    queue.mark("new-spec-b", delay=0, urgent=True)
    assert queue.drain() == ["new-spec-b"]
    clock.advance(0.29)
    assert queue.drain() == []
    clock.advance(0.01)
    assert queue.drain() == ["status"]


@pytest.mark.parametrize("urgent", [True, False], ids=["new specs", "status syncs"])
def test_one_namespace_s_backlog_holds_another_s_pass_for_at_most_one_pass_per_busy_namespace(clock, urgent):
    """The bound, measured: a namespace that applied 500 jobs at once and two
    others with 100 each; a fourth namespace's one job, marked last, runs
    within the first 4 passes (one per namespace with due work), not after 700."""
    calls: list[tuple] = []
    queue = WorkQueue(calls.append, clock=clock, window=0.0, group_of=lambda key: key[0])
    for namespace, count in (("greedy", 500), ("busy-a", 100), ("busy-b", 100)):
        for i in range(count):
            queue.mark((namespace, f"j{i}"), urgent=urgent)
    clock.advance(1)
    queue.mark(("calm", "only"), urgent=urgent)
    ran = queue.drain()
    assert len(ran) == 701
    assert ran.index(("calm", "only")) < 4
    # ...and the busy namespaces share the workers in turn while they all have work.
    first = [key[0] for key in ran[:30]]
    assert {first.count(ns) for ns in ("greedy", "busy-a", "busy-b")} <= {9, 10, 11}


def test_without_groups_the_order_is_due_time(clock):
    calls: list = []
    queue = WorkQueue(calls.append, clock=clock, window=0.0)
    for name in ("a", "b", "c"):
        queue.mark(name)
        clock.advance(0.1)
    assert queue.drain() == ["a", "b", "c"]


def test_each_pass_taken_reports_how_long_it_waited_past_its_due_time_and_its_level(clock):
    waits: list[tuple[float, bool]] = []
    queue = WorkQueue(lambda key: None, clock=clock, window=0.0, on_wait=lambda seconds, urgent: waits.append((seconds, urgent)))
    queue.mark("new-spec", delay=0, urgent=True)
    queue.mark("status-sync", delay=1.0)
    clock.advance(3.0)  # both wait: no worker took them
    assert sorted(queue.drain()) == ["new-spec", "status-sync"]
    assert sorted(waits) == [(2.0, False), (3.0, True)]
