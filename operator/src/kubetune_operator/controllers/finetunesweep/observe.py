"""The trials of a sweep as the cache shows their FineTuneJobs, and what the
sweep's own status remembers of them (the evaluations each trial reported
while it ran, trials refused before they existed)."""

from __future__ import annotations

from kubetune_contract import curves

from ...api.status import Reason as R
from ...builders.trial import trial_record
from ...api import sweep_objective
from ...sweeps.trials import Trial

INVALID = "Invalid"  # a trial whose suggested spec was refused; it has no FineTuneJob


def trial_state(status: dict, metric: str) -> tuple[str, float | None]:
    """(study state, objective) of a trial from its FineTuneJob's status."""
    phase = status.get("phase")
    if phase in ("Succeeded", "Serving"):
        return "complete", sweep_objective.value(status, metric)
    if phase == "Failed":
        return "failed", None
    if phase == "Stopped":
        stopped = next((c for c in status.get("conditions") or [] if c.get("type") == "Stopped"), {})
        return ("pruned" if stopped.get("reason") == R.PRUNED else "failed"), None
    return "running", None


def curve_of(previous: dict | None, status: dict, metric: str) -> dict[int, float]:
    """The evaluations seen so far, with the one the status shows now; once the
    trial has ended, every evaluation its trainer recorded (`evalCurve`: the
    scrapes may have missed some)."""
    curve = {int(step): value for step, value in ((previous or {}).get("curve") or {}).items()}
    metrics = status.get("metrics") or {}
    if metrics.get(metric) is not None and metrics.get("evalStep"):
        curve[int(metrics["evalStep"])] = float(metrics[metric])
    if metric == "evalLoss":
        curve.update({p["step"]: float(p["evalLoss"]) for p in metrics.get(curves.KEY) or []})
    return curve


def observe(metric: str, old_status: dict, bodies: list[dict]) -> tuple[list[Trial], dict[int, dict]]:
    """(the study's trials, each trial's FineTuneJob body by number)."""
    remembered = {t["number"]: t for t in old_status.get("trials") or []}
    trials, by_number = [], {}
    for body in bodies:
        record = trial_record(body)
        if record is None:
            continue  # labelled like a trial, but not one this sweep created
        number, status = record["number"], body.get("status") or {}
        state, objective = trial_state(status, metric)
        trials.append(Trial(number, record.get("values") or {}, record.get("systemAttrs") or {}, state, objective,
                            curve_of(remembered.get(number), status, metric)))
        by_number[number] = body
    for number, old in remembered.items():
        if old.get("phase") == INVALID and number not in by_number:
            trials.append(Trial(number, {}, {}, "failed"))
    return sorted(trials, key=lambda t: t.number), by_number
