"""The operator's `jobs` gauge under concurrent writers."""

from __future__ import annotations

import threading

from kubetune_operator import metrics


def _gauge(phase: str) -> float:
    return metrics.REGISTRY.get_sample_value("kubetune_operator_jobs", {"phase": phase}) or 0.0


def test_phase_book_counts_each_job_once_with_many_writers():
    # Handler threads and sync workers set phases at the same time; an unguarded
    # count iterated the dict while another thread grew it and raised.
    book = metrics.PhaseBook()
    before = {phase: _gauge(phase) for phase in ("Pending", "Succeeded")}
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            for i in range(1500):
                book.set("ns", f"w{worker}-{i}", "Pending")
                book.set("ns", f"w{worker}-{i}", "Succeeded")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _gauge("Succeeded") - before["Succeeded"] == 8 * 1500
    assert _gauge("Pending") == before["Pending"]
    book.set("ns", "w0-0", "Succeeded")  # unchanged: counted once
    book.set("ns", "w0-0", None)
    assert _gauge("Succeeded") - before["Succeeded"] == 8 * 1500 - 1
