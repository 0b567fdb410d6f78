"""A sweep's status from its trials: the trials table, counts, the best trial,
the phase. Pure, so every rule is unit-tested without a cluster."""

from __future__ import annotations

import json

from kubetune_contract import curves

from ...api.sweep import FineTuneSweepSpec
from ...api import sweep_objective
from ...sweeps import trials as st
from ...api.search_space import shown
from .observe import INVALID

# A sweep's status must stay far below etcd's 1.5 MB at maxTrials 1000: a
# finished trial's row keeps a thinned curve (its FineTuneJob's
# status.metrics.evalCurve has the trainer's whole one, which the median pruner
# and `kubetune sweep-report` read), a running trial's the points the
# operator saw, thinned the same way the trainer thins its own.
FINISHED_CURVE_POINTS = 12
RUNNING_CURVE_POINTS = curves.MAX_POINTS
STATUS_BUDGET_BYTES = 900_000


def trial_rows(trials: list[st.Trial], bodies: dict[int, dict], old_status: dict) -> list[dict]:
    remembered = {t["number"]: t for t in old_status.get("trials") or []}
    rows = []
    for t in trials:
        body = bodies.get(t.number)
        status = (body or {}).get("status") or {}
        row = {"number": t.number, "name": body["metadata"]["name"] if body else remembered[t.number]["name"],
               "parameters": shown(t.values) if body else remembered[t.number].get("parameters", {}),
               "phase": status.get("phase") or ("Pending" if body else INVALID), "pruned": t.state == "pruned",
               "curve": _curve(t.curve, RUNNING_CURVE_POINTS if t.state == "running" else FINISHED_CURVE_POINTS)}
        if t.objective is not None:
            row["objective"] = t.objective
        reason = _reason(status) if body else remembered[t.number].get("reason")
        if reason:
            row["reason"] = reason
        rows.append(row)
    return bounded(rows)


def _curve(points: dict[int, float], limit: int) -> dict[str, float]:
    return {str(step): value for step, value in curves.thin(list(points.items()), limit)}


def bounded(rows: list[dict]) -> list[dict]:
    """Rows within STATUS_BUDGET_BYTES whatever the search space: past it,
    finished rows keep only their curve's first and last point (their
    FineTuneJobs keep the whole curves), oldest first."""
    size = len(json.dumps(rows, separators=(",", ":")))
    for row in rows:
        if size <= STATUS_BUDGET_BYTES:
            break
        if row["phase"] not in ("Running", "Pending") and len(row["curve"]) > 2:
            before = len(json.dumps(row["curve"], separators=(",", ":")))
            row["curve"] = _curve({int(k): v for k, v in row["curve"].items()}, 2)
            size -= before - len(json.dumps(row["curve"], separators=(",", ":")))
    return rows


def _reason(status: dict) -> str | None:
    kind = {"Failed": "Failed", "Stopped": "Stopped"}.get(status.get("phase") or "")
    found = next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)
    return found.get("reason") if found else None


def counts(trials: list[st.Trial]) -> dict:
    states = [t.state for t in trials]
    return {"created": len(trials), "running": states.count("running"), "succeeded": states.count("complete"),
            "failed": states.count("failed"), "pruned": states.count("pruned")}


def best_row(spec: FineTuneSweepSpec, trials: list[st.Trial], bodies: dict[int, dict]) -> dict | None:
    best = st.best(spec, trials)
    if best is None:
        return None
    body = bodies[best.number]
    return {"number": best.number, "name": body["metadata"]["name"], "objective": best.objective, "parameters": shown(best.values),
            "output": dict(((body.get("status") or {}).get("output")) or {}),
            "testMetrics": sweep_objective.test_metrics(body.get("status") or {}) or None}


def too_many_failures(spec: FineTuneSweepSpec, trials: list[st.Trial]) -> bool:
    return counts(trials)["failed"] > spec.max_failed_trials


def phase(spec: FineTuneSweepSpec, trials: list[st.Trial]) -> str:
    c = counts(trials)
    if spec.suspend:
        return "Suspended"
    if c["running"]:
        return "Running"
    if too_many_failures(spec, trials):
        return "Failed"
    if c["created"] >= spec.max_trials:
        return "Succeeded" if c["succeeded"] else "Failed"
    return "Running" if c["created"] else "Pending"


def summary(spec: FineTuneSweepSpec, trials: list[st.Trial]) -> str:
    c = counts(trials)
    return f"{c['created'] - c['running']}/{spec.max_trials}"
