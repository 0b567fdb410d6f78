"""The validation-loss curve a run ends with (kubetune_contract.curves): from
the trainer's termination message to status.metrics.evalCurve, and from there
to a sweep's pruner, which otherwise knows a finished trial only by the
evaluations the operator's scrapes happened to see."""

from __future__ import annotations

import json
import math

from kubetune_contract import curves
from kubetune_operator.api.manifest import parse_sweep
from kubetune_operator.api.status import FineTuneJobStatus
from kubetune_operator.builders.trial import build_trial
from kubetune_operator.controllers.finetunesweep.observe import observe
from kubetune_operator.status.report import apply_report
from kubetune_operator.sweeps import study as st
from kubetune_trainer.report import MAX_BYTES, termination_message

from .test_sweeps import sweep


def test_a_long_curve_is_thinned_evenly_keeping_the_first_and_last_evaluation():
    points = [(5 * i, 10.0 / i) for i in range(1, 201)]  # 200 evaluations, steps 5..1000
    thinned = curves.thin(points)
    steps = [s for s, _ in thinned]
    assert len(thinned) == curves.MAX_POINTS and steps[0] == 5 and steps[-1] == 1000 and steps == sorted(steps)
    gaps = {b - a for a, b in zip(steps, steps[1:])}
    assert gaps <= {20, 25}, gaps  # 199 intervals over 47: every 4th or 5th evaluation
    assert thinned[1] == [25, round(10.0 / 5, 6)], "each kept point is the value measured at its step"
    assert curves.thin([(3, 1.0), (1, 2.0), (2, float("nan"))]) == [[1, 2.0], [3, 1.0]], "sorted; not-a-number dropped"


def test_the_termination_message_carries_the_curve_and_gives_it_up_before_the_evaluation():
    points = [(i, 3.0 - i / 1000) for i in range(1, 1001)]
    msg = json.loads(termination_message("Completed", "done", step=1000, total_steps=1000, eval_curve=points))
    assert len(msg[curves.KEY]) == curves.MAX_POINTS and msg[curves.KEY][-1] == [1000, 2.0]
    # An evaluation that fills the message: the curve shrinks to its fewest points, the primary metric stays.
    evaluation = {"primary": "rougeL", "verdict": "v" * 800,
                  "metrics": {f"m{i}": {"base": 0.1234567, "tuned": 0.7654321} for i in range(60)} | {"rougeL": {"base": 0.1, "tuned": 0.4}}}
    text = termination_message("Completed", "done", evaluation=evaluation, eval_curve=points)
    full = json.loads(text)
    assert len(text.encode()) <= MAX_BYTES
    assert len(full[curves.KEY]) == curves.MIN_POINTS and full[curves.KEY][0][0] == 1 and full[curves.KEY][-1][0] == 1000
    assert full["evaluation"]["metrics"]["rougeL"] == {"base": 0.1, "tuned": 0.4}
    assert curves.KEY not in json.loads(termination_message("Completed", "done")), "no evaluations, no curve"


def test_the_operator_reads_only_well_formed_points_and_no_more_than_it_allows():
    raw = [[5, 1.5], [True, 1.0], [0, 2.0], [6, "1.2"], [7, float("nan")], [8], "x", [10, 1.25], [10.5, 1.0]]
    assert curves.parse(raw) == {5: 1.5, 10: 1.25}
    assert curves.parse({"5": 1.0}) == {} and curves.parse(None) == {}
    assert len(curves.parse([[i, 1.0] for i in range(1, 500)])) == curves.MAX_POINTS


def test_the_curve_reaches_the_jobs_status_in_a_shape_the_crd_accepts():
    status = {"metrics": {"evalLoss": 1.4, "evalStep": 9}}
    apply_report(status, {"metrics": {"evalLoss": 1.25}, curves.KEY: [[3, 2.0], [6, 1.5], [9, 1.25], [12, math.inf]]})
    assert status["metrics"] == {"evalLoss": 1.25, "evalStep": 9, "evalCurve": [
        {"step": 3, "evalLoss": 2.0}, {"step": 6, "evalLoss": 1.5}, {"step": 9, "evalLoss": 1.25}]}
    FineTuneJobStatus.model_validate(status)


def _trial_job(doc: dict, number: int, status: dict) -> dict:
    swept = parse_sweep(doc).sweep
    body = build_trial(swept, number, {"training.learningRate": [1e-3, 1e-5][number]}, {})
    return {**body, "status": status}


def test_a_finished_trial_seen_only_at_its_last_step_prunes_a_worse_one_at_its_first():
    """What made the TPE sweep test flaky on a fast machine: a trial ran its ten
    steps between two scrapes, so the sweep had seen it only at step 10 and
    could not compare the slow trial until its last step. The trainer's curve
    gives every step."""
    doc = sweep(pruning={"startupTrials": 1}, parameters=[{"path": "training.learningRate", "values": [1e-3, 1e-5]}])
    spec = parse_sweep(doc).sweep.spec
    seen = {"trials": [{"number": 0, "curve": {"10": 1.0}}, {"number": 1, "curve": {"1": 3.0}}]}
    finished = {"phase": "Succeeded", "metrics": {"evalLoss": 1.0, "evalStep": 10}}
    running = {"phase": "Running", "metrics": {"evalLoss": 3.0, "evalStep": 1}}
    trials, _ = observe("evalLoss", seen, [_trial_job(doc, 0, finished), _trial_job(doc, 1, running)])
    assert trials[0].curve == {10: 1.0} and st.to_prune(spec, trials) == [], "the premise: nothing to compare step 1 with"
    finished["metrics"][curves.KEY] = [{"step": s, "evalLoss": 2.0 - s / 10} for s in range(1, 11)]
    trials, _ = observe("evalLoss", seen, [_trial_job(doc, 0, finished), _trial_job(doc, 1, running)])
    assert trials[0].curve == {s: 2.0 - s / 10 for s in range(1, 11)}
    assert st.to_prune(spec, trials) == [1]
