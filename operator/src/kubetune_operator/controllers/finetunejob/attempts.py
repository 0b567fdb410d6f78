"""Attempts across a job's life: ending the rest of a failed multi-node attempt
(the decision is `group_restart`, pure: its live pods are evicted, which the Job
does not count against backoffLimit, and the Job starts every node again), and
remembering the trainer pods that started, which a suspension (ours or
Kueue's preemption) deletes: status.attempts counts them all the same."""

from __future__ import annotations

from ...api.status import Reason as R
from ...group_restart import describe, failed_attempt, index_of
from ...status.observed import pod_started


def end_failed_attempt(ctl, p, training_job: dict | None, pods: list[dict]) -> None:
    nodes = p.job.spec.distributed.nodes
    if training_job is None or nodes <= 1 or _settled(training_job):
        return
    attempt = failed_attempt(pods, nodes, ctl.handled.get(p.key, frozenset()))
    if attempt is None:
        return
    for name in attempt.peers:
        ctl.kube.evict(p.key[0], name)  # an error is retried by the queue, nothing marked handled
    ctl.handled[p.key] = attempt.handled
    message = describe(attempt, nodes)
    p.logger.info(message)
    ctl.kube.event(p.body, "Warning", R.ATTEMPT_FAILED, message)


def _settled(job: dict) -> bool:
    """Finished or suspended: the Job controller ends the pods itself."""
    status = job.get("status") or {}
    finished = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in status.get("conditions") or [])
    return finished or bool((job.get("spec") or {}).get("suspend"))


def remember_started(ctl, key, pods: list[dict]) -> int:
    """The most trainer pods started at one completion index, counting those gone
    since (a suspended Job's pods are deleted). Kept in memory: after an operator
    restart, status.attempts (never decreasing) carries the count."""
    seen = ctl.started.setdefault(key, {})
    for pod in pods:
        if pod_started(pod):
            seen[pod["metadata"]["uid"]] = index_of(pod)
    per_index: dict[str, int] = {}
    for index in seen.values():
        per_index[index] = per_index.get(index, 0) + 1
    return max(per_index.values(), default=0)
