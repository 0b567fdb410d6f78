"""Pure decisions of issue 18, without a cluster: what a queued job's status says
from its Kueue Workload, how a queued job is suspended, and which pods of a
multi-node Job belong to a failed attempt (to be evicted)."""

from __future__ import annotations

from kubetune_operator.api.status import Reason
from kubetune_operator.group_restart import describe, failed_attempt
from kubetune_operator.status.queueing import slim_workload, wants_active
from kubetune_operator.status.observed import Observation, next_status, transition_event

NOW = "2026-11-20T10:00:00Z"


def job(suspend: bool) -> dict:
    return {"spec": {"suspend": suspend}, "status": {}}


def workload(*conditions: tuple[str, str, str, str], active: bool = True, cq: str | None = None) -> dict:
    return slim_workload({
        "metadata": {"name": "job-t-train-1a2b3"}, "spec": {"active": active},
        "status": {"admission": {"clusterQueue": cq} if cq else None,
                   "conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions]}})


def conditions(status: dict) -> dict:
    return {c["type"]: c for c in status["conditions"]}


def test_a_job_waiting_for_its_queue_is_queued_with_kueues_reason():
    wl = workload(("QuotaReserved", "False", "Pending", "LocalQueue nowhere doesn't exist"))
    status = next_status({"phase": "Pending"}, Observation(job=job(True), queue_name="nowhere", workload=wl), now=NOW, generation=1)
    admitted = conditions(status)["Admitted"]
    assert status["phase"] == "Queued"
    assert (admitted["status"], admitted["reason"]) == ("False", Reason.QUEUED)
    assert admitted["message"] == "waiting in LocalQueue nowhere: LocalQueue nowhere doesn't exist"
    # Before Kueue made a Workload (or without Kueue), the message still names the queue.
    bare = next_status({}, Observation(job=job(True), queue_name="training"), now=NOW, generation=1)
    assert bare["phase"] == "Queued" and "LocalQueue training" in conditions(bare)["Admitted"]["message"]


def test_admission_and_preemption_show_in_phase_condition_and_event():
    running = next_status({"phase": "Queued"}, Observation(job=job(False), pods=[], queue_name="training",
                          workload=workload(("Admitted", "True", "Admitted", "The workload is admitted"), cq="kubetune-training")),
                          now=NOW, generation=1)
    assert (conditions(running)["Admitted"]["status"], conditions(running)["Admitted"]["reason"]) == ("True", Reason.ADMITTED)
    assert "ClusterQueue kubetune-training" in conditions(running)["Admitted"]["message"]
    running["phase"] = "Running"
    evicted = workload(("Evicted", "True", "Preempted", "Preempted to accommodate a workload due to prioritization in the ClusterQueue"))
    preempted = next_status(running, Observation(job=job(True), queue_name="training", workload=evicted), now=NOW, generation=1)
    assert preempted["phase"] == "Queued"
    assert conditions(preempted)["Admitted"]["reason"] == Reason.PREEMPTED
    kind, reason, message = transition_event("Running", "Queued", preempted)
    assert reason == "PhaseQueued" and "Preempted to accommodate a workload" in message
    assert "resumes from the newest committed checkpoint" in message


def test_a_queued_job_is_suspended_through_its_workload():
    assert wants_active(True, workload()) is False  # suspend: deactivate
    assert wants_active(True, workload(active=False)) is None  # already
    assert wants_active(False, workload(active=False)) is True  # resume: re-activate
    assert wants_active(False, None) is None  # no Workload yet: nothing to do
    # The user's suspension wins over "waiting for the queue" in the phase.
    suspended = next_status({}, Observation(job=job(True), spec_suspend=True, queue_name="training",
                            workload=workload(active=False)), now=NOW, generation=2)
    assert suspended["phase"] == "Suspended"


def pod(name: str, index: str, phase: str, created: str, uid: str | None = None, finished: str | None = None,
        exit_code: int = 1, deleting: bool = False) -> dict:
    state = {"terminated": {"exitCode": exit_code, "reason": "Error", "finishedAt": finished}} if finished else {"running": {}}
    meta = {"name": name, "uid": uid or name, "creationTimestamp": created,
            "annotations": {"batch.kubernetes.io/job-completion-index": index}}
    if deleting:
        meta["deletionTimestamp"] = finished or created
    return {"metadata": meta, "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]}}


T0, T1, T2, T3 = "2026-11-20T10:00:00Z", "2026-11-20T10:01:00Z", "2026-11-20T10:01:01Z", "2026-11-20T10:01:30Z"


def test_the_live_pods_of_a_failed_attempt_are_its_peers_and_replacements_are_not():
    first = [pod("t-0-a", "0", "Running", T0), pod("t-1-a", "1", "Failed", T0, finished=T1)]
    attempt = failed_attempt(first, nodes=2)
    assert attempt.peers == ["t-0-a"] and attempt.failed["metadata"]["name"] == "t-1-a"
    assert "t-1-a (node 1) failed: exit code 1 (Error); ending the rest of its attempt (t-0-a); all 2 nodes restart" in describe(attempt, 2)
    # Acted on once: the same failure, the evicted peer failing in turn (in the same
    # second as the failure, as its replacement's creation), the replacements.
    later = [pod("t-0-a", "0", "Failed", T0, finished=T1), first[1], pod("t-0-b", "0", "Running", T1), pod("t-1-b", "1", "Pending", T2)]
    assert failed_attempt(later, nodes=2, handled=attempt.handled) is None
    # A failure of the next attempt ends that attempt's pods only.
    third = [*later[:2], pod("t-0-b", "0", "Failed", T1, uid="t-0-b", finished=T3), pod("t-1-b", "1", "Running", T2)]
    again = failed_attempt(third, nodes=2, handled=attempt.handled)
    assert again.peers == ["t-1-b"]


def test_one_node_jobs_and_pods_being_deleted_are_left_alone():
    pods = [pod("t-0", "0", "Failed", T0, finished=T1), pod("t-1", "1", "Running", T0, deleting=True)]
    assert failed_attempt(pods, nodes=1) is None
    attempt = failed_attempt(pods, nodes=2)
    assert attempt.peers == [] and "no other pod of its attempt is left" in describe(attempt, 2)
