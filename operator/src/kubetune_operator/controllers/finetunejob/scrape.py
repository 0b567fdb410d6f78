"""While a job runs, rank 0's /metrics -> status.progress, status.metrics and
status.checkpoint, every scrape interval: the numbers Grafana shows; and the
Tracking condition as soon as the trainer says a tracker degraded."""

from __future__ import annotations

from ...builders.training import METRICS_PORT
from ...k8s import now_rfc3339
from ...status.progress import progress_patch, read_trainer_metrics, scrape
from ...status.observed import set_condition
from ...status.tracking import degraded_while_running

JOB_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def poll_progress(ctl, p) -> float | None:
    """Returns when to read again (None: the job does not run)."""
    interval = ctl.cfg.metrics_scrape_interval
    old = ctl.status.current(p.key, p.body)  # the queue runs no other pass on this job meanwhile
    if old.get("phase") != "Running" or p.job is None:
        ctl.scraped.pop(p.key, None)
        return None
    wait = ctl.scraped.get(p.key, float("-inf")) + interval - ctl.clock()
    if wait > 0:
        return wait
    ctl.scraped[p.key] = ctl.clock()
    ip = rank0_ip(ctl.children(p.key)[1])
    if not ip:
        return interval
    try:
        text = scrape(f"http://{ip}:{METRICS_PORT}/metrics", ctl.cfg.metrics_scrape_timeout)
    except OSError as exc:
        p.logger.debug("trainer metrics not reachable yet at %s: %s", ip, exc)
        return interval
    reading = read_trainer_metrics(text)
    new = dict(old)
    for section, values in progress_patch(reading).items():
        new[section] = dict(old.get(section) or {}, **values)
    if reading.tracking_degraded:
        new["conditions"] = set_condition(list(old.get("conditions") or []), *degraded_while_running(reading.tracking_degraded),
                                          now_rfc3339(), p.generation)
    if new != old:
        ctl.status.write(p.body, old, new, p.logger)
    return interval


def rank0_ip(pods: list[dict]) -> str | None:
    for pod in pods:
        status = pod.get("status") or {}
        index = (pod["metadata"].get("annotations") or {}).get(JOB_COMPLETION_INDEX, "0")
        if status.get("phase") == "Running" and status.get("podIP") and index == "0":
            return status["podIP"]
    return None
