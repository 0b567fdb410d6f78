"""A trainer pod's termination message is a tenant's word: a malformed one
(wrong types, too large, nested thousands deep, not JSON) never raises out of
status derivation; the job ends as its Job says, with a ReportInvalid
condition, and nothing the message claimed reaches status. The trainer's own
messages always pass the same check."""
from __future__ import annotations

import json

import pytest

from kubetune_contract.termination import MAX_BYTES, ReportInvalid, parse_report
from kubetune_operator.status.observed import Observation, next_status

from .test_status_logic import NOW, REPORT_OK, job, pod

HOSTILE = [
    ('{"metrics": [1]}', "no reason"),
    ('{"reason": "Completed", "metrics": [1]}', "metrics is a list"),
    ('{"reason": ["LossDiverged"], "message": "x"}', "reason is a list"),
    ('{"reason": "Completed", "step": "60"}', "step is a str"),
    ('{"reason": "Completed", "step": true}', "step is a bool"),
    ("[" * 2000 + "]" * 2000, "nested deeper than"),
    ('{"reason": "Completed", "checkpoint": ' + "[" * 4090, "larger than|nested deeper"),
    ("x" * (MAX_BYTES + 1), "larger than"),
    ("Traceback (most recent call last)", "not JSON"),
    ("[1, 2]", "not an object"),
    ('{"reason": "Completed", "evaluation": {"metrics": [1, 2]}}', None),  # the right type outside, not inside
    ('{"reason": "Completed", "checkpoint": {"uri": 7, "best": [1]}, "output": {"adapterUri": 5}}', "checkpoint.uri is a int"),
    ('{"reason": "Completed", "metrics": {"trainLoss": "low"}}', "metrics.trainLoss is a str"),
]


@pytest.mark.parametrize("message, why", [h for h in HOSTILE if h[1]], ids=lambda v: str(v)[:30])
def test_parse_report_refuses_with_a_reason_and_nothing_else(message, why):
    with pytest.raises(ReportInvalid, match=why):
        parse_report(message)


@pytest.mark.parametrize("outcome", ["Complete", "Failed"])
@pytest.mark.parametrize("message, why", HOSTILE, ids=lambda v: str(v)[:30])
def test_a_malformed_message_ends_the_job_as_its_job_says_with_report_invalid(outcome, message, why):
    phase = "Succeeded" if outcome == "Complete" else "Failed"
    reason = "Completed" if outcome == "Complete" else "BackoffLimitExceeded"
    obs = Observation(job=job((outcome, reason, "done")), pods=[pod(phase, exit_code=0 if phase == "Succeeded" else 1, message=message)])
    status = next_status({"phase": "Running"}, obs, now=NOW, generation=1)
    assert status["phase"] == phase
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["ReportInvalid"]["status"] == "True" and conditions["ReportInvalid"]["reason"] == "ReportInvalid"
    assert "is not a trainer report" in conditions["ReportInvalid"]["message"] or "could not be read" in conditions["ReportInvalid"]["message"]
    assert "metrics" not in status and "output" not in status and "evaluation" not in status
    assert len(json.dumps(status)) < 8192


def test_a_valid_report_sets_no_report_invalid():
    obs = Observation(job=job(("Complete", "Completed", "done")), pods=[pod("Succeeded", exit_code=0, message=json.dumps(REPORT_OK))])
    status = next_status({"phase": "Running"}, obs, now=NOW, generation=1)
    assert status["phase"] == "Succeeded" and "ReportInvalid" not in {c["type"] for c in status["conditions"]}


def test_the_trainer_s_own_messages_pass_the_check():
    from kubetune_trainer.report import termination_message

    text = termination_message("Completed", "m" * 10000, step=60, total_steps=60, metrics={"trainLoss": 1.0},
                               checkpoint={"uri": "s3://b/c/run-u/step-00000060", "step": 60,
                                           "resumedFrom": {"uri": "s3://b/o/step-00000020", "step": 20, "differs": ["training.learningRate"]}},
                               output={"adapterUri": "s3://b/o/adapter"}, eval_curve=[(i, 1.0 / i) for i in range(1, 400)],
                               evaluation={"metrics": {"exactMatch": {"base": 0.1, "tuned": 0.5}}, "testRows": 10})
    assert parse_report(text)["reason"] == "Completed"
