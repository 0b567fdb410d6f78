"""A queued job's Kueue Workload (`spec.queueName`): read for its status, and
the way a queued job is suspended.

Kueue writes why a Job waits or was evicted only on its Workload, which carries
no kubetune labels, so it is listed on demand by the Job's uid (one request per
status sync of a queued job; a job waiting for admission is synced every
`POLL_SECONDS`, as nothing it watches changes meanwhile). Without Kueue the
list is a 404, without permission a 403 (after which the operator stops asking);
either way the status then says what it can without it.

Kueue un-suspends an admitted Job that someone else suspends, so `spec.suspend`
of a queued job deactivates its Workload instead (`spec.active: false`, Kueue's
own way): Kueue then suspends the Job, and re-queues it once active again.
"""

from __future__ import annotations

from ...k8s import ApiError
from ...status.observed import stop_request
from ...status.queueing import WORKLOAD_JOB_UID, slim_workload, wants_active

POLL_SECONDS = 5.0


def workload_of(ctl, p, training_job: dict | None) -> dict | None:
    """The Job's Workload (slim), or None: no queue, no Job, no Kueue, not allowed."""
    if p.job is None or not p.job.spec.queue_name or training_job is None or not ctl.workloads_readable:
        return None
    uid = training_job["metadata"].get("uid")
    try:
        found = ctl.kube.list("Workload", p.key[0], f"{WORKLOAD_JOB_UID}={uid}")
    except ApiError as exc:
        if exc.status == 403:
            ctl.workloads_readable = False
            p.logger.info("not allowed to read Kueue Workloads (%s); queued jobs' status will not say why they wait", exc.status)
        if exc.status in (403, 404):
            return None
        raise
    return slim_workload(found[0]) if found else None


def converge_suspend(ctl, p, workload: dict | None) -> None:
    """spec.suspend (or a request to stop for good) of a queued job, through its Workload's spec.active."""
    active = wants_active(p.job.spec.suspend or stop_request(p.body["metadata"].get("annotations")) is not None, workload)
    if active is None:
        return
    ctl.kube.merge_patch("Workload", p.key[0], workload["name"], {"spec": {"active": active}})
    workload["active"] = active
    p.logger.info("%s Kueue Workload %s", "re-activated" if active else "deactivated", workload["name"])
