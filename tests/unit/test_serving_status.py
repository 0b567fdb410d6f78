"""Serving and export conditions from what the cluster shows: vLLM's own crash
with its last log line, a pool member that is served only once the pool's
Deployment answers for it, a job whose training failed, export failures."""

from __future__ import annotations

from kubetune_operator.api.status import Reason
from kubetune_operator.builders.serving_plan import MEMBERS_ANNOTATION, PREVIOUS_MEMBERS_ANNOTATION
from kubetune_operator.status.serving import export_verdict, last_log_line, serving_verdict, vllm_failure
from kubetune_operator.status.observed import Observation, next_status

NOW = "2026-01-01T00:00:00Z"
CRASH_LOG = """\
INFO 12-01 10:00:01 [api_server.py:1] vLLM API server version 0.32.0
INFO 12-01 10:00:40 [serving_models.py:1] Loading LoRA adapter 'served'
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/vllm/lora/models.py", line 310, in from_local_checkpoint
ValueError: Loading lora served failed: safetensors_rust.SafetensorError: Error while deserializing header: invalid JSON
INFO 12-01 10:00:41 [launcher.py:1] Shutting down FastAPI HTTP server.
"""


def vllm_pod(state: dict, last: dict | None = None, restarts: int = 0) -> dict:
    status = {"name": "vllm", "state": state, "restartCount": restarts}
    if last:
        status["lastState"] = last
    return {"metadata": {"name": "p"}, "status": {"phase": "Running", "containerStatuses": [status]}}


def crashed(code: int = 1, reason: str = "Error", message: str = CRASH_LOG, waiting: str = "CrashLoopBackOff") -> dict:
    term = {"terminated": {"exitCode": code, "reason": reason, "message": message, "finishedAt": NOW}}
    return vllm_pod({"waiting": {"reason": waiting}}, term, restarts=2)


def deployment(available: bool, members: list[str] | None = None, previous: list[str] | None = None,
               generation: int = 1, observed: int = 1, updated: int = 1, replicas: int = 1) -> dict:
    annotations = {}
    if members is not None:
        annotations[MEMBERS_ANNOTATION] = ",".join(members)
    if previous is not None:
        annotations[PREVIOUS_MEMBERS_ANNOTATION] = ",".join(previous)
    return {"metadata": {"name": "d", "annotations": annotations, "generation": generation}, "spec": {"replicas": 1},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": replicas,
                       "availableReplicas": 1 if available else 0,
                       "conditions": [{"type": "Available", "status": "True" if available else "False"}]}}


def test_the_last_log_line_is_the_error_not_the_shutdown_noise_after_it():
    assert last_log_line(CRASH_LOG).startswith("ValueError: Loading lora served failed")
    assert last_log_line("starting\nstill starting\n") == "still starting"
    assert last_log_line("") == ""


def test_a_crash_loop_is_reported_with_exit_code_and_vllm_s_error():
    message = vllm_failure([crashed()])
    assert message.startswith("vLLM exited with code 1 (CrashLoopBackOff after 2 restarts, last Error): ValueError: Loading lora")
    assert "OOMKilled" in vllm_failure([crashed(137, "OOMKilled", "")])
    # A running vLLM, or one stopped cleanly, is no failure.
    assert vllm_failure([vllm_pod({"running": {}})]) is None
    assert vllm_failure([vllm_pod({"terminated": {"exitCode": 0, "reason": "Completed"}})]) is None


def test_serving_verdict_prefers_vllm_s_own_failure_over_waiting():
    ready, reason, message = serving_verdict(deployment(False), [crashed()], was_ready=False)
    assert (ready, reason) == (False, Reason.SERVING_FAILED) and "ValueError" in message
    assert serving_verdict(deployment(False), [vllm_pod({"running": {}})], was_ready=False)[1] == Reason.SERVING_PENDING
    assert serving_verdict(deployment(True), [], was_ready=False)[:2] == (True, Reason.SERVING_READY)
    assert serving_verdict(None, [], was_ready=False)[1] == Reason.SERVING_PENDING


def test_a_job_s_own_deployment_rolling_out_a_changed_spec_says_so_while_it_answers():
    # spec.serving changed (adapter -> merged): generation 2, the old pod answers, the new one starts.
    not_observed = deployment(True, generation=2, observed=1)
    surging = deployment(True, generation=2, observed=2, updated=1, replicas=2)
    starting = deployment(True, generation=2, observed=2, updated=0, replicas=1)
    for rolling in (not_observed, surging, starting):
        ready, reason, message = serving_verdict(rolling, [], was_ready=True)
        assert (ready, reason) == (True, Reason.SERVING_ROLLING_OUT), rolling
        assert "previous spec.serving" in message
    assert "(0/1 updated)" in serving_verdict(starting, [], was_ready=True)[2]
    # Rolled out: every replica runs the current template, no surge pod left.
    assert serving_verdict(deployment(True, generation=2, observed=2), [], was_ready=True)[:2] == (True, Reason.SERVING_READY)
    # The changed template's pod crashes while the old one answers: still serving, the crash said.
    ready, reason, message = serving_verdict(starting, [vllm_pod({"running": {}}), crashed()], was_ready=True)
    assert (ready, reason) == (True, Reason.SERVING_ROLLING_OUT)
    assert "the changed one does not come up: vLLM exited with code 1" in message and "ValueError" in message
    stalled = deployment(True, generation=2, observed=2, updated=0)
    stalled["status"]["conditions"].append({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                            "message": 'ReplicaSet "d-2" has timed out progressing.'})
    assert serving_verdict(stalled, [], was_ready=True)[2].endswith('does not come up: ReplicaSet "d-2" has timed out progressing.')
    # Not answering at all mid-rollout is still a failure once it had served.
    assert serving_verdict(deployment(False, generation=2, observed=2, updated=0), [], was_ready=True)[:2] == (False, Reason.SERVING_FAILED)


def test_a_pool_member_is_ready_once_the_pool_answers_for_it():
    # b joined: the template serves a and b, the old pod (a) still answers while it rolls out.
    rolling = deployment(True, members=["a", "b"], previous=["a"], generation=2, observed=2, updated=0, replicas=2)
    assert serving_verdict(rolling, [], False, member="a")[0] is True
    ready, reason, message = serving_verdict(rolling, [], False, member="b")
    assert (ready, reason) == (False, Reason.SERVING_PENDING) and "rolling out" in message
    # Not observed yet: the status still describes the previous template.
    assert serving_verdict(deployment(True, ["a", "b"], ["a"], generation=3, observed=2), [], False, member="b")[0] is False
    done = deployment(True, members=["a", "b"], previous=["a"], generation=2, observed=2)
    assert serving_verdict(done, [], False, member="b")[0] is True
    # a left the pool: not served, whatever the old pods still do.
    assert serving_verdict(deployment(True, members=["b"], previous=["a", "b"]), [], False, member="a")[0] is False
    # A refusal wins over everything.
    assert serving_verdict(done, [], False, member="b", refusal="spec.model.uri is ...")[1] == Reason.SERVING_REFUSED


def test_a_job_asked_to_serve_whose_training_failed_says_it_is_not_served():
    failed_job = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "m"}]}}
    status = next_status({"phase": "Running"}, Observation(job=failed_job, serving_enabled=True), now=NOW, generation=1)
    serving = {c["type"]: c for c in status["conditions"]}["Serving"]
    assert status["phase"] == "Failed"
    assert (serving["status"], serving["reason"]) == ("False", Reason.NOT_SERVED)
    assert "training failed (BackoffLimitExceeded)" in serving["message"]
    assert "serving" not in status or not status["serving"].get("endpoint")


def test_export_failures_name_the_format_and_the_training_result_stands():
    report = {"reason": "Completed", "output": {"adapterUri": "s3://b/a", "reportUri": "s3://b/r"},
              "exportFailures": {"gguf": "llama.cpp's converter refused the tokenizer: BPE pre-tokenizer was not recognized"}}
    assert export_verdict(report) == ("False", Reason.EXPORT_FAILED,
                                      "gguf: llama.cpp's converter refused the tokenizer: BPE pre-tokenizer was not recognized (exported: adapter)")
    assert export_verdict({"output": {"adapterUri": "a", "ggufUri": "g", "reportUri": "r"}}) == ("True", Reason.EXPORTED, "exported adapter, gguf")
    assert export_verdict({"reason": "Error", "output": {}}) is None
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    pod = {"metadata": {"name": "t"}, "status": {"phase": "Succeeded", "containerStatuses": [
        {"name": "trainer", "state": {"terminated": {"exitCode": 0, "message": __import__("json").dumps(report)}}}]}}
    status = next_status({"phase": "Running"}, Observation(job=done, pods=[pod]), now=NOW, generation=1)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Succeeded"
    assert (conditions["Exported"]["status"], conditions["Exported"]["reason"]) == ("False", Reason.EXPORT_FAILED)
    assert status["output"] == {"adapterUri": "s3://b/a", "reportUri": "s3://b/r"}
