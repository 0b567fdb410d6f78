"""From the trainer's termination message (its report) to the parts of
`FineTuneJob.status` it decides: the final metrics and validation-loss curve,
the checkpoint, the evaluation, tracking, the dataset's sources, the outputs
and the progress. Pure; `observed` calls it once the report is read."""

from __future__ import annotations

from kubetune_contract import curves
from kubetune_contract.outputs import OUTPUT_KEY
from kubetune_contract.termination import FINAL_METRICS

from .dataset import dataset_fields
from .evaluation import best_checkpoint, evaluation_status, finite
from .progress import status_number
from .tracking import tracking_fields


def _metrics(report: dict) -> dict:
    metrics = {k: status_number(v) for k in FINAL_METRICS if (v := finite((report.get("metrics") or {}).get(k))) is not None}
    curve = curves.parse(report.get(curves.KEY))
    if curve:
        metrics[curves.KEY] = [{"step": step, "evalLoss": value} for step, value in sorted(curve.items())]
    return metrics


def _resumed_from(found) -> dict | None:
    """checkpoint.resumeFrom's record: the checkpoint continued and which settings differed."""
    if not isinstance(found, dict) or not isinstance(found.get("uri"), str):
        return None
    differs = found.get("differs") if isinstance(found.get("differs"), list) else []
    return {"uri": found["uri"][:2048], "step": found.get("step") if isinstance(found.get("step"), int) else None,
            "differs": [str(d)[:256] for d in differs[:64]]}


def apply_report(status: dict, report: dict) -> None:
    """Copy the trainer's final numbers and output URIs into status (in place)."""
    metrics = _metrics(report)
    if metrics:
        status["metrics"] = {**(status.get("metrics") or {}), **metrics}
    checkpoint = report.get("checkpoint") or {}
    if checkpoint.get("uri"):
        status["checkpoint"] = {"uri": str(checkpoint["uri"]), "step": checkpoint.get("step") if isinstance(checkpoint.get("step"), int) else None}
        if best := best_checkpoint(checkpoint):
            status["checkpoint"]["best"] = best
    if resumed := _resumed_from(checkpoint.get("resumedFrom")):
        status["checkpoint"] = {**(status.get("checkpoint") or {}), "resumedFrom": resumed}
    if evaluation := evaluation_status(report):
        status["evaluation"] = evaluation
    status.update({**tracking_fields(report), **dataset_fields(report)})
    # Whatever the trainer's exporters produced, by the contract's naming.
    output = {k: v for k, v in (report.get("output") or {}).items() if isinstance(v, str) and v and OUTPUT_KEY.match(str(k))}
    if output:
        status["output"] = output
    step, total = report.get("step"), report.get("totalSteps")
    if isinstance(step, int) and isinstance(total, int) and total > 0:
        progress = dict(status.get("progress") or {})
        progress.update(step=step, totalSteps=total, percent=round(min(100.0, 100.0 * step / total), 1), eta=None)
        progress["summary"] = f"{step}/{total} ({progress['percent']:.0f}%)"
        status["progress"] = progress
