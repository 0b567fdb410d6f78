"""A sweep's status stays bounded (etcd refuses objects over 1.5 MB): at
maxTrials 1000, with the widest search space the API allows (16 parameters),
every trial finished with a long curve, the trials table is under 1 MB; a
300-trial sweep's is far below it. Each finished trial's whole curve stays in
its FineTuneJob's status.metrics.evalCurve."""
from __future__ import annotations

import json

import pytest

from kubetune_operator.api.sweep import SEARCHABLE
from kubetune_operator.controllers.finetunesweep import progress
from kubetune_operator.sweeps import study as st

PATHS = sorted(SEARCHABLE)[:16]


def _trials(n: int) -> tuple[list[st.Trial], dict[int, dict]]:
    trials, bodies = [], {}
    for number in range(n):
        values = {path: 0.000123456789 * (number + 1) for path in PATHS}
        curve = {step: 2.0 / step + number * 1e-6 for step in range(10, 2010, 10)}  # 200 evaluations
        trials.append(st.Trial(number, values, state="complete", objective=curve[2000], curve=curve))
        bodies[number] = {"metadata": {"name": f"a-rather-long-sweep-name-for-size-t{number:03d}"},
                          "status": {"phase": "Succeeded"}}
    return trials, bodies


@pytest.mark.parametrize("n, limit", [(1000, 1_000_000), (300, 400_000)])
def test_the_trials_table_stays_under_its_bound(n, limit):
    trials, bodies = _trials(n)
    rows = progress.trial_rows(trials, bodies, {})
    size = len(json.dumps({"trials": rows, "counts": progress.counts(trials)}, separators=(",", ":")))
    assert size < limit, size
    assert all(len(r["curve"]) <= progress.FINISHED_CURVE_POINTS for r in rows)
    first = rows[0]["curve"]
    assert first["10"] == pytest.approx(0.2) and first["2000"] == pytest.approx(0.001)  # the ends stay


def test_a_running_trial_keeps_more_of_its_curve():
    trials, bodies = _trials(2)
    trials[1].state = "running"
    rows = progress.trial_rows(trials, bodies, {})
    assert len(rows[0]["curve"]) == progress.FINISHED_CURVE_POINTS and len(rows[1]["curve"]) == progress.RUNNING_CURVE_POINTS
