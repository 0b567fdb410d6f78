"""Status from the children, as the cache shows them, written when it changed
(in one PATCH with a newly accepted spec's Valid condition and
observedGeneration); the serving objects once training succeeded."""

from __future__ import annotations

from ...api import advice
from ...api.status import ConditionType as C
from ...api.status import Reason as R
from ...status.evaluation import fit_event, results_event
from ...k8s import now_rfc3339
from ...status.conditions import set_condition
from ...status.observed import Observation, next_status, stop_request
from . import attempts, queue
from .observe import observe_serving
from .serving import converge_serving
from .suspend import converge_suspend


def valid(status: dict) -> bool:
    """The spec was accepted (a refused one has Valid=False, a new one none yet)."""
    return any(c.get("type") == C.VALID and c.get("status") == "True" for c in status.get("conditions") or [])


def trained(status: dict) -> bool:
    """Training ran to its end (or was stopped for good). Its Job is not created
    again when it is gone (ttlSecondsAfterFinished, or removed by hand): the
    result stands."""
    return status.get("phase") in ("Succeeded", "Serving", "Stopped") or (status.get("phase") == "Failed" and valid(status))


def accepted(status: dict, generation: int | None, warnings: list[str] | tuple = ()) -> dict:
    """`status` with Valid=True (and what may not work as asked, `api.advice`);
    written together with the first derived status."""
    message = "spec accepted" + "".join(f"; warning: {w}" for w in warnings)
    conditions = set_condition(list(status.get("conditions") or []), C.VALID, "True", R.ACCEPTED, message, now_rfc3339(), generation)
    # A job refused earlier (fixed image, fixed policy breach) is no longer failed for that reason.
    conditions = [c for c in conditions if not (c["type"] == C.FAILED and c.get("reason") in (R.IMAGE_NOT_ALLOWED, R.POLICY_DENIED))]
    new = dict(status, conditions=conditions, observedGeneration=generation)
    if status.get("phase") in (None, "Failed") and not any(c["type"] == C.FAILED for c in conditions):
        new["phase"] = "Pending"
    return new


def sync(ctl, p) -> float | None:
    """Returns when to sync again (a job waiting for its queue), None at the next event."""
    old = ctl.status.current(p.key, p.body)
    accepting = ctl.accepted.get(p.key) == p.version
    base = accepted(old, p.generation, advice.warnings(p.job.spec) if p.job else ()) if accepting else old
    if p.job is None or not valid(base):
        return None  # refused or not reconciled yet: nothing runs, nothing to derive
    spec = p.job.spec
    training_job, pods, deployment = ctl.children(p.key)
    attempts.end_failed_attempt(ctl, p, training_job, pods)
    workload = queue.workload_of(ctl, p, training_job)
    if spec.queue_name:
        queue.converge_suspend(ctl, p, workload)
    stop = stop_request(p.body["metadata"].get("annotations"))
    if stop and training_job is not None:
        converge_suspend(ctl.kube, p, training_job)
    obs = Observation(job=training_job, pods=pods, spec_suspend=spec.suspend, serving_enabled=spec.serving.enabled,
                      nodes=spec.distributed.nodes, queue_name=spec.queue_name, workload=workload, stop=stop,
                      serving_gate=spec.serving.gate, **observe_serving(ctl, p, deployment))
    new = next_status(base, obs, now=now_rfc3339(), generation=p.generation)
    new["attempts"] = max(new.get("attempts") or 0, attempts.remember_started(ctl, p.key, pods))
    converge_serving(ctl, p, old, new, deployment)
    # A new job was Pending (accepted, its Job created) even when its children's
    # first events already show more by the time its first status is written.
    stored = ctl.status.write(p.body, old, new, p.logger, via="Pending" if accepting and not old.get("phase") else None)
    if accepting:
        ctl.accepted.pop(p.key, None)
    _evaluation_events(ctl, p, old, stored)
    return queue.POLL_SECONDS if new.get("phase") == "Queued" else None


def _evaluation_events(ctl, p, old: dict, stored: dict) -> None:
    """Once, when the results first reach status: an Event with them, and a
    Warning when the fit is not Good."""
    if stored.get("evaluation") and not old.get("evaluation"):
        ctl.kube.event(p.body, *results_event(stored["evaluation"]))
    old_fit = next((c for c in old.get("conditions") or [] if c.get("type") == C.FIT), None)
    new_fit = next((c for c in stored.get("conditions") or [] if c.get("type") == C.FIT), None)
    if new_fit and (old_fit or {}).get("reason") != new_fit.get("reason"):
        warning = fit_event((new_fit["status"], new_fit["reason"], new_fit.get("message", "")))
        if warning:
            ctl.kube.event(p.body, *warning)

