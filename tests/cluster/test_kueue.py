"""FineTuneJobs admitted by the real Kueue controller (v0.17.0, tests/harness/kueue.py),
started for this module only: a ClusterQueue whose quota (2 CPUs) admits one
of these jobs at a time, a LocalQueue `training` in each test's namespace.

Two scenarios (issue 18's CI budget):
- two jobs on the queue: the second waits, visibly (phase Queued, an Admitted
  condition naming the queue and Kueue's reason), and starts when the first
  ends; suspended while admitted, it stays suspended (through its Workload) and
  resumes; a job naming a queue that does not exist waits with a message
  naming it, and nothing of it runs. The queue is what is tested here, so the
  trainer is a stand-in (the operator's KUBETUNE_TRAINER_COMMAND) that runs
  until the test releases it: the order of events is the test's, not the
  machine's speed;
- a higher-priority job preempts a running one, which is the third
  multi-node run of issue 18: ZeRO-2 on 2 pods x 2 processes, the real
  trainer under torchrun, with maxSteps at the spec's maximum: it cannot end
  before it is preempted, and the test deletes it once shown. The preempted
  trainer commits a checkpoint on SIGTERM, its job shows the preemption with
  Kueue's reason, resumes from that checkpoint on both pods when re-admitted,
  does not count it against backoffLimit (0 here), and its next commit marker
  lists every rank's files.
"""
from __future__ import annotations

import json
import os
import re
import signal
import urllib.request
from pathlib import Path

import pytest

from tests.harness import kueue as kueue_harness
from tests.harness.kubeapi import ApiError
from tests.harness.procs import pids_with_env
from tests.harness.waiting import wait_for

from .operator_helpers import FTJ, condition, create, events, events_with, jobs, pods, quickstart, status, wait_phase
from .test_multinode import INDEX, manifest, multinode, rank_files, resumed_at

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TIMEOUT = 420
# A trainer stand-in (the queue is under test) that runs until released: SIGUSR1 ends it with exit code 0.
# SIGTERM (a suspension or a preemption deleting its pod) ends it as it ends the real trainer: the container's
# PID 1 ignores a signal it has no handler for, and the kubelet would wait out the pod's grace period (120 s).
RELEASE_MARK = "stand-in trainer: runs until released"
STAND_IN = json.dumps(["python", "-c", "import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)); "
                                       f"signal.signal(signal.SIGUSR1, lambda *_: sys.exit(0)); signal.pause()  # {RELEASE_MARK}"])
UNTIL_STOPPED = 10_000_000  # training.maxSteps at the spec's maximum: the run ends when the test deletes it


@pytest.fixture(scope="module")
def kueue(control_plane):
    started = kueue_harness.start(control_plane)
    yield started
    started.stop()


def queued(bucket, name: str, queue: str = kueue_harness.LOCAL_QUEUE, **spec) -> dict:
    doc = quickstart(bucket, name, queueName=queue, **spec)
    doc["spec"]["resources"] = {"gpusPerNode": 0, "cpu": 2}  # the whole quota
    return doc


def pods_of(kube, namespace: str, job: str) -> list[dict]:
    return [p for p in pods(kube, namespace) if p["metadata"]["labels"]["kubetune.io/job"] == job]


def catches(pid: int, signum: int) -> bool:
    """Whether the process has installed a handler for `signum` (the kernel's SigCgt mask)."""
    try:
        mask = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(mask.split()[1], 16) >> (signum - 1) & 1)


def release(namespace: str, name: str) -> None:
    """End the stand-in trainer of job `name`: it exits 0, its Job completes. The signal goes once the
    process has installed its handler (before that, SIGUSR1's default action would kill it: exit 138)."""
    pids = wait_for(lambda: [pid for pid in pids_with_env({"KUBETUNE_NAMESPACE": namespace, "KUBETUNE_JOB": name}, RELEASE_MARK.encode())
                             if catches(pid, signal.SIGUSR1)],
                    timeout=60, what=f"{name}'s stand-in trainer waiting for its release")
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)


def workload_condition(kueue, namespace: str, job: str, type_: str) -> dict:
    """A condition Kueue wrote on the Workload of the batch Job `job`."""
    (workload,) = [w for w in kueue.workloads(namespace) if w["metadata"]["ownerReferences"][0]["name"] == job]
    return next((c for c in (workload.get("status") or {}).get("conditions") or [] if c["type"] == type_), {}) | {"_workload": workload}


def row(kube, namespace: str, name: str) -> list[str]:
    """`kubectl get ftj NAME`: NAME PHASE MODEL METHOD PROGRESS LOSS AGE."""
    return kube.kubectl("get", "ftj", name, "-n", namespace, "--no-headers").stdout.split()


def test_a_queue_that_admits_one_runs_two_jobs_one_after_the_other(kube, namespace, kueue, operator_factory, s3_env, bucket_with_assets):
    bucket = bucket_with_assets
    kueue.local_queue(namespace)
    op = operator_factory(KUBETUNE_TRAINER_COMMAND=STAND_IN, **s3_env)
    create(kube, namespace, queued(bucket, "first"))
    wait_phase(kube, namespace, "first", "Running", timeout=120, operator=op)
    create(kube, namespace, queued(bucket, "second"))
    create(kube, namespace, queued(bucket, "lost", queue="nowhere"))

    # The second waits, visibly, while the first runs; Kueue says why.
    st = wait_for(lambda: (s := status(kube, namespace, "second")).get("phase") == "Queued" and "quota" in condition(s, "Admitted").get("message", "") and s,
                  timeout=60, what="second Queued with Kueue's reason", describe=lambda: json.dumps(status(kube, namespace, "second")))
    admitted = condition(st, "Admitted")
    assert (admitted["status"], admitted["reason"]) == ("False", "Queued") and "waiting in LocalQueue training" in admitted["message"]
    assert row(kube, namespace, "second")[1] == "Queued"
    assert status(kube, namespace, "first")["phase"] == "Running"
    assert condition(status(kube, namespace, "first"), "Admitted")["status"] == "True"
    assert not pods_of(kube, namespace, "second")

    # A queue that does not exist: the job waits, the message names the queue, nothing runs.
    lost = wait_for(lambda: "nowhere" in (m := condition(status(kube, namespace, "lost"), "Admitted").get("message", "")) and "exist" in m
                    and status(kube, namespace, "lost"), timeout=60, what="lost's message naming its queue",
                    describe=lambda: json.dumps(status(kube, namespace, "lost")))
    assert lost["phase"] == "Queued"

    release(namespace, "first")
    first = wait_phase(kube, namespace, "first", "Succeeded", "Failed", timeout=120, operator=op)
    assert first["phase"] == "Succeeded"
    wait_phase(kube, namespace, "second", "Running", timeout=60, operator=op)
    (second_pod,) = pods_of(kube, namespace, "second")
    assert second_pod["metadata"]["creationTimestamp"] >= first["completionTime"]  # started when the first ended

    # Suspending an admitted job holds: Kueue would un-suspend its Job if the operator
    # suspended it directly, so the operator deactivates the job's Workload instead.
    kube.raw.merge_patch(f"{FTJ.format(ns=namespace)}/second", {"spec": {"suspend": True}})
    wait_phase(kube, namespace, "second", "Suspended", timeout=60, operator=op)
    # Kueue's own decision: it evicted the deactivated Workload and released its quota; it admits
    # (un-suspends) an inactive Workload no more, so what holds now holds until it is reactivated.
    evicted = wait_for(lambda: (c := workload_condition(kueue, namespace, "second-train", "Evicted")).get("reason") == "Deactivated" and c,
                       timeout=60, what="Kueue: second's Workload evicted, Deactivated",
                       describe=lambda: json.dumps(kueue.workloads(namespace))[-3000:])
    assert evicted["status"] == "True" and evicted["_workload"]["spec"]["active"] is False, evicted
    wait_for(lambda: workload_condition(kueue, namespace, "second-train", "QuotaReserved").get("status") == "False",
             timeout=60, what="Kueue: second's quota released", describe=lambda: json.dumps(kueue.workloads(namespace))[-3000:])
    wait_for(lambda: not pods_of(kube, namespace, "second"), timeout=60, what="second's pod stopped")
    (second_job,) = [j for j in jobs(kube, namespace) if j["metadata"]["name"] == "second-train"]
    assert second_job["spec"]["suspend"] is True and status(kube, namespace, "second")["phase"] == "Suspended"
    kube.raw.merge_patch(f"{FTJ.format(ns=namespace)}/second", {"spec": {"suspend": False}})
    wait_phase(kube, namespace, "second", "Running", timeout=120, operator=op)
    release(namespace, "second")
    second = wait_phase(kube, namespace, "second", "Succeeded", "Failed", timeout=120, operator=op)
    assert second["phase"] == "Succeeded"
    events_with(kube, namespace, "second", "PhaseQueued", "PhaseRunning", "PhaseSucceeded")  # fails unless all three come
    (lost_job,) = [j for j in jobs(kube, namespace) if j["metadata"]["name"] == "lost-train"]
    assert lost_job["spec"]["suspend"] is True and status(kube, namespace, "lost")["phase"] == "Queued"
    assert not pods_of(kube, namespace, "lost")


@pytest.fixture
def priorities(kube, namespace):
    names = {level: f"kt-{level}-{namespace}"[:63] for level in ("low", "high")}
    for level, value in (("low", 100), ("high", 1000)):
        kube.raw.request("POST", "/apis/scheduling.k8s.io/v1/priorityclasses", {
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": names[level]}, "value": value})
    yield names
    for name in names.values():
        try:
            kube.raw.request("DELETE", f"/apis/scheduling.k8s.io/v1/priorityclasses/{name}")
        except ApiError:
            pass


def _metrics(ip: str) -> str:
    try:
        with urllib.request.urlopen(f"http://{ip}:9400/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return ""


def test_a_higher_priority_job_preempts_a_multinode_run_that_resumes(kube, namespace, kueue, operator_factory, s3_env,
                                                                      bucket_with_assets, real_node, priorities):
    bucket = bucket_with_assets
    kueue.local_queue(namespace)
    # The stand-in replaces only single-process trainers: the preemptor. The preempted job runs the real trainer.
    # The admin lets these jobs name the test's two PriorityClasses (the default policy allows none).
    # (DeepSpeed's CPU ops come compiled in the trainer image: nothing is built at start.)
    policy = json.loads(s3_env["KUBETUNE_POLICY"]) | {"allowedPriorityClasses": sorted(priorities.values())}
    op = operator_factory(KUBETUNE_TRAINER_COMMAND=STAND_IN, **(s3_env | {"KUBETUNE_POLICY": json.dumps(policy)}))
    low = multinode(bucket, "low", "deepspeed", zero=2, procs=2, steps=UNTIL_STOPPED, method="full", backoff_limit=0)
    low["spec"].update(queueName=kueue_harness.LOCAL_QUEUE, priorityClassName=priorities["low"])
    low["spec"]["resources"]["cpu"] = 1  # 2 pods: the whole quota
    # The run goes on after the commit the test reads: retention must not delete that commit meanwhile (keepLast 3 would, 15 steps on).
    low["spec"]["checkpoint"]["keepLast"] = 100
    create(kube, namespace, low)
    wait_for(lambda: (status(kube, namespace, "low").get("checkpoint") or {}).get("step", 0) >= 5, timeout=TIMEOUT,
             what="low's first commit", describe=lambda: json.dumps(status(kube, namespace, "low")) + op.log_tail(20))
    # Per-rank metrics stay labelled by rank: node 1's first process is global rank 2.
    attempt1 = {p["metadata"]["annotations"][INDEX]: p for p in pods_of(kube, namespace, "low")}
    assert 'rank="2"' in _metrics(attempt1["1"]["status"]["podIP"])
    create(kube, namespace, queued(bucket, "urgent", priorityClassName=priorities["high"]))

    preempted = wait_for(lambda: (s := status(kube, namespace, "low")).get("phase") == "Queued" and s, timeout=120,
                         what="low preempted", describe=lambda: json.dumps(status(kube, namespace, "low")))
    assert condition(preempted, "Admitted")["reason"] == "Preempted", preempted
    # Two PhaseQueued Events: Pending -> Queued on creation, then the preemption's, posted after its status write.
    note = wait_for(lambda: next((e["message"] for e in events(kube, namespace, "low")
                                  if e["reason"] == "PhaseQueued" and e["message"].startswith("Running -> Queued")), None),
                    timeout=30, what="low's Running -> Queued Event",
                    describe=lambda: str([e["message"] for e in events(kube, namespace, "low") if e["reason"] == "PhaseQueued"]))
    assert "Running -> Queued (Preempted: Kueue evicted the Job (Preempted:" in note, note
    # Kueue's suspension deleted the first attempt's pods; the harness keeps their container logs.
    first = wait_for(lambda: "stopped by SIGTERM at step" in (log := real_node.logs(namespace, attempt1["0"]["metadata"]["name"])) and log,
                     timeout=120, what="low's first attempt stopped by SIGTERM")
    stopped = sorted({int(m.group(1)) for m in re.finditer(r"SIGTERM: checkpointing step (\d+)", first)})  # ranks 0 and 1
    assert len(stopped) == 1 and f"stopped by SIGTERM at step {stopped[0]}; checkpoint" in first, first[-3000:]
    # Low waits while the preemptor runs, until the test releases it.
    wait_phase(kube, namespace, "urgent", "Running", timeout=120, operator=op)
    assert status(kube, namespace, "low")["phase"] == "Queued"
    release(namespace, "urgent")
    assert wait_phase(kube, namespace, "urgent", "Succeeded", "Failed", timeout=120, operator=op)["phase"] == "Succeeded"

    # Re-admitted, both pods resume from the SIGTERM checkpoint and commit the next one.
    st = wait_for(lambda: (s := status(kube, namespace, "low")).get("phase") == "Running" and (s.get("checkpoint") or {}).get("step", 0) > stopped[0] and s,
                  timeout=TIMEOUT, what="low's next commit after the resume", describe=lambda: json.dumps(status(kube, namespace, "low")) + op.log_tail(20))
    assert st["attempts"] == 2 and condition(st, "Admitted")["status"] == "True", st
    (job,) = [j for j in jobs(kube, namespace) if j["metadata"]["name"] == "low-train"]
    assert not job["status"].get("failed"), job["status"]  # the preemption is not a retry (backoffLimit 0)
    attempt2 = {p["metadata"]["annotations"][INDEX]: p for p in pods_of(kube, namespace, "low")}
    assert {i: p["metadata"]["uid"] for i, p in attempt2.items()} != {i: p["metadata"]["uid"] for i, p in attempt1.items()}
    for index in ("0", "1"):  # both pods of the second attempt resume from the SIGTERM checkpoint
        assert resumed_at(real_node.logs(namespace, attempt2[index]["metadata"]["name"])) == stopped, index
    step = st["checkpoint"]["step"]
    files = rank_files(manifest(bucket, namespace, "low", step))
    for rank in range(4):
        assert files[f"rng_state_{rank}.pth"] == rank // 2, files
        assert files[f"global_step{step}/zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"] == rank // 2, files
    assert files[f"global_step{step}/mp_rank_00_model_states.pt"] == 0
    kube.raw.request("DELETE", f"{FTJ.format(ns=namespace)}/low")  # the run would not end by itself
    # Its pods checkpoint on SIGTERM: the bucket is emptied only once they are gone.
    wait_for(lambda: not pods_of(kube, namespace, "low"), timeout=120, what="low's pods gone after its deletion",
             describe=lambda: str([p["metadata"]["name"] for p in pods_of(kube, namespace, "low")]))
