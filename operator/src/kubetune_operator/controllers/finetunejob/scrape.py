"""While a job runs, rank 0's /metrics -> status.progress, status.metrics and
status.checkpoint, every scrape interval: the numbers Grafana shows; and the
Tracking condition as soon as the trainer says a tracker degraded.

The scrape itself runs on the scraper's threads (`runtime.scraper`), bounded
in time and size, never on a worker: a pass asks for one when it is due and
applies the last one that finished (whose end marks the job for a pass)."""

from __future__ import annotations

from ... import metrics
from ...builders.training import METRICS_PORT
from ...k8s import now_rfc3339
from ...runtime.scraper import ScrapeResult
from ...status.conditions import set_condition
from ...status.progress import progress_patch
from ...status.tracking import degraded_while_running

JOB_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def poll_progress(ctl, p) -> float | None:
    """Returns when to look again (None: the job does not run)."""
    interval = ctl.cfg.metrics_scrape_interval
    old = ctl.status.current(p.key, p.body)  # the queue runs no other pass on this job meanwhile
    finished = ctl.scraper.take(p.key)
    if old.get("phase") != "Running" or p.job is None:
        ctl.scraped.pop(p.key, None)
        return None
    if finished is not None:
        _apply(ctl, p, old, finished)
    wait = ctl.scraped.get(p.key, float("-inf")) + interval - ctl.clock()
    if wait > 0:
        return wait
    ip = rank0_ip(ctl.children(p.key)[1])
    if ip and ctl.scraper.request(p.key, ip, METRICS_PORT):
        ctl.scraped[p.key] = ctl.clock()
    elif not ip:
        ctl.scraped[p.key] = ctl.clock()
    return interval


def _apply(ctl, p, old: dict, finished: ScrapeResult) -> None:
    if finished.error is not None:
        metrics.SCRAPE_FAILURES.inc()
        p.logger.debug("trainer metrics not read: %s", finished.error)
        return
    reading = finished.value
    new = dict(old)
    for section, values in progress_patch(reading).items():
        new[section] = dict(old.get(section) or {}, **values)
    if reading.tracking_degraded:
        new["conditions"] = set_condition(list(old.get("conditions") or []), *degraded_while_running(reading.tracking_degraded),
                                          now_rfc3339(), p.generation)
    if new != old:
        ctl.status.write(p.body, old, new, p.logger)


def rank0_ip(pods: list[dict]) -> str | None:
    for pod in pods:
        status = pod.get("status") or {}
        index = (pod["metadata"].get("annotations") or {}).get(JOB_COMPLETION_INDEX, "0")
        if status.get("phase") == "Running" and status.get("podIP") and index == "0":
            return status["podIP"]
    return None
