"""The operator end to end with the real trainer (tiny model, CPU) in its image
on the real node: training, kill-and-resume, operator restart, peering, suspend/resume,
delete, immutable fields and bad input. Serving: tests/cluster/test_serving.py."""
from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from tests.harness.procs import pids_with_env
from tests.harness.waiting import wait_for

from .operator_helpers import FTJ, condition, create, events_with, get, jobs, manifest, pods, quickstart, status, wait_phase
from .scheduling import new_pods_held
from .test_multinode import committed

pytestmark = pytest.mark.cluster

TRAIN_TIMEOUT = 240


def long_run(bucket, name: str, steps: int = 400, **spec) -> dict:
    """Long enough to act on mid-run: checkpoints every 20 steps."""
    doc = quickstart(bucket, name, **spec)
    # A gentle learning rate: long runs at the quickstart's 3e-3 overfit the tiny
    # data and trip the trainer's divergence watchdog.
    doc["spec"]["training"].update(maxSteps=steps, logEverySteps=5, learningRate=0.0003)
    doc["spec"]["checkpoint"] = {"everySteps": 20, "keepLast": 3}
    return doc


def trainer_pids(namespace: str, name: str) -> list[int]:
    """PIDs of this job's trainer processes inside its container, seen from the
    host (found by the env the pod gave them)."""
    return pids_with_env({"KUBETUNE_NAMESPACE": namespace, "KUBETUNE_JOB": name}, b"kubetune-train")


# --------------------------------------------------------------------------- end to end


def test_quickstart_end_to_end(kube, namespace, operator_factory, s3_env, bucket_with_assets, cluster_mlflow_server):
    mlflow_server = cluster_mlflow_server
    bucket = bucket_with_assets
    op = operator_factory(**s3_env)
    # Tracked as a team would: a real MLflow server, TensorBoard files with the outputs.
    experiment = f"{namespace}-quickstart"
    create(kube, namespace, quickstart(bucket, "quickstart", tracking={"backend": "mlflow", "uri": mlflow_server.url, "project": experiment,
                                                                      "tensorboard": True}))
    seen_phases, seen_rows = [], []
    deadline = time.monotonic() + TRAIN_TIMEOUT
    while time.monotonic() < deadline:
        st = status(kube, namespace, "quickstart")
        if st.get("phase") and (not seen_phases or seen_phases[-1] != st["phase"]):
            seen_phases.append(st["phase"])
        if st.get("phase") == "Running":
            row = kube.kubectl("get", "ftj", "quickstart", "-n", namespace, "--no-headers").stdout.split()
            seen_rows.append(row)
        if st.get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(0.3)
    assert st.get("phase") == "Succeeded", (st, op.log_tail())
    # Pending is often too short to poll; its Event below proves it happened.
    assert seen_phases[0] in ("Pending", "Running") and "Running" in seen_phases, seen_phases
    # kubectl get ftj showed live progress and loss while running: NAME PHASE MODEL METHOD PROGRESS... LOSS AGE
    live = [r for r in seen_rows if len(r) >= 8 and "/60" in r[4]]
    assert live, seen_rows[-3:]
    assert st["progress"]["step"] == st["progress"]["totalSteps"] == 60
    assert st["metrics"]["trainLoss"] > 0
    adapter = st["output"]["adapterUri"]
    assert adapter.startswith(f"s3://{bucket.name}/{namespace}/quickstart/output")
    prefix = adapter.removeprefix(f"s3://{bucket.name}/").rstrip("/") + "/"
    assert any(k.endswith("adapter_model.safetensors") for k in bucket.keys(prefix)), bucket.keys(prefix)
    assert st["output"]["reportUri"].startswith(f"s3://{bucket.name}/")
    # The newest committed checkpoint, as MinIO's commit markers say: the final step's (the run waits for its upload).
    assert committed(bucket, namespace, "quickstart")[-1] == st["checkpoint"]["step"] == 60, (committed(bucket, namespace, "quickstart"), st["checkpoint"])
    uid = get(kube, namespace, "quickstart")["metadata"]["uid"]  # the run's own prefix, run-<uid>
    assert st["checkpoint"]["uri"].rstrip("/") == f"s3://{bucket.name}/{namespace}/quickstart/checkpoints/run-{uid}/step-{60:08d}", st["checkpoint"]
    assert st["attempts"] == 1
    events_with(kube, namespace, "quickstart", "PhasePending", "PhaseRunning", "PhaseSucceeded")  # fails unless all three come
    # status.tracking.runUrl is the run on the server, holding the final metrics status shows.
    client = mlflow_server.client()
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [(r.info.run_name, r.info.status, r.info.start_time, r.data.params.get("job.name"), r.data.metrics) for r in runs]
    run = runs[0]
    assert st["tracking"]["runUrl"].startswith(mlflow_server.url) and st["tracking"]["runUrl"].endswith(f"/runs/{run.info.run_id}")
    assert run.info.status == "FINISHED" and run.data.metrics["trainLoss"] == pytest.approx(st["metrics"]["trainLoss"], rel=1e-6)
    tensorboard = st["tracking"]["tensorboardUri"].removeprefix(f"s3://{bucket.name}/")
    assert any(".tfevents." in k for k in bucket.keys(tensorboard)), bucket.keys(tensorboard)
    tracked = condition(st, "Tracking")
    assert (tracked["status"], tracked["reason"]) == ("True", "TrackingLogged") and run.info.run_id in tracked["message"]


def _trainer_pod_names(kube, namespace: str) -> list[str]:
    return [p["metadata"]["name"] for p in sorted(pods(kube, namespace), key=lambda p: p["metadata"]["creationTimestamp"])]


def test_trainer_killed_mid_run_resumes_from_checkpoint(kube, namespace, operator_factory, s3_env, bucket_with_assets, real_node):
    """Killed twice, one way each: SIGKILL to the trainer inside its container
    (no chance to save), then `kubectl delete pod` (SIGTERM: it commits its
    step and stops). Each next attempt resumes from the newest committed
    checkpoint and the job ends at its last step, as an uninterrupted run."""
    bucket = bucket_with_assets
    op = operator_factory(**s3_env)
    create(kube, namespace, long_run(bucket, "killme", steps=120))
    wait_for(lambda: (status(kube, namespace, "killme").get("checkpoint") or {}).get("step", 0) >= 20,
             timeout=TRAIN_TIMEOUT, what="a committed checkpoint in status", describe=lambda: json.dumps(status(kube, namespace, "killme")) + op.log_tail(20))
    running = status(kube, namespace, "killme")
    killed_at = running["checkpoint"]["step"]
    # What status shows while the job runs is a checkpoint the trainer committed
    # (its marker is there), not a path rebuilt from the step number.
    assert running["phase"] == "Running", running
    marker = running["checkpoint"]["uri"].removeprefix(f"s3://{bucket.name}/").rstrip("/") + "/COMMITTED.json"
    assert bucket.client.head_object(Bucket=bucket.name, Key=marker), marker
    (first_pod,) = _trainer_pod_names(kube, namespace)

    # 1. SIGKILL inside the container: the kernel kills the trainer (seen from the host, where the container's
    # processes are). The node is cordoned meanwhile: nothing commits once the killed trainer is gone, and its
    # replacement waits for a node, so the newest commit marker then is exactly the one the next attempt must resume.
    pod_path = f"/api/v1/namespaces/{namespace}/pods/{first_pod}"
    with new_pods_held(kube):
        pids = trainer_pids(namespace, "killme")
        assert pids, "trainer process not found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not trainer_pids(namespace, "killme"), timeout=60, what="the killed trainer gone")
        killed = wait_for(lambda: ((kube.raw.get(pod_path)["status"].get("containerStatuses") or [{}])[0].get("state") or {}).get("terminated"),
                          60, what="the kubelet reporting the killed container")
        newest = committed(bucket, namespace, "killme")[-1]
    assert killed["exitCode"] == 137, killed  # 128 + SIGKILL, as the kubelet read it from the runtime
    assert newest >= killed_at

    # 2. The second attempt resumes from exactly that checkpoint and trains; then `kubectl delete pod` (SIGTERM:
    # the trainer commits its step and stops), the node cordoned again until that attempt's trainer is gone. The
    # trainer is frozen (SIGSTOP) from its first logged step on until the kubelet's SIGTERM is pending, so it is
    # mid-run when the signal lands however fast it trains (it once finished all 120 steps before the delete).
    second = wait_for(lambda: next((n for n in _trainer_pod_names(kube, namespace) if n != first_pod), None), 60,
                      what="the Job's second pod")
    resumed = wait_for(lambda: _resumed_steps(real_node.logs(namespace, second)), TRAIN_TIMEOUT,
                       what="the second attempt resuming", describe=lambda: real_node.logs(namespace, second)[-2000:])
    assert resumed == [newest], (newest, resumed)
    wait_for(lambda: _trained_steps(real_node.logs(namespace, second)), TRAIN_TIMEOUT, what="the second attempt's first step",
             describe=lambda: real_node.logs(namespace, second)[-2000:])
    frozen = trainer_pids(namespace, "killme")
    assert frozen, "the second attempt's trainer ended before the test could act"
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    with new_pods_held(kube):
        kube.kubectl("-n", namespace, "delete", "pod", second, "--wait=false")
        wait_for(lambda: any(_sigterm_pending(pid) for pid in frozen), 60, what="the kubelet's SIGTERM pending")
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        stopped = wait_for(lambda: re.search(r"stopped by SIGTERM at step (\d+); checkpoint \S+ committed", real_node.logs(namespace, second)),
                           TRAIN_TIMEOUT, what="the second attempt committing on SIGTERM",
                           describe=lambda: real_node.logs(namespace, second)[-2000:])
        wait_for(lambda: not trainer_pids(namespace, "killme"), timeout=60, what="the second attempt's trainer gone")
        newest = committed(bucket, namespace, "killme")[-1]
    sigterm_step = int(stopped.group(1))
    assert newest == sigterm_step > resumed[0], (newest, sigterm_step, resumed)

    # 3. The third attempt resumes from the SIGTERM checkpoint and finishes.
    st = wait_phase(kube, namespace, "killme", "Succeeded", "Failed", timeout=TRAIN_TIMEOUT, operator=op)
    assert st["phase"] == "Succeeded", st
    assert st["attempts"] == 3
    assert st["progress"]["step"] == st["progress"]["totalSteps"] == 120 and st["checkpoint"]["step"] == 120
    (third,) = [n for n in real_node.logged_pods(namespace, "killme-train-") if n not in (first_pod, second)]
    assert _resumed_steps(real_node.logs(namespace, third)) == [sigterm_step]
    assert condition(st, "Succeeded")["status"] == "True"
    adapter = st["output"]["adapterUri"].removeprefix(f"s3://{bucket.name}/").rstrip("/") + "/"
    assert any(k.endswith("adapter_model.safetensors") for k in bucket.keys(adapter))


def _trained_steps(log: str) -> list[int]:
    """The steps a trainer's progress lines report (`step N/M ...`, every logEverySteps)."""
    return [int(step) for step in re.findall(r"\bstep (\d+)/\d+", log)]


def _sigterm_pending(pid: int) -> bool:
    """SIGTERM sent to `pid` and not yet handled (it is stopped), from /proc/<pid>/status."""
    try:
        lines = open(f"/proc/{pid}/status").read().splitlines()
    except FileNotFoundError:
        return False
    masks = [int(line.split()[1], 16) for line in lines if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask & (1 << (signal.SIGTERM - 1)) for mask in masks)


def _resumed_steps(log: str) -> list[int]:
    """The steps a trainer's log says it resumed from (one per start)."""
    return [int(step) for step in re.findall(r"resuming from committed checkpoint step (\d+)", log)]


def test_operator_killed_and_restarted_mid_run(kube, namespace, operator_factory, s3_env, bucket_with_assets):
    bucket = bucket_with_assets
    op = operator_factory(**s3_env)
    create(kube, namespace, long_run(bucket, "restart", steps=100))
    wait_phase(kube, namespace, "restart", "Running", timeout=TRAIN_TIMEOUT, operator=op)
    op.kill()
    time.sleep(2)
    op2 = operator_factory(**s3_env)
    st = wait_phase(kube, namespace, "restart", "Succeeded", "Failed", timeout=TRAIN_TIMEOUT, operator=op2)
    assert st["phase"] == "Succeeded"
    assert [j["metadata"]["name"] for j in jobs(kube, namespace)] == ["restart-train"]
    assert len(kube.raw.get(f"/api/v1/namespaces/{namespace}/configmaps", labelSelector="kubetune.io/job=restart")["items"]) == 1
    assert st["attempts"] == 1
    assert "created Job" not in op2.log()


def test_two_replicas_only_one_reconciles(kube, namespace, operator_factory, s3_env):
    instant = json.dumps(["python", "-c", "print('done')"])
    low = operator_factory(KUBETUNE_PEERING_PRIORITY="10", KUBETUNE_TRAINER_COMMAND=instant, **s3_env)
    high = operator_factory(KUBETUNE_PEERING_PRIORITY="20", KUBETUNE_TRAINER_COMMAND=instant, **s3_env)
    # Peering keep-alives settle: the lower-priority replica pauses.
    wait_for(lambda: "Pausing operations in favour of" in low.log(), timeout=30, what="low-priority replica paused", describe=low.log_tail)
    for i in range(3):
        create(kube, namespace, manifest(f"peer-{i}"))
    for i in range(3):
        assert wait_phase(kube, namespace, f"peer-{i}", "Succeeded", "Failed", timeout=60, operator=high)["phase"] == "Succeeded"
    assert high.log().count("created Job") == 3
    assert "created Job" not in low.log()
    assert len(jobs(kube, namespace)) == 3
    # The standby takes over when the active one goes away.
    high.stop()
    create(kube, namespace, manifest("peer-after"))
    assert wait_phase(kube, namespace, "peer-after", "Succeeded", "Failed", timeout=90, operator=low)["phase"] == "Succeeded"
    assert "created Job" in low.log()


def test_suspend_and_resume(kube, namespace, operator_factory, s3_env, bucket_with_assets, real_node):
    bucket = bucket_with_assets
    op = operator_factory(**s3_env)
    create(kube, namespace, long_run(bucket, "pause", steps=150))
    wait_for(lambda: (status(kube, namespace, "pause").get("checkpoint") or {}).get("step", 0) >= 20,
             timeout=TRAIN_TIMEOUT, what="a committed checkpoint", describe=op.log_tail)
    path = f"{FTJ.format(ns=namespace)}/pause"
    kube.raw.merge_patch(path, {"spec": {"suspend": True}})
    st = wait_phase(kube, namespace, "pause", "Suspended", timeout=90, operator=op)
    assert condition(st, "Suspended")["status"] == "True"
    wait_for(lambda: not [p for p in pods(kube, namespace) if p["status"].get("phase") in ("Running", "Pending")],
             timeout=90, what="trainer pods stopped")
    assert jobs(kube, namespace)[0]["spec"]["suspend"] is True
    keys_while_suspended = bucket.keys(f"{namespace}/pause/checkpoints/")
    assert keys_while_suspended, "checkpoints kept"
    kube.raw.merge_patch(path, {"spec": {"suspend": False}})
    st = wait_phase(kube, namespace, "pause", "Succeeded", "Failed", timeout=TRAIN_TIMEOUT, operator=op)
    assert st["phase"] == "Succeeded"
    assert condition(st, "Suspended")["reason"] == "Resumed"
    assert st["progress"]["step"] == 150
    logs = [real_node.logs(namespace, p["metadata"]["name"]) for p in pods(kube, namespace)]
    assert any("resuming from committed checkpoint step" in log for log in logs)
    events_with(kube, namespace, "pause", "PhaseSuspended")  # fails unless it comes


def test_delete_running_job_removes_children_keeps_checkpoints(kube, namespace, operator_factory, s3_env, bucket_with_assets):
    bucket = bucket_with_assets
    op = operator_factory(**s3_env)
    create(kube, namespace, long_run(bucket, "doomed", steps=400))
    wait_for(lambda: (status(kube, namespace, "doomed").get("checkpoint") or {}).get("step", 0) >= 20,
             timeout=TRAIN_TIMEOUT, what="a committed checkpoint", describe=op.log_tail)
    kube.raw.request("DELETE", f"{FTJ.format(ns=namespace)}/doomed")
    wait_for(lambda: not jobs(kube, namespace) and not pods(kube, namespace), timeout=90, what="children garbage-collected")
    assert not kube.raw.get(f"/api/v1/namespaces/{namespace}/configmaps", labelSelector="kubetune.io/job=doomed")["items"]
    assert bucket.keys(f"{namespace}/doomed/checkpoints/"), "checkpoints must survive deletion"
    assert wait_for(lambda: not trainer_pids(namespace, "doomed"), timeout=60, what="trainer process gone")


def test_immutable_field_change_is_refused(kube, namespace, kubetune_crds):
    create(kube, namespace, manifest("fixed"))
    path = f"{FTJ.format(ns=namespace)}/fixed"
    for change, field in (({"method": "qlora"}, "method"), ({"model": {"uri": "s3://other/model"}}, "model")):
        with pytest.raises(Exception) as info:
            kube.raw.merge_patch(path, {"spec": change})
        assert getattr(info.value, "status", None) == 422, info.value
        assert f"{field} is immutable once the job is created" in str(info.value)
    # Mutable fields still change.
    kube.raw.merge_patch(path, {"spec": {"suspend": True}})
    assert get(kube, namespace, "fixed")["spec"]["suspend"] is True


def test_bad_input_fails_with_actionable_messages(kube, namespace, operator_factory, s3_env, bucket_with_assets):
    bucket = bucket_with_assets
    bucket.client.put_object(Bucket=bucket.name, Key="models/broken/config.json", Body=b"{not json")
    op = operator_factory(**s3_env)
    no_data = quickstart(bucket, "no-data")
    no_data["spec"]["dataset"]["trainUri"] = bucket.uri("data/missing.jsonl")
    create(kube, namespace, no_data)
    bad_model = quickstart(bucket, "bad-model")
    bad_model["spec"]["model"] = {"uri": bucket.uri("models/broken")}
    create(kube, namespace, bad_model)
    create(kube, namespace, quickstart(bucket, "bad-image", image="quay.io/random/trainer:1"))
    create(kube, namespace, quickstart(bucket, "good"))

    st = wait_phase(kube, namespace, "no-data", "Failed", "Succeeded", timeout=TRAIN_TIMEOUT, operator=op)
    failed = condition(st, "Failed")
    assert (st["phase"], failed["reason"]) == ("Failed", "InvalidDataset"), st
    assert failed["message"]
    st = wait_phase(kube, namespace, "bad-model", "Failed", "Succeeded", timeout=TRAIN_TIMEOUT, operator=op)
    failed = condition(st, "Failed")
    assert (st["phase"], failed["reason"]) == ("Failed", "InvalidModel"), st
    assert failed["message"]
    st = wait_phase(kube, namespace, "bad-image", "Failed", timeout=30, operator=op)
    assert condition(st, "Valid")["reason"] == "ImageNotAllowed"
    # Bad input burns no retries (podFailurePolicy FailJob on exit 2) and leaves nothing running.
    for name in ("no-data", "bad-model"):
        assert status(kube, namespace, name)["attempts"] == 1
    # The operator kept serving the good job throughout, and never crashed.
    assert wait_phase(kube, namespace, "good", "Succeeded", "Failed", timeout=TRAIN_TIMEOUT, operator=op)["phase"] == "Succeeded"
    assert op.proc.poll() is None
    wait_for(lambda: not [p for p in pods(kube, namespace) if p["status"].get("phase") in ("Running", "Pending")], timeout=30, what="no pods left running")


def test_missing_dataset_message_names_the_uri(kube, namespace, operator_factory, s3_env, bucket_with_assets):
    bucket = bucket_with_assets
    op = operator_factory(**s3_env)
    doc = quickstart(bucket, "no-data")
    doc["spec"]["dataset"]["trainUri"] = bucket.uri("data/missing.jsonl")
    create(kube, namespace, doc)
    st = wait_phase(kube, namespace, "no-data", "Failed", "Succeeded", timeout=TRAIN_TIMEOUT, operator=op)
    assert "data/missing.jsonl" in condition(st, "Failed")["message"]
