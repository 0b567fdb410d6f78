"""The operator's own Prometheus metrics (`kubetune_operator_*`). The Grafana
dashboard and alerts query exactly these names."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .api.status import PHASES

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS = Gauge("kubetune_operator_jobs", "FineTuneJobs by phase, as this operator last saw them.", ["phase"], registry=REGISTRY)
RECONCILE_DURATION = Histogram(
    "kubetune_operator_reconcile_duration_seconds",
    "Time to reconcile one FineTuneJob (create/resume/update or a status sync).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
API_ERRORS = Counter("kubetune_operator_api_errors_total", "Kubernetes API calls that failed unexpectedly.", registry=REGISTRY)
PHASE_TRANSITIONS = Counter(
    "kubetune_operator_phase_transitions_total", "FineTuneJob phase changes.", ["from", "to"], registry=REGISTRY
)
# Requests made by the operator's own client (Kopf's watches and metadata patches
# are not included): what the operator costs the API server, per kind and verb.
API_REQUESTS = Counter("kubetune_operator_api_requests_total", "Kubernetes API requests made by the operator's client.", ["kind", "verb"], registry=REGISTRY)
# Where a pass's time goes under load (as client-go's rest_client_* and workqueue_*
# metrics say it): waiting for the client's QPS budget, the API server's answer,
# and a due key waiting for a free worker.
CLIENT_THROTTLE = Counter("kubetune_operator_client_throttle_seconds_total",
                          "Seconds requests waited for the client's QPS budget (KUBETUNE_CLIENT_QPS/BURST).", registry=REGISTRY)
API_REQUEST_DURATION = Histogram(
    "kubetune_operator_api_request_duration_seconds", "Round trip of the operator's own API requests, per kind and verb.",
    ["kind", "verb"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=REGISTRY)
QUEUE_WAIT = Histogram(
    "kubetune_operator_queue_wait_seconds", "From when a pass was due to when a worker took it; urgent: a spec not reconciled yet.",
    ["urgent"], buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY)
# A trainer's /metrics that gave nothing usable (too slow, too big, a redirect,
# unparseable): the job's status keeps what it had (runtime.scraper).
SCRAPE_FAILURES = Counter("kubetune_operator_trainer_scrape_failures_total", "Trainer /metrics scrapes that gave nothing usable.",
                          registry=REGISTRY)
JOB_ATTEMPTS = Gauge("kubetune_operator_job_attempts", "Training pods started per FineTuneJob.", ["namespace", "job"], registry=REGISTRY)

SWEEP_TRIALS = Gauge("kubetune_operator_sweep_trials", "A FineTuneSweep's trials by state (running, succeeded, failed, pruned).",
                     ["namespace", "sweep", "state"], registry=REGISTRY)
SWEEP_BEST = Gauge("kubetune_operator_sweep_best_objective", "The best trial's objective so far, per FineTuneSweep.",
                   ["namespace", "sweep"], registry=REGISTRY)
SWEEP_STATES = ("running", "succeeded", "failed", "pruned")

for _phase in PHASES:
    JOBS.labels(phase=_phase).set(0)


class PhaseBook:
    """Which phase each job is in, so the `jobs` gauge counts each job once."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()  # handler threads and sync workers write at once

    def set(self, namespace: str, name: str, phase: str | None) -> None:
        key = (namespace, name)
        with self._lock:
            old = self._phases.pop(key, None) if phase is None else self._phases.get(key)
            if phase is not None:
                self._phases[key] = phase
            if old == phase:
                return
            if old is not None:
                JOBS.labels(phase=old).dec()
            if phase is not None:
                JOBS.labels(phase=phase).inc()
        if phase is None:
            try:
                JOB_ATTEMPTS.remove(namespace, name)
            except KeyError:
                pass


def serve(port: int) -> None:
    start_http_server(port, registry=REGISTRY)


def record_sweep(key: tuple[str, str], status: dict) -> None:
    """The sweep gauges from the status just written."""
    counts = status.get("counts") or {}
    for state in SWEEP_STATES:
        SWEEP_TRIALS.labels(namespace=key[0], sweep=key[1], state=state).set(counts.get(state, 0))
    best = (status.get("best") or {}).get("objective")
    if best is not None:
        SWEEP_BEST.labels(namespace=key[0], sweep=key[1]).set(best)


def forget_sweep(namespace: str, sweep: str) -> None:
    for state in SWEEP_STATES:
        try:
            SWEEP_TRIALS.remove(namespace, sweep, state)
        except KeyError:
            pass
    try:
        SWEEP_BEST.remove(namespace, sweep)
    except KeyError:
        pass
