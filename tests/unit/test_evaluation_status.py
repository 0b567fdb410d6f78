"""From the trainer's termination message to status.evaluation, the printer
column, status.checkpoint.best, the Fit condition and the Events; and the
termination message staying within 4 KiB with a large evaluation."""

from __future__ import annotations

import json

import pytest

from kubetune_operator.api.crd import PRINTER_COLUMNS
from kubetune_operator.api.status import ConditionType as C
from kubetune_operator.api.status import FineTuneJobStatus
from kubetune_operator.api.status import Reason as R
from kubetune_operator.status.evaluation import fit_event, results_event
from kubetune_operator.status.observed import Observation, next_status
from kubetune_trainer.report import MAX_BYTES, termination_message

EVALUATION = {
    "primary": "mae", "testRows": 40,
    "metrics": {"evalLoss": {"base": 2.0, "tuned": 0.5}, "mae": {"base": 146.2, "tuned": 47.1}, "exactMatch": {"base": 0.1, "tuned": 0.05},
                "bogus": {"base": 1, "tuned": 2}},
    "baselines": {"mean": {"mae": 80.4}, "linear": {"mae": 52.0}, "someoneElse": {"mae": 1.0}},
    "parseRate": {"base": 0.25, "tuned": 1.0},
    "fit": {"reason": "Overfitting", "message": "validation loss rose on 3 evaluations in a row after step 900 ...; consider 2 epochs"},
    "verdict": "tuned beats base on mean absolute error by 68% (47.1 vs 146); overfitting from step 900: consider 2 epochs",
}


def _finished(report: dict, phase: str = "Succeeded") -> Observation:
    condition = "Complete" if phase == "Succeeded" else "Failed"
    pod = {"metadata": {"name": "p"}, "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": {"terminated": {
        "exitCode": 0 if phase == "Succeeded" else 3, "message": json.dumps(report), "finishedAt": "2026-01-01T00:00:00Z"}}}]}}
    return Observation(job={"status": {"conditions": [{"type": condition, "status": "True", "reason": "PodFailurePolicy"}]}}, pods=[pod])


def _report(**over) -> dict:
    return {"reason": "Completed", "message": "trained 60/60 steps", "step": 60, "totalSteps": 60, "metrics": {},
            "checkpoint": {"uri": "s3://b/ns/j/checkpoints/step-00000060", "step": 60,
                           "best": {"uri": "s3://b/ns/j/checkpoints/step-00000040", "step": 40, "evalLoss": 0.41}},
            "output": {"adapterUri": "s3://b/ns/j/output/adapter"}, "evaluation": EVALUATION, **over}


def test_status_evaluation_compares_base_and_tuned_by_the_registry():
    st = next_status({}, _finished(_report()), now="t", generation=1)
    ev = st["evaluation"]
    assert ev["primary"] == "mae" and ev["testRows"] == 40 and ev["summary"] == "MAE 47.1 (base 146)"
    assert ev["metrics"]["mae"] == {"base": 146.2, "tuned": 47.1, "change": pytest.approx(-99.1),
                                    "improvement": pytest.approx(99.1 / 146.2), "better": True}
    assert ev["metrics"]["exactMatch"]["better"] is False and ev["metrics"]["exactMatch"]["improvement"] == pytest.approx(-0.5)
    assert "bogus" not in ev["metrics"] and set(ev["baselines"]) == {"mean", "linear"}  # only what the registry knows
    assert ev["parseRate"] == {"base": 0.25, "tuned": 1.0} and ev["verdict"].startswith("tuned beats base")
    assert st["checkpoint"]["best"] == {"uri": "s3://b/ns/j/checkpoints/step-00000040", "step": 40, "evalLoss": 0.41}
    FineTuneJobStatus.model_validate(st)  # what the CRD's status schema declares
    assert {"name": "Eval", "type": "string", "jsonPath": ".status.evaluation.summary"} in PRINTER_COLUMNS


def test_fit_condition_from_the_diagnosis():
    st = next_status({}, _finished(_report()), now="t", generation=1)
    cond = next(c for c in st["conditions"] if c["type"] == C.FIT)
    assert (cond["status"], cond["reason"]) == ("False", R.FIT_OVERFITTING) and "consider 2 epochs" in cond["message"]
    good = _report(evaluation={**EVALUATION, "fit": {"reason": "Good", "message": "no sign of overfitting"}})
    cond = next(c for c in next_status({}, _finished(good), now="t", generation=1)["conditions"] if c["type"] == C.FIT)
    assert (cond["status"], cond["reason"]) == ("True", R.FIT_GOOD)
    unknown = _report(evaluation={"fit": {"reason": "NoValidationData", "message": "no validation rows"}})
    cond = next(c for c in next_status({}, _finished(unknown), now="t", generation=1)["conditions"] if c["type"] == C.FIT)
    assert (cond["status"], cond["reason"]) == ("Unknown", R.FIT_NO_VALIDATION_DATA)


def test_a_diverged_run_fails_with_fit_diverged_and_a_remedy():
    report = {"reason": "LossDiverged", "message": "training loss became nan at step 12", "step": 12, "checkpoint": {}, "output": {}}
    st = next_status({}, _finished(report, phase="Failed"), now="t", generation=1)
    assert st["phase"] == "Failed"
    cond = next(c for c in st["conditions"] if c["type"] == C.FIT)
    assert (cond["status"], cond["reason"]) == ("False", R.FIT_DIVERGED)
    assert "nan at step 12" in cond["message"] and "lower training.learningRate" in cond["message"]


def test_no_fit_condition_or_evaluation_without_a_report_of_them():
    st = next_status({}, _finished({"reason": "Completed", "message": "ok", "checkpoint": {}, "output": {}}), now="t", generation=1)
    assert "evaluation" not in st and not any(c["type"] == C.FIT for c in st["conditions"])


def test_events_carry_the_results_and_warn_when_the_fit_is_not_good():
    ev = next_status({}, _finished(_report()), now="t", generation=1)["evaluation"]
    kind, reason, message = results_event(ev)
    assert (kind, reason) == ("Normal", "Evaluated")
    assert message.startswith("tuned beats base") and "MAE 47.1 (base 146)" in message and "mean baseline MAE 80.4" in message
    assert fit_event(("False", "Overfitting", "rose ...")) == ("Warning", "FitOverfitting", "rose ...")
    assert fit_event(("True", "Good", "fine")) is None


def test_termination_message_keeps_under_4_kib_with_a_large_evaluation():
    huge = {**EVALUATION, "metrics": {m: {"base": 123.456789012, "tuned": 98.7654321098} for m in
                                      ("evalLoss", "testLoss", "perplexity", "exactMatch", "tokenF1", "rougeL", "bleu", "chrF", "mae", "rmse", "mape")},
            "baselines": {b: {m: 1234.56789 for m in ("mae", "rmse", "mape")} for b in ("mean", "linear", "randomForest")},
            "fit": {"reason": "Overfitting", "message": "x" * 3000}, "verdict": "v" * 1000}
    output = {f"format{i}Uri": f"s3://bucket/ns/job/output/format-{i}" for i in range(8)}
    text = termination_message("Completed", "m" * 2000, step=1, total_steps=1, output=output, evaluation=huge,
                               checkpoint={"uri": "s3://b/c/step-00000001", "step": 1})
    assert len(text.encode()) <= MAX_BYTES
    body = json.loads(text)
    assert body["output"] == output  # outputs are never dropped
    assert body["evaluation"]["metrics"]["mae"] == {"base": 123.456789012, "tuned": 98.7654321098}  # the primary stays
    assert body["evaluation"]["fit"]["reason"] == "Overfitting"
    small = json.loads(termination_message("Completed", "ok", evaluation=EVALUATION))
    assert small["evaluation"] == EVALUATION  # nothing trimmed when it fits


def test_a_preference_jobs_held_out_accuracy_is_its_status_evaluation():
    from kubetune_operator.status.evaluation import evaluation_status

    ev = evaluation_status({"evaluation": {"primary": "preferenceAccuracy", "testRows": 29, "verdict": "tuned beats base",
                                           "metrics": {"preferenceAccuracy": {"base": 0.379, "tuned": 1.0}}}})
    assert ev["summary"] == "pref acc 100.0% (base 37.9%)"
    assert ev["metrics"]["preferenceAccuracy"]["better"] is True
