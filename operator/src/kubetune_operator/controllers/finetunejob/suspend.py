"""Whether a job's training Job runs: `spec.suspend`, a request to stop for good
(STOP_ANNOTATION), and Kueue's admission decide it."""

from __future__ import annotations

from ...k8s import Kube
from ...status.observed import stop_request


def converge_suspend(kube: Kube, p, stored: dict) -> None:
    if p.job.spec.queue_name:
        return  # Kueue (un)suspends queued Jobs; suspend and stop go through the Workload (queue.converge_suspend)
    stop = stop_request(p.body["metadata"].get("annotations"))
    want = p.job.spec.suspend or stop is not None
    have = bool((stored.get("spec") or {}).get("suspend"))
    if want == have:
        return
    kube.merge_patch("Job", p.key[0], stored["metadata"]["name"], {"spec": {"suspend": want}})
    action = "stopping" if stop else "suspended" if want else "resumed"
    p.logger.info("%s Job %s%s", action, stored["metadata"]["name"], f" ({stop[0]}: {stop[1]})" if stop else "")
