"""Pure: the trainer's tracking report -> `status.tracking` and the `Tracking` condition.

Tracking is best effort: a degraded tracker never fails a job, it shows here
(Tracking=False, TrackingDegraded, with the trainer's reason) while the job's
own phase says how training went. A report the operator cannot read is left
out rather than trusted.
"""

from __future__ import annotations

from pydantic import ValidationError

from kubetune_contract.tracking import TrackingOutcome

from ..api.status import ConditionType as C
from ..api.status import Reason as R


def tracking_outcome(report: dict | None) -> TrackingOutcome | None:
    raw = (report or {}).get("tracking")
    if not isinstance(raw, dict):
        return None
    try:
        return TrackingOutcome.model_validate(raw)
    except ValidationError:
        return None


def tracking_fields(report: dict | None) -> dict:
    """{"tracking": ...} for the status, or nothing when the trainer reported no tracking."""
    outcome = tracking_outcome(report)
    return {"tracking": outcome.model_dump(by_alias=True, exclude_none=True)} if outcome else {}


def tracking_condition(report: dict | None) -> tuple[str, str, str, str] | None:
    """(type, status, reason, message) of the Tracking condition."""
    outcome = tracking_outcome(report)
    if outcome is None:
        return None
    if outcome.degraded:
        return C.TRACKING, "False", R.TRACKING_DEGRADED, f"tracking degraded; training went on without it: {outcome.degraded}"
    where = [f"run {outcome.run_url}" if outcome.run_url else None,
             f"run files at {outcome.files_uri}" if outcome.files_uri else None,
             f"TensorBoard event files at {outcome.tensorboard_uri}" if outcome.tensorboard_uri else None]
    return C.TRACKING, "True", R.TRACKING_LOGGED, f"logged to {outcome.backend}" + "".join(f"; {w}" for w in where if w)


def degraded_while_running(reason: str) -> tuple[str, str, str, str]:
    """The Tracking condition while the job still trains, from the trainer's
    /metrics (the final report's outcome replaces it when the job ends)."""
    return C.TRACKING, "False", R.TRACKING_DEGRADED, f"tracking degraded; training goes on without it: {reason}"
