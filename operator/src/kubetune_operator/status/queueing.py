"""Kueue admission as a FineTuneJob's status says it (`spec.queueName`).

Kueue admits a queued Job by un-suspending it and evicts it (a preemption, a
deactivated workload) by suspending it again; why, it writes only on its
Workload object (the Job's `kueue.x-k8s.io/job-uid` label points at it). The
operator reads that Workload (`controllers/finetunejob/queue.py`) and these
pure functions turn it into the `Queued` phase and the `Admitted` condition,
so `kubectl get ftj` shows a job waiting for its queue and why.
"""

from __future__ import annotations

from ..api.status import Reason as R

WORKLOAD_JOB_UID = "kueue.x-k8s.io/job-uid"
# Kueue's own condition types and reasons on a Workload.
QUOTA_RESERVED, WORKLOAD_ADMITTED, WORKLOAD_EVICTED = "QuotaReserved", "Admitted", "Evicted"
EVICTED_BY_PREEMPTION = "Preempted"


def slim_workload(workload: dict) -> dict:
    """What the status needs of a Workload: its conditions, where it was admitted, whether it is active."""
    status = workload.get("status") or {}
    return {
        "name": workload["metadata"]["name"],
        "active": (workload.get("spec") or {}).get("active", True),
        "clusterQueue": (status.get("admission") or {}).get("clusterQueue"),
        "conditions": [{k: c.get(k) for k in ("type", "status", "reason", "message")} for c in status.get("conditions") or []],
    }


def _condition(workload: dict | None, type_: str) -> dict | None:
    for cond in (workload or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return None


def waiting(queue: str, workload: dict | None) -> tuple[str, str]:
    """(reason, message) of a Job Kueue keeps suspended."""
    evicted = _condition(workload, WORKLOAD_EVICTED)
    if evicted and evicted.get("status") == "True":
        reason = R.PREEMPTED if evicted.get("reason") == EVICTED_BY_PREEMPTION else R.EVICTED
        return reason, (f"Kueue evicted the Job ({evicted.get('reason')}: {evicted.get('message')}); it waits in "
                        f"LocalQueue {queue} and resumes from the newest committed checkpoint when admitted again")
    if workload is None:
        return R.QUEUED, (f"waiting for Kueue to admit the Job through LocalQueue {queue} (no Kueue Workload for it "
                          "yet: is Kueue installed and managing batch/v1 Jobs?)")
    reserved = _condition(workload, QUOTA_RESERVED)
    if reserved and reserved.get("status") == "False" and reserved.get("message"):
        return R.QUEUED, f"waiting in LocalQueue {queue}: {reserved['message']}"
    return R.QUEUED, f"waiting for Kueue to admit the Job through LocalQueue {queue}"


def admitted(queue: str, workload: dict | None) -> tuple[str, str]:
    """(reason, message) of a queued Job that runs."""
    where = f" (ClusterQueue {workload['clusterQueue']})" if workload and workload.get("clusterQueue") else ""
    return R.ADMITTED, f"admitted by Kueue through LocalQueue {queue}{where}"


def wants_active(suspend: bool, workload: dict | None) -> bool | None:
    """The Workload's `spec.active` to set for `spec.suspend`, or None when it is
    already so (or there is no Workload yet). A queued Job is suspended through
    its Workload: Kueue un-suspends an admitted Job that is suspended directly."""
    if workload is None or workload.get("active", True) == (not suspend):
        return None
    return not suspend


def admission(queue: str | None, workload: dict | None, phase: str, reason: str, message: str,
              job_running: bool) -> tuple[str, str, str] | None:
    """(status, reason, message) of the Admitted condition, or None to leave it as it is."""
    if not queue:
        return None
    if phase == "Queued":
        return "False", reason, message
    return ("True", *admitted(queue, workload)) if job_running else None
