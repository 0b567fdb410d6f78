"""From what the cluster shows (the training Job, its pods, the trainer's
termination message, the serving Deployment) to `FineTuneJob.status`.

Pure functions over plain dicts, so every transition is unit-tested without a
cluster. Handlers feed them what they read and write back what they return.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubetune_contract.termination import ReportInvalid, parse_report

from . import queueing
from ..api.status import STOP_ANNOTATION, ConditionType as C, Reason as R
from .evaluation import fit_condition
from .conditions import clip, set_condition
from .report import apply_report
from .serving import judge_serving, outcome_conditions, serving_verdict


# Trainer termination-message reasons that name the cause of a failure better
# than the Job's own reason (BackoffLimitExceeded says only "it kept failing").
TRAINER_FAILURE_REASONS = {
    "LossDiverged": R.LOSS_DIVERGED,
    "InvalidDataset": R.INVALID_DATASET,
    "InvalidModel": R.INVALID_MODEL,
    "InvalidConfig": R.INVALID_CONFIG,
    "CheckpointFailed": R.CHECKPOINT_FAILED,
}
JOB_FAILURE_REASONS = {
    "BackoffLimitExceeded": R.BACKOFF_LIMIT_EXCEEDED,
    "DeadlineExceeded": R.DEADLINE_EXCEEDED,
}
IMAGE_PULL_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
CONFIG_WAITING = {"CreateContainerConfigError"}
TRAINER_CONTAINER = "trainer"


@dataclass(frozen=True)
class Outcome:
    """The phase a job is in and why."""

    phase: str
    reason: str
    message: str
    report: dict | None = None  # the trainer's termination message, when one explains it
    report_problem: str | None = None  # why the newest termination message is not a trainer report


@dataclass(frozen=True)
class Observation:
    """What the operator read about one FineTuneJob's children."""

    job: dict | None
    pods: list[dict] = field(default_factory=list)
    deployment: dict | None = None
    spec_suspend: bool = False
    serving_enabled: bool = False
    nodes: int = 1
    serving_pods: list[dict] = field(default_factory=list)  # the vLLM Deployment's pods
    serving_member: str | None = None  # a pool member: the model name the pool must serve for it
    serving_refusal: str | None = None  # why the job cannot be served (a pool it disagrees with)
    serving_gate: object | None = None  # spec.serving.gate (a ServingGate), judged once training succeeded
    queue_name: str | None = None  # spec.queueName, and its Kueue Workload (queueing.slim_workload)
    workload: dict | None = None
    stop: tuple[str, str] | None = None  # (reason, message) when asked to stop for good (STOP_ANNOTATION)


# --------------------------------------------------------------------------- helpers


def _job_condition(job: dict, type_: str) -> dict | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


def _trainer_status(pod: dict) -> dict | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == TRAINER_CONTAINER:
            return status
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return statuses[0] if statuses else None


def _terminated(pod: dict) -> dict | None:
    status = _trainer_status(pod) or {}
    return (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated")


def _pod_time(pod: dict) -> str:
    term = _terminated(pod) or {}
    return term.get("finishedAt") or (pod.get("status") or {}).get("startTime") or pod.get("metadata", {}).get("creationTimestamp") or ""


def read_report(pod: dict) -> tuple[dict | None, str | None]:
    """(the trainer's report from the pod's termination message, why the message
    is not one): a pod runs a tenant's code, so the message is checked against
    the report's schema, size and depth before anything reads it."""
    term = _terminated(pod)
    if not term or not term.get("message"):
        return None, None
    try:
        return parse_report(str(term["message"])), None
    except ReportInvalid as exc:
        return None, f"the termination message of pod {pod.get('metadata', {}).get('name')} is not a trainer report: {exc}"


def termination_report(pod: dict) -> dict | None:
    """The trainer's final JSON from its termination message, if it wrote a valid one."""
    return read_report(pod)[0]


def newest_report(pods: list[dict], *, succeeded: bool | None = None) -> tuple[dict | None, str | None]:
    """(the newest termination report, why the newest message was none) of
    the pods (optionally only succeeded / failed ones)."""
    candidates = []
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        if succeeded is True and phase != "Succeeded":
            continue
        if succeeded is False and phase != "Failed":
            continue
        report, problem = read_report(pod)
        if report is not None or problem is not None:
            candidates.append((_pod_time(pod), report, problem))
    if not candidates:
        return None, None
    _, report, problem = max(candidates, key=lambda c: c[0])
    return report, problem


def latest_report(pods: list[dict], *, succeeded: bool | None = None) -> dict | None:
    """The newest termination report (optionally only from succeeded / failed pods)."""
    return newest_report(pods, succeeded=succeeded)[0]


def pod_started(pod: dict) -> bool:
    """Whether the trainer process ever started in this pod (image pulled, container ran)."""
    status = _trainer_status(pod) or {}
    state = status.get("state") or {}
    return "running" in state or "terminated" in state or bool(status.get("lastState", {}).get("terminated"))


def count_attempts(pods: list[dict]) -> int:
    """Training attempts: pods started per completion index, the most of any index."""
    per_index: dict[str, int] = {}
    for pod in pods:
        if pod_started(pod):
            index = (pod.get("metadata", {}).get("annotations") or {}).get("batch.kubernetes.io/job-completion-index", "0")
            per_index[index] = per_index.get(index, 0) + 1
    return max(per_index.values(), default=0)


def _waiting_problem(pods: list[dict], reasons: set[str]) -> tuple[str, str] | None:
    """(image, "<reason> <kubelet's message>") of the first pending container
    stuck waiting for one of ``reasons``."""
    for pod in pods:
        if (pod.get("status") or {}).get("phase") not in (None, "Pending"):
            continue
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in reasons:
                return status.get("image", "the image"), f"{waiting.get('reason')} {waiting.get('message', '')}".strip()
    return None


def _running(pods: list[dict]) -> bool:
    return any("running" in ((_trainer_status(p) or {}).get("state") or {}) for p in pods if (p.get("status") or {}).get("phase") == "Running")


def _oom_killed(pods: list[dict]) -> bool:
    return any((_terminated(p) or {}).get("reason") == "OOMKilled" for p in pods)


# --------------------------------------------------------------------------- training outcome


def training_outcome(obs: Observation, previous_phase: str | None) -> Outcome:
    job = obs.job
    if job is None:
        if previous_phase in ("Succeeded", "Serving"):
            # The finished Job was removed (ttlSecondsAfterFinished): the result stands.
            return Outcome("Succeeded", R.COMPLETED, "training finished")
        return Outcome("Pending", R.PODS_PENDING, "creating the training Job")
    if _job_condition(job, "Complete"):
        report, problem = newest_report(obs.pods, succeeded=True)
        return Outcome("Succeeded", R.COMPLETED, "training finished", report, problem)
    failed = _job_condition(job, "Failed")
    if failed:
        return _failure(failed, obs.pods)
    if obs.stop is not None and (job.get("spec") or {}).get("suspend"):
        return _stopping(job, obs)
    if (job.get("spec") or {}).get("suspend"):
        if obs.spec_suspend:
            return Outcome("Suspended", R.SUSPENDED, "suspended: pods stopped, checkpoints kept; set spec.suspend=false to resume")
        if obs.queue_name:
            return Outcome("Queued", *queueing.waiting(obs.queue_name, obs.workload))
        # Not ours: Kueue keeps the Job suspended until it admits it.
        return Outcome("Pending", R.PODS_PENDING, "waiting for the queue to admit the Job")
    if _running(obs.pods):
        attempts = count_attempts(obs.pods)
        if attempts > 1:
            return Outcome("Running", R.RESTARTED, f"attempt {attempts}: resumed from the newest committed checkpoint")
        return Outcome("Running", R.TRAINING_STARTED, "trainer is running")
    pull = _waiting_problem(obs.pods, IMAGE_PULL_WAITING)
    if pull:
        return Outcome("Pending", R.IMAGE_PULL_FAILED, clip("cannot pull {}: {}".format(*pull)))
    config = _waiting_problem(obs.pods, CONFIG_WAITING)
    if config:
        # The kubelet's word that a referenced Secret or key is missing: the
        # operator may not read Secrets itself (the chart grants it none).
        return Outcome("Pending", R.SECRET_MISSING, clip(f"the trainer pod cannot start: {config[1]}"))
    if previous_phase == "Running" and count_attempts(obs.pods) >= 1:
        # A pod failed and the Job is starting the next one: still training.
        return Outcome("Running", R.RESTARTED, "a trainer pod failed; the Job is starting a new one that resumes from the newest checkpoint")
    return Outcome("Pending", R.PODS_PENDING, "waiting for the trainer pod to start")


def _stopping(job: dict, obs: Observation) -> Outcome:
    """Asked to stop for good: its pods get SIGTERM (the trainer commits a
    checkpoint first); Stopped once none is left."""
    reason, message = obs.stop
    if (job.get("status") or {}).get("active"):
        return Outcome("Running", R.STOPPING, clip(f"stopping ({reason}: {message}); the trainer checkpoints before it exits"))
    return Outcome("Stopped", reason, clip(message), latest_report(obs.pods))


def stop_request(annotations: dict | None) -> tuple[str, str] | None:
    """(reason, message) of a STOP_ANNOTATION `"<Reason>: <message>"`, or None."""
    value = (annotations or {}).get(STOP_ANNOTATION)
    if not value:
        return None
    reason, _, message = value.partition(":")
    return (reason.strip() or R.STOPPING), (message.strip() or "stopped on request")


def _failure(condition: dict, pods: list[dict]) -> Outcome:
    report, problem = newest_report(pods, succeeded=False)
    outcome = _failed(condition, pods, report)
    return Outcome(outcome.phase, outcome.reason, outcome.message, outcome.report, problem)


def _failed(condition: dict, pods: list[dict], report: dict | None) -> Outcome:
    job_reason = condition.get("reason") or ""
    job_message = condition.get("message") or job_reason
    if report and report.get("reason") in TRAINER_FAILURE_REASONS:
        reason = TRAINER_FAILURE_REASONS[report["reason"]]
        return Outcome("Failed", reason, clip(f"{report.get('message') or reason}"), report)
    if _oom_killed(pods):
        return Outcome("Failed", R.OOM_KILLED, "the trainer ran out of memory (OOMKilled); raise spec.resources.memory or lower batchSize/maxSeqLength", report)
    reason = JOB_FAILURE_REASONS.get(job_reason, R.BACKOFF_LIMIT_EXCEEDED if job_reason != "DeadlineExceeded" else R.DEADLINE_EXCEEDED)
    if job_reason == "DeadlineExceeded":
        message = f"training ran longer than spec.activeDeadlineSeconds: {job_message}"
    else:
        message = job_message
        if report and report.get("message"):
            message = f"{job_message}; last trainer error: {report['message']}"
    return Outcome("Failed", reason, clip(message), report)


# --------------------------------------------------------------------------- serving


def serving_outcome(deployment: dict | None, was_ready: bool, obs: Observation | None = None) -> tuple[bool, str, str]:
    """(ready, reason, message) of the serving Deployment (`serving.serving_verdict`)."""
    obs = obs or Observation(job=None)
    return serving_verdict(deployment, obs.serving_pods, was_ready, member=obs.serving_member, refusal=obs.serving_refusal)



# --------------------------------------------------------------------------- the whole status


def next_status(current: dict, obs: Observation, *, now: str, generation: int | None) -> dict:
    """The status to write, given the current one and what the cluster shows."""
    status = {k: v for k, v in current.items()}
    previous_phase = current.get("phase")
    if obs.job is None and previous_phase in ("Failed", "Stopped"):
        # A failed (or stopped) job's verdict stands once its Job is gone.
        return status
    outcome = training_outcome(obs, previous_phase)
    conditions = list(current.get("conditions") or [])

    status["attempts"] = max(current.get("attempts") or 0, count_attempts(obs.pods))
    job_status = (obs.job or {}).get("status") or {}
    if job_status.get("startTime"):
        status["startTime"] = job_status["startTime"]
    report, problem = outcome.report, outcome.report_problem
    if report:
        try:
            reported = dict(status)
            apply_report(reported, report)
            status = reported
        except Exception as exc:  # noqa: BLE001 - a section the right type outside, the wrong shape inside
            report, problem = None, f"the trainer report could not be read: {type(exc).__name__}: {str(exc)[:200]}"
    if problem:  # the job ends as its exit code says; what the message claimed is not used
        conditions = set_condition(conditions, C.REPORT_INVALID, "True", R.REPORT_INVALID, clip(problem), now, generation)
    fitted = fit_condition(report, outcome.reason if outcome.phase == "Failed" else None)
    if fitted and outcome.phase in ("Succeeded", "Failed"):
        conditions = set_condition(conditions, C.FIT, *fitted, now, generation)

    training_on = outcome.phase == "Running"
    conditions = set_condition(conditions, C.TRAINING, "True" if training_on else "False", outcome.reason, outcome.message, now, generation)
    if outcome.phase == "Stopped":
        conditions = set_condition(conditions, C.STOPPED, "True", outcome.reason, outcome.message, now, generation)
    if outcome.phase in ("Succeeded", "Failed", "Stopped"):
        status["completionTime"] = job_status.get("completionTime") or current.get("completionTime") or now
    if outcome.phase == "Succeeded":
        conditions = set_condition(conditions, C.SUCCEEDED, "True", R.COMPLETED, outcome.message, now, generation)
    if outcome.phase == "Failed":
        conditions = set_condition(conditions, C.FAILED, "True", outcome.reason, outcome.message, now, generation)
    for type_, *verdict in outcome_conditions(obs.serving_enabled, outcome.phase, outcome.reason, report):
        conditions = set_condition(conditions, type_, *verdict, now, generation)
    running = obs.job is not None and not (obs.job.get("spec") or {}).get("suspend")
    if admission := queueing.admission(obs.queue_name, obs.workload, outcome.phase, outcome.reason, outcome.message, running):
        conditions = set_condition(conditions, C.ADMITTED, *admission, now, generation)
    if outcome.phase == "Suspended":
        conditions = set_condition(conditions, C.SUSPENDED, "True", R.SUSPENDED, outcome.message, now, generation)
    elif any(c.get("type") == C.SUSPENDED for c in conditions):
        conditions = set_condition(conditions, C.SUSPENDED, "False", R.RESUMED, "resumed: training continues from the newest committed checkpoint", now, generation)

    phase, conditions = judge_serving(status, current, conditions, obs, outcome.phase, now, generation)

    status["phase"] = phase
    status["conditions"] = conditions
    status["observedGeneration"] = generation
    return status


def transition_event(old: str | None, new: str, status: dict) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event for a phase change, or None when unchanged."""
    if old == new:
        return None
    reason_by_type = {c.get("type"): c for c in status.get("conditions") or []}
    detail = ""
    key = {"Failed": C.FAILED, "Serving": C.SERVING, "Suspended": C.SUSPENDED, "Stopped": C.STOPPED}.get(new, C.TRAINING)
    cond = reason_by_type.get(key) or reason_by_type.get(C.VALID)
    if cond:
        detail = f"{cond.get('reason')}: {cond.get('message')}"
    message = clip(f"{old or 'New'} -> {new}" + (f" ({detail})" if detail else ""))
    if new == "Serving" and status.get("serving", {}).get("endpoint"):
        message += f"; endpoint {status['serving']['endpoint']}"
    if new == "Succeeded" and (status.get("output") or {}).get("adapterUri"):
        message += f"; adapter at {status['output']['adapterUri']}"
    return ("Warning" if new == "Failed" else "Normal", f"Phase{new}", clip(message))
