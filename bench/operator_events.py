"""The operator's work per watch event, without a cluster: a burst's events
replayed into the controller runtime (its cache and the controllers' `on_event`;
the work queue is not started, so no pass runs).

    python bench/operator_events.py [--sizes 100,500]

For N jobs: N FineTuneJobs ADDED, their Jobs and trainer pods ADDED, then three
status changes of each job and its pod. Per-event time must not grow with N
(it runs on Kopf's event loop, before any other event is read); at 500 jobs a
scan of the namespace per event made it 20x slower than at 100
(docs/operator.md).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator/src"), str(REPO / "trainer/contract/src")]

from kubetune_operator.builders.meta import LABEL_JOB, LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY, TRAINER_APP  # noqa: E402
from kubetune_operator.controllers import CONTROLLERS  # noqa: E402
from kubetune_operator.controllers.finetunejob.controller import FINETUNEJOBS, TRAINER_PODS, TRAINING_JOBS  # noqa: E402
from kubetune_operator.runtime import Runtime  # noqa: E402
from kubetune_operator.settings import load_settings  # noqa: E402


def job(i: int, phase: str | None = None) -> dict:
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": f"job-{i}", "namespace": "bench", "uid": f"uid-{i}", "generation": 1, "labels": {}},
            "spec": {"model": {"uri": "s3://bench/model"}, "dataset": {"trainUri": "s3://bench/data.jsonl"}, "method": "lora"},
            "status": {"phase": phase} if phase else {}}


def child(i: int, suffix: str) -> dict:
    labels = {LABEL_JOB: f"job-{i}", LABEL_MANAGED_BY: MANAGED_BY, LABEL_NAME: TRAINER_APP}
    return {"metadata": {"name": f"job-{i}-{suffix}", "namespace": "bench", "uid": f"{suffix}-{i}", "labels": labels},
            "spec": {}, "status": {"active": 1}}


def replay(n: int) -> tuple[int, float]:
    """(events, seconds) of one burst of n jobs."""
    runtime = Runtime.create(load_settings({"KUBETUNE_TRAINER_IMAGE": "bench", "KUBETUNE_DEFAULT_BUCKET_URI": "s3://bench"}),
                             kube=None, controllers=CONTROLLERS)

    def event(watch, body, kind="MODIFIED"):
        meta = body["metadata"]
        runtime.index(watch, meta["namespace"], meta["name"], meta["labels"], body)
        runtime.on_event(watch, kind, meta["namespace"], meta["name"], meta["labels"], body)

    events = [(FINETUNEJOBS, job(i), "ADDED") for i in range(n)]
    events += [e for i in range(n) for e in ((TRAINING_JOBS, child(i, "train"), "ADDED"), (TRAINER_PODS, child(i, "pod"), "ADDED"))]
    events += [e for phase in ("Pending", "Running", "Succeeded") for i in range(n)
               for e in ((FINETUNEJOBS, job(i, phase), "MODIFIED"), (TRAINER_PODS, child(i, "pod"), "MODIFIED"))]
    started = time.perf_counter()
    for watch, body, kind in events:
        event(watch, body, kind)
    return len(events), time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,500")
    sizes = [int(s) for s in ap.parse_args().sizes.split(",")]
    per_event = {}
    print(f"{'N':>5} {'events':>7} {'ms':>7} {'us/event':>9}")
    for n in sizes:
        count, seconds = replay(n)
        per_event[n] = seconds / count * 1e6
        print(f"{n:>5} {count:>7} {seconds * 1000:>7.0f} {per_event[n]:>9.1f}")
    if len(sizes) > 1:
        print(f"\nper event, N={sizes[-1]} / N={sizes[0]}: {per_event[sizes[-1]] / per_event[sizes[0]]:.2f}x (flat is 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
