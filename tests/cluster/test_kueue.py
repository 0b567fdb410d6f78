"""FineTuneJobs admitted by the real Kueue controller (v0.17.0, tests/harness/kueue.py),
started for this module only: a ClusterQueue whose quota (2 CPUs) admits one
of these jobs at a time, a LocalQueue `training` in each test's namespace.

Two scenarios (issue 18's CI budget):
- two jobs on the queue: the second waits, visibly (phase Queued, an Admitted
  condition naming the queue and Kueue's reason), and starts when the first
  ends; suspended while admitted, it stays suspended (through its Workload) and
  resumes; a job naming a queue that does not exist waits with a message
  naming it, and nothing of it runs. The queue is what is tested here, so the
  trainer is a stand-in (the operator's KUBETUNE_TRAINER_COMMAND, a sleep);
- a higher-priority job preempts a running one, which is the third
  multi-node run of issue 18: ZeRO-2 on 2 pods x 2 processes, the real
  trainer under torchrun. The preempted trainer commits a checkpoint on
  SIGTERM, its job shows the preemption with Kueue's reason, resumes from that
  checkpoint on both pods when re-admitted, does not count it against
  backoffLimit (0 here), and its final commit marker lists every rank's files.
"""
from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path

import pytest

from tests.harness import kueue as kueue_harness
from tests.harness.kubeapi import ApiError
from tests.harness.waiting import wait_for

from .operator_helpers import FTJ, condition, create, events, jobs, pods, quickstart, status, wait_phase
from .test_multinode import INDEX, manifest, multinode, rank_files, resumed_at

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TIMEOUT = 420
STAND_IN = json.dumps(["python", "-c", "import time; time.sleep(8)"])  # a trainer stand-in: the queue is under test


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

    first = wait_phase(kube, namespace, "first", "Succeeded", "Failed", timeout=120, operator=op)
    assert first["phase"] == "Succeeded"
    wait_phase(kube, namespace, "second", "Running", timeout=60, operator=op)
    (second_pod,) = pods_of(kube, namespace, "second")
    assert second_pod["metadata"]["creationTimestamp"] >= first["completionTime"]  # started when the first ended

    # Suspending an admitted job holds: Kueue would un-suspend its Job if the operator
    # suspended it directly, so the operator deactivates the job's Workload instead.
    kube.raw.merge_patch(f"{FTJ.format(ns=namespace)}/second", {"spec": {"suspend": True}})
    wait_phase(kube, namespace, "second", "Suspended", timeout=60, operator=op)
    wait_for(lambda: not pods_of(kube, namespace, "second"), timeout=60, what="second's pod stopped")
    time.sleep(5)  # long enough for Kueue to have un-suspended a Job it still admitted
    (workload,) = [w for w in kueue.workloads(namespace) if w["metadata"]["ownerReferences"][0]["name"] == "second-train"]
    assert workload["spec"]["active"] is False
    assert status(kube, namespace, "second")["phase"] == "Suspended" and not pods_of(kube, namespace, "second")
    kube.raw.merge_patch(f"{FTJ.format(ns=namespace)}/second", {"spec": {"suspend": False}})
    second = wait_phase(kube, namespace, "second", "Succeeded", "Failed", timeout=120, operator=op)
    assert second["phase"] == "Succeeded"
    assert {"PhaseQueued", "PhaseRunning", "PhaseSucceeded"} <= {e["reason"] for e in events(kube, namespace, "second")}
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
                                                                      bucket_with_assets, pod_runner, priorities):
    bucket = bucket_with_assets
    kueue.local_queue(namespace)
    extensions = os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache/kubetune/torch-extensions"))
    # The stand-in replaces only single-process trainers: the preemptor. The preempted job runs the real trainer.
    # The admin lets these jobs name the test's two PriorityClasses (the default policy allows none).
    policy = json.loads(s3_env["KUBETUNE_POLICY"]) | {"allowedPriorityClasses": sorted(priorities.values())}
    op = operator_factory(KUBETUNE_TRAINER_COMMAND=STAND_IN, KUBETUNE_EXTRA_TRAINER_ENV=f"TORCH_EXTENSIONS_DIR={extensions}",
                          **(s3_env | {"KUBETUNE_POLICY": json.dumps(policy)}))
    low = multinode(bucket, "low", "deepspeed", zero=2, procs=2, steps=20, method="full", backoff_limit=0)
    low["spec"].update(queueName=kueue_harness.LOCAL_QUEUE, priorityClassName=priorities["low"])
    low["spec"]["resources"]["cpu"] = 1  # 2 pods: the whole quota
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
    note = next(e["message"] for e in events(kube, namespace, "low") if e["reason"] == "PhaseQueued")
    assert "Running -> Queued (Preempted: Kueue evicted the Job (Preempted:" in note, note
    assert wait_phase(kube, namespace, "urgent", "Succeeded", "Failed", timeout=120, operator=op)["phase"] == "Succeeded"
    st = wait_phase(kube, namespace, "low", "Succeeded", "Failed", timeout=TIMEOUT, operator=op)
    assert st["phase"] == "Succeeded" and st["progress"]["step"] == 20 and st["attempts"] == 2, st
    (job,) = [j for j in jobs(kube, namespace) if j["metadata"]["name"] == "low-train"]
    assert not job["status"].get("failed"), job["status"]  # the preemption is not a retry (backoffLimit 0)
    assert condition(st, "Admitted")["status"] == "True"

    # Kueue's suspension deleted the first attempt's pods; their logs stay with the pod runner.
    first = pod_runner.logs(namespace, attempt1["0"]["metadata"]["name"])
    stopped = sorted({int(m.group(1)) for m in re.finditer(r"SIGTERM: checkpointing step (\d+)", first)})  # ranks 0 and 1
    assert len(stopped) == 1 and f"stopped by SIGTERM at step {stopped[0]}; checkpoint" in first, first[-3000:]
    attempt2 = {p["metadata"]["annotations"][INDEX]: p for p in pods_of(kube, namespace, "low")}
    assert {i: p["metadata"]["uid"] for i, p in attempt2.items()} != {i: p["metadata"]["uid"] for i, p in attempt1.items()}
    for index in ("0", "1"):  # both pods of the second attempt resume from the SIGTERM checkpoint
        assert resumed_at(pod_runner.logs(namespace, attempt2[index]["metadata"]["name"])) == stopped, index
    files = rank_files(manifest(bucket, namespace, "low", 20))
    for rank in range(4):
        assert files[f"rng_state_{rank}.pth"] == rank // 2, files
        assert files[f"global_step20/zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"] == rank // 2, files
    assert files["global_step20/mp_rank_00_model_states.pt"] == 0
