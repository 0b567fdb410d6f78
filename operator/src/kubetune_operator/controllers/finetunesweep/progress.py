"""A sweep's status from its trials: the trials table, counts, the best trial,
the phase. Pure, so every rule is unit-tested without a cluster."""

from __future__ import annotations

from ...api.sweep import FineTuneSweepSpec
from ...api import sweep_objective
from ...sweeps import trials as st
from ...api.search_space import shown
from .observe import INVALID

MAX_CURVE_POINTS = 200


def trial_rows(trials: list[st.Trial], bodies: dict[int, dict], old_status: dict) -> list[dict]:
    remembered = {t["number"]: t for t in old_status.get("trials") or []}
    rows = []
    for t in trials:
        body = bodies.get(t.number)
        status = (body or {}).get("status") or {}
        row = {"number": t.number, "name": body["metadata"]["name"] if body else remembered[t.number]["name"],
               "parameters": shown(t.values) if body else remembered[t.number].get("parameters", {}),
               "phase": status.get("phase") or ("Pending" if body else INVALID), "pruned": t.state == "pruned",
               "curve": {str(step): value for step, value in sorted(t.curve.items())[-MAX_CURVE_POINTS:]}}
        if t.objective is not None:
            row["objective"] = t.objective
        reason = _reason(status) if body else remembered[t.number].get("reason")
        if reason:
            row["reason"] = reason
        rows.append(row)
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
