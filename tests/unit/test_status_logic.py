"""Phase and conditions from Job + pods + termination message + Deployment."""

from __future__ import annotations

import json

from kubetune_operator.api.status import FineTuneJobStatus, Reason
from kubetune_operator.status.report import apply_report
from kubetune_operator.status.observed import (
    Observation,
    count_attempts,
    next_status,
    serving_outcome,
    set_condition,
    termination_report,
    training_outcome,
    transition_event,
)

NOW = "2026-11-20T10:00:00Z"
LATER = "2026-11-20T10:05:00Z"


def job(*conditions: tuple[str, str, str], suspend: bool = False, **status) -> dict:
    return {
        "spec": {"suspend": suspend},
        "status": {
            "conditions": [{"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conditions],
            **status,
        },
    }


def pod(phase: str, *, running: bool = False, exit_code: int | None = None, message: str | None = None,
        reason: str | None = None, waiting: str | None = None, index: str | None = None, finished: str = NOW) -> dict:
    state: dict = {}
    if running:
        state = {"running": {"startedAt": NOW}}
    elif exit_code is not None:
        term = {"exitCode": exit_code, "finishedAt": finished}
        if message is not None:
            term["message"] = message
        if reason:
            term["reason"] = reason
        state = {"terminated": term}
    elif waiting:
        state = {"waiting": {"reason": waiting, "message": "pull access denied"}}
    meta: dict = {"name": f"p-{phase}-{exit_code}-{finished}"}
    if index is not None:
        meta["annotations"] = {"batch.kubernetes.io/job-completion-index": index}
    statuses = [{"name": "trainer", "image": "r/t:1", "state": state}] if state else []
    return {"metadata": meta, "status": {"phase": phase, "containerStatuses": statuses}}


REPORT_OK = {
    "reason": "Completed", "message": "done", "step": 60, "totalSteps": 60,
    "metrics": {"trainLoss": 1.25, "evalLoss": 1.5, "tokensPerSecond": 900.0},
    "checkpoint": {"uri": "s3://b/ns/j/checkpoints/step-60/", "step": 60},
    "output": {"adapterUri": "s3://b/ns/j/output/adapter", "mergedUri": None, "reportUri": "s3://b/ns/j/output/report.json"},
}


def test_no_job_yet_is_pending():
    assert training_outcome(Observation(job=None), None).phase == "Pending"


def test_pending_pod_then_running_then_succeeded_with_report():
    status: dict = {}
    status = next_status(status, Observation(job=job(), pods=[pod("Pending")]), now=NOW, generation=1)
    assert status["phase"] == "Pending"
    assert status["attempts"] == 0
    status = next_status(status, Observation(job=job(startTime=NOW), pods=[pod("Running", running=True)]), now=NOW, generation=1)
    assert status["phase"] == "Running"
    assert status["attempts"] == 1
    assert status["startTime"] == NOW
    training = next(c for c in status["conditions"] if c["type"] == "Training")
    assert (training["status"], training["reason"]) == ("True", Reason.TRAINING_STARTED)
    done = job(("Complete", "", ""), completionTime=LATER)
    status = next_status(status, Observation(job=done, pods=[pod("Succeeded", exit_code=0, message=json.dumps(REPORT_OK))]), now=LATER, generation=1)
    assert status["phase"] == "Succeeded"
    assert status["metrics"] == {"trainLoss": 1.25, "evalLoss": 1.5, "tokensPerSecond": 900.0}
    assert status["output"] == {"adapterUri": "s3://b/ns/j/output/adapter", "reportUri": "s3://b/ns/j/output/report.json"}
    assert status["checkpoint"] == {"uri": "s3://b/ns/j/checkpoints/step-60/", "step": 60}
    assert status["progress"]["summary"] == "60/60 (100%)"
    assert status["completionTime"] == LATER
    assert status["observedGeneration"] == 1
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Succeeded"]["status"] == "True"
    assert conds["Training"]["status"] == "False"
    # lastTransitionTime of Training moved when it went True -> False.
    assert conds["Training"]["lastTransitionTime"] == LATER
    # What we write must be a valid status for the CRD's schema.
    FineTuneJobStatus.model_validate(status, by_alias=True)


def test_trainer_reasons_win_over_the_jobs():
    diverged = {"reason": "LossDiverged", "message": "loss became nan at step 12", "step": 12}
    obs = Observation(
        job=job(("Failed", "PodFailurePolicy", "Container trainer for pod x failed with exit code 3")),
        pods=[pod("Failed", exit_code=3, message=json.dumps(diverged))],
    )
    out = training_outcome(obs, "Running")
    assert (out.phase, out.reason, out.message) == ("Failed", Reason.LOSS_DIVERGED, "loss became nan at step 12")
    bad_data = {"reason": "InvalidDataset", "message": "s3://b/data/missing.jsonl: no such object"}
    obs = Observation(job=job(("Failed", "PodFailurePolicy", "exit code 2")), pods=[pod("Failed", exit_code=2, message=json.dumps(bad_data))])
    out = training_outcome(obs, "Running")
    assert out.reason == Reason.INVALID_DATASET and "no such object" in out.message


def test_oom_and_backoff_and_deadline():
    oom = Observation(job=job(("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")),
                      pods=[pod("Failed", exit_code=137, reason="OOMKilled")])
    assert training_outcome(oom, "Running").reason == Reason.OOM_KILLED
    crash = {"reason": "Error", "message": "RuntimeError: boom"}
    backoff = Observation(job=job(("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")),
                          pods=[pod("Failed", exit_code=1, message=json.dumps(crash))])
    out = training_outcome(backoff, "Running")
    assert out.reason == Reason.BACKOFF_LIMIT_EXCEEDED
    assert "RuntimeError: boom" in out.message
    deadline = Observation(job=job(("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")), pods=[])
    out = training_outcome(deadline, "Running")
    assert out.reason == Reason.DEADLINE_EXCEEDED and "activeDeadlineSeconds" in out.message


def test_restart_counts_attempts_and_stays_running():
    first = pod("Failed", exit_code=137, finished=NOW)
    second = pod("Running", running=True, finished=LATER)
    status = next_status({"phase": "Running", "attempts": 1}, Observation(job=job(), pods=[first, pod("Pending")]), now=NOW, generation=1)
    # Between the failed pod and its replacement the job is still training.
    assert status["phase"] == "Running"
    assert status["conditions"][0]["reason"] == Reason.RESTARTED
    status = next_status(status, Observation(job=job(), pods=[first, second]), now=LATER, generation=1)
    assert status["attempts"] == 2
    assert status["conditions"][0]["reason"] == Reason.RESTARTED
    # Attempts never go down, e.g. when the Job's finished pods are garbage-collected.
    status = next_status(status, Observation(job=job(), pods=[second]), now=LATER, generation=1)
    assert status["attempts"] == 2


def test_attempts_per_completion_index():
    pods = [pod("Running", running=True, index="0"), pod("Running", running=True, index="1"),
            pod("Failed", exit_code=1, index="1", finished="x")]
    assert count_attempts(pods) == 2
    assert count_attempts([pod("Pending"), pod("Pending", waiting="ErrImagePull")]) == 0


def test_image_pull_failure_is_reported():
    out = training_outcome(Observation(job=job(), pods=[pod("Pending", waiting="ImagePullBackOff")]), None)
    assert (out.phase, out.reason) == ("Pending", Reason.IMAGE_PULL_FAILED)
    assert "r/t:1" in out.message


def test_missing_secret_seen_by_the_kubelet_is_reported():
    # The operator cannot read Secrets under the chart's RBAC; the pod's
    # CreateContainerConfigError is how it learns that one is missing.
    stuck = pod("Pending", waiting="CreateContainerConfigError")
    stuck["status"]["containerStatuses"][0]["state"]["waiting"]["message"] = 'secret "hf-token" not found'
    out = training_outcome(Observation(job=job(), pods=[stuck]), None)
    assert (out.phase, out.reason) == ("Pending", Reason.SECRET_MISSING)
    assert 'secret "hf-token" not found' in out.message


def test_suspend_ours_versus_kueue():
    suspended = Observation(job=job(suspend=True), spec_suspend=True)
    status = next_status({"phase": "Running"}, suspended, now=NOW, generation=2)
    assert status["phase"] == "Suspended"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Suspended"] == "True"
    resumed = next_status(status, Observation(job=job(), pods=[pod("Running", running=True)]), now=LATER, generation=3)
    conds = {c["type"]: c for c in resumed["conditions"]}
    assert resumed["phase"] == "Running"
    assert (conds["Suspended"]["status"], conds["Suspended"]["reason"]) == ("False", Reason.RESUMED)
    # A Job suspended by Kueue (spec.suspend false on the FineTuneJob) waits for admission.
    queued = training_outcome(Observation(job=job(suspend=True), spec_suspend=False), None)
    assert (queued.phase, queued.reason) == ("Pending", Reason.PODS_PENDING)


def deployment(available: int, want: int = 1, **conds) -> dict:
    return {"spec": {"replicas": want}, "status": {
        "availableReplicas": available,
        "conditions": [{"type": t, "status": s, "message": f"{t} says {s}"} for t, s in conds.items()],
    }}


def test_serving_state_machine():
    done = job(("Complete", "", ""))
    ok_pod = [pod("Succeeded", exit_code=0, message=json.dumps(REPORT_OK))]
    status = next_status({"phase": "Running"}, Observation(job=done, pods=ok_pod, serving_enabled=True), now=NOW, generation=1)
    assert status["phase"] == "Succeeded"
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Serving"] == Reason.SERVING_PENDING
    status = next_status(status, Observation(job=done, pods=ok_pod, serving_enabled=True, deployment=deployment(1, Available="True")), now=NOW, generation=1)
    assert status["phase"] == "Serving" and status["serving"]["ready"] is True
    # A later failure shows in the Serving condition and serving.ready.
    status = next_status(status, Observation(job=done, pods=ok_pod, serving_enabled=True, deployment=deployment(0, Available="False")), now=LATER, generation=1)
    serving = {c["type"]: c for c in status["conditions"]}["Serving"]
    assert (serving["status"], serving["reason"]) == ("False", Reason.SERVING_FAILED)
    assert status["serving"]["ready"] is False
    # ...and keeps showing on the next event, without falling back to "pending".
    status = next_status(status, Observation(job=done, pods=ok_pod, serving_enabled=True, deployment=deployment(0, Available="False")), now=LATER, generation=1)
    assert status["phase"] == "Serving"
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Serving"] == Reason.SERVING_FAILED
    assert serving_outcome(deployment(0, Progressing="False"), False)[1] == Reason.SERVING_FAILED


def test_conditions_keep_transition_time_while_status_holds():
    conds = set_condition([], "Training", "True", "A", "m", NOW, 1)
    conds = set_condition(conds, "Training", "True", "B", "m2", LATER, 2)
    assert conds == [{"type": "Training", "status": "True", "reason": "B", "message": "m2", "lastTransitionTime": NOW, "observedGeneration": 2}]


def test_termination_message_garbage_is_ignored():
    assert termination_report(pod("Failed", exit_code=1, message="Traceback (most recent call last)")) is None
    assert termination_report(pod("Failed", exit_code=1, message="[1, 2]")) is None
    assert termination_report(pod("Failed", exit_code=1)) is None


def test_non_finite_metrics_are_dropped():
    report = dict(REPORT_OK, metrics={"trainLoss": float("nan"), "evalLoss": 2.0})
    status = next_status({}, Observation(job=job(("Complete", "", "")), pods=[pod("Succeeded", exit_code=0, message=json.dumps(report))]), now=NOW, generation=1)
    assert status["metrics"] == {"evalLoss": 2.0}


def test_transition_events():
    status = {"phase": "Failed", "conditions": [{"type": "Failed", "reason": "InvalidModel", "message": "cannot load s3://b/m"}]}
    kind, reason, message = transition_event("Running", "Failed", status)
    assert (kind, reason) == ("Warning", "PhaseFailed")
    assert message == "Running -> Failed (InvalidModel: cannot load s3://b/m)"
    assert transition_event("Running", "Running", status) is None


def test_status_patch_is_minimal_and_round_trips():
    from kubetune_operator.runtime.merge_patch import apply_patch, status_patch

    old = {"phase": "Running", "progress": {"step": 1, "eta": "5s"}, "attempts": 1, "conditions": [{"type": "A"}]}
    new = {"phase": "Running", "progress": {"step": 2, "eta": None}, "attempts": 1, "conditions": [{"type": "A"}], "metrics": {"trainLoss": 1.0}}
    patch = status_patch(old, new)
    assert patch == {"progress": {"step": 2, "eta": None}, "metrics": {"trainLoss": 1.0}}
    assert apply_patch(old, patch) == {"phase": "Running", "progress": {"step": 2}, "attempts": 1, "conditions": [{"type": "A"}], "metrics": {"trainLoss": 1.0}}
    assert status_patch(new, new) == {}


def test_finished_job_removed_by_ttl_keeps_the_verdict():
    ok = next_status({"phase": "Succeeded", "attempts": 1}, Observation(job=None), now=NOW, generation=1)
    assert ok["phase"] == "Succeeded"
    failed = {"phase": "Failed", "conditions": [{"type": "Failed", "status": "True", "reason": "InvalidModel"}]}
    assert next_status(failed, Observation(job=None), now=NOW, generation=1) == failed


def test_outputs_are_whatever_the_exporters_produced_by_the_contracts_naming():
    status: dict = {}
    apply_report(status, {"output": {"adapterUri": "s3://b/o/adapter", "ggufUri": "s3://b/o/gguf", "reportUri": "s3://b/o/report.html",
                                     "mergedUri": None, "adapter": "s3://b/o/x", "Evil Uri": "s3://b/o/y", "countUri": 3}})
    # A new format (gguf) needs no change here; keys that do not follow <name>Uri, and non-URIs, are dropped.
    assert status["output"] == {"adapterUri": "s3://b/o/adapter", "ggufUri": "s3://b/o/gguf", "reportUri": "s3://b/o/report.html"}
