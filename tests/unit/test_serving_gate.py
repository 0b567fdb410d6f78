"""spec.serving.gate judged on status.evaluation: the verdict, its numbers, and
what it does to the job's conditions and to a serving pool."""

from __future__ import annotations

import json

from kubetune_operator.api.spec import ServingGate
from kubetune_operator.status.evaluation import evaluation_status
from kubetune_operator.status.serving_gate import gate_conditions, gate_verdict, held_back
from kubetune_operator.status.observed import Observation, next_status

from .test_status_logic import REPORT_OK, pod

EVALUATION = {"metrics": {"mae": {"base": 146.0, "tuned": 47.1}, "evalLoss": {"base": 2.0, "tuned": 2.4},
                          "exactMatch": {"base": 0.1, "tuned": 0.55}}}


def test_beating_the_base_model_is_the_default():
    passed, reason, message = gate_verdict(ServingGate(metric="mae"), EVALUATION)
    assert (passed, reason) == (True, "GatePassed")
    assert message == "mean absolute error 47.1 beats the base model's 146; served"
    passed, reason, message = gate_verdict(ServingGate(metric="evalLoss"), EVALUATION)
    assert (passed, reason) == (False, "GateMissed")
    assert message == "validation loss 2.4 does not beat the base model's 2; not served"


def test_threshold_follows_the_metrics_direction():
    assert gate_verdict(ServingGate(metric="mae", threshold=50), EVALUATION)[0] is True  # lower is better
    assert gate_verdict(ServingGate(metric="mae", threshold=40), EVALUATION)[0] is False
    assert gate_verdict(ServingGate(metric="exactMatch", threshold=0.5), EVALUATION)[0] is True  # higher is better
    passed, _, message = gate_verdict(ServingGate(metric="exactMatch", threshold=0.6), EVALUATION)
    assert not passed and message == "exact match 55.0% does not beat serving.gate.threshold 60.0%; not served"


def test_minimum_improvement_is_a_fraction_of_base():
    passed, _, message = gate_verdict(ServingGate(metric="mae", minImprovement=0.5), EVALUATION)  # 67.7% better
    assert passed and message == "mean absolute error 47.1 (+67.7% vs base 146); serving.gate.minImprovement is +50.0%; served"
    assert gate_verdict(ServingGate(metric="mae", minImprovement=0.7), EVALUATION)[0] is False
    zero_base = {"metrics": {"exactMatch": {"base": 0.0, "tuned": 0.4}}}
    passed, _, message = gate_verdict(ServingGate(metric="exactMatch", minImprovement=0.1), zero_base)
    assert not passed and "base is 0, so no relative improvement" in message


def test_a_missing_result_is_a_miss_not_a_pass():
    passed, reason, message = gate_verdict(ServingGate(metric="rmse"), EVALUATION)
    assert (passed, reason) == (False, "GateNoResult") and "root mean squared error was not reported" in message
    passed, reason, _ = gate_verdict(ServingGate(metric="mae"), {"metrics": {"mae": {"tuned": 3.0}}})
    assert (passed, reason) == (False, "GateNoResult")  # no base to beat
    assert gate_verdict(ServingGate(metric="mae", threshold=5), {"metrics": {"mae": {"tuned": 3.0}}})[0] is True
    assert gate_verdict(ServingGate(metric="mae"), None)[1] == "GateNoResult"


def test_no_gate_serves_without_a_condition():
    assert gate_conditions(None, EVALUATION) == (True, [])


def _succeeded_job() -> dict:
    return {"metadata": {"name": "j"}, "status": {"succeeded": 1, "completionTime": "2026-12-01T00:00:00Z",
                                                  "conditions": [{"type": "Complete", "status": "True"}]}}


def test_a_missed_gate_ends_succeeded_unserved_with_the_numbers():
    current = {"phase": "Running", "evaluation": EVALUATION}
    obs = Observation(job=_succeeded_job(), serving_enabled=True, serving_gate=ServingGate(metric="evalLoss"))
    status = next_status(current, obs, now="2026-12-01T00:00:01Z", generation=1)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Succeeded" and held_back(status)
    assert conditions["ServingGated"]["status"] == "True" and conditions["ServingGated"]["reason"] == "GateMissed"
    assert conditions["Serving"]["status"] == "False" and conditions["Serving"]["reason"] == "ServingGated"
    assert "2.4 does not beat the base model's 2" in conditions["Serving"]["message"]
    assert "serving" not in status or not status["serving"].get("ready")


def test_a_passed_gate_goes_on_to_serving():
    obs = Observation(job=_succeeded_job(), serving_enabled=True, serving_gate=ServingGate(metric="mae"))
    status = next_status({"phase": "Running", "evaluation": EVALUATION}, obs, now="2026-12-01T00:00:01Z", generation=1)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert not held_back(status) and conditions["ServingGated"]["status"] == "False"
    assert conditions["Serving"]["reason"] != "ServingGated"  # the Deployment's own verdict (pending: none yet)


def test_a_gated_pool_member_is_not_served():
    from kubetune_operator.controllers.servingpool.members import assemble, candidate

    def body(name: str, created: str, gated: bool) -> dict:
        conditions = [{"type": "ServingGated", "status": "True" if gated else "False"}]
        return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
                "metadata": {"name": name, "namespace": "ns", "uid": name, "creationTimestamp": created},
                "spec": {"model": {"uri": "s3://bucket-one/base"}, "dataset": {"trainUri": "s3://bucket-one/t.jsonl", "evalSplit": 0.1},
                         "method": "lora", "serving": {"enabled": True, "pool": "team", "gate": {"metric": "evalLoss"}}},
                "status": {"phase": "Succeeded", "conditions": conditions, "output": {"adapterUri": f"s3://bucket-one/{name}/adapter"}}}

    pool = assemble([candidate(body("first", "1", gated=True)), candidate(body("second", "2", gated=False))])
    assert [j.metadata.name for j in pool.members] == ["second"]


def test_a_job_already_serving_is_not_judged_again():
    """The gate is judged when training ends; a later change to it does not flip a serving job to gated."""
    obs = Observation(job=_succeeded_job(), serving_enabled=True, serving_gate=ServingGate(metric="evalLoss"))
    status = next_status({"phase": "Serving", "evaluation": EVALUATION, "serving": {"ready": True}}, obs,
                         now="2026-12-01T00:00:01Z", generation=2)
    assert not held_back(status)


SERVED = {"phase": "Serving", "evaluation": EVALUATION,
          "serving": {"endpoint": "http://job-serve.ns.svc:8000/v1", "modelName": "job", "ready": True},
          "conditions": [{"type": "Serving", "status": "True", "reason": "ServingReady", "message": "1/1 vLLM replicas available"}]}


def _condition(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_serving_switched_off_says_so_and_drops_the_endpoint():
    obs = Observation(job=_succeeded_job(), serving_enabled=False)
    status = next_status(SERVED, obs, now="2026-12-01T00:00:01Z", generation=2)
    assert status["phase"] == "Succeeded" and status["serving"] == {"ready": False}
    serving = _condition(status, "Serving")
    assert (serving["status"], serving["reason"]) == ("False", "ServingDisabled")
    assert serving["message"] == "serving.enabled is false: not served; its vLLM Deployment and Service are removed"


def test_a_pool_member_switched_off_says_it_left_the_pool():
    member = {**SERVED, "serving": {"endpoint": "http://team-pool.ns.svc:8000/v1", "modelName": "job", "pool": "team", "ready": True}}
    status = next_status(member, Observation(job=_succeeded_job(), serving_enabled=False), now="2026-12-01T00:00:01Z", generation=2)
    assert status["serving"] == {"ready": False}
    assert _condition(status, "Serving")["message"] == "serving.enabled is false: taken out of serving pool team (its other members are served on)"
    again = next_status(status, Observation(job=_succeeded_job(), serving_enabled=False), now="2026-12-01T00:00:09Z", generation=2)
    assert again == status  # the next pass, with the pool gone from status.serving, changes nothing


def test_a_re_evaluation_that_misses_the_gate_takes_a_serving_job_off():
    """Other numbers in the trainer's report are judged again (the gate alone
    changing is not: test_a_job_already_serving_is_not_judged_again)."""
    def report(tuned_mae: float) -> dict:
        return {**REPORT_OK, "evaluation": {"primary": "mae", "metrics": {"mae": {"base": 146.0, "tuned": tuned_mae}}}}

    def observed(tuned_mae: float) -> Observation:
        trainer = pod("Succeeded", exit_code=0, message=json.dumps(report(tuned_mae)))
        return Observation(job=_succeeded_job(), pods=[trainer], serving_enabled=True, serving_gate=ServingGate(metric="mae"))

    served = {**SERVED, "evaluation": evaluation_status(report(47.1))}
    same = next_status(served, observed(47.1), now="2026-12-01T00:00:01Z", generation=1)
    assert not held_back(same) and same["serving"]["endpoint"] == SERVED["serving"]["endpoint"]
    worse = next_status(served, observed(151.0), now="2026-12-01T00:00:01Z", generation=1)
    assert held_back(worse) and worse["phase"] == "Succeeded" and worse["serving"] == {"ready": False}
    serving = _condition(worse, "Serving")
    assert (serving["status"], serving["reason"]) == ("False", "ServingGated") and "151" in serving["message"], serving
