"""Pure: whether a trained job's evaluation earns it serving (`spec.serving.gate`).

The gate is judged on `status.evaluation` (the trainer's numbers, compared with
the metric registry), once training has succeeded. Its verdict is the
`ServingGated` condition: True holds serving back (the message gives the
numbers), False lets it go ahead. A result the trainer did not report is a
miss, never a pass: a gate exists to keep an unproven model off the endpoint.
"""

from __future__ import annotations

from kubetune_contract.evaluation_metrics import format_value, improvement, is_better, metric

from ..api.status import ConditionType as C
from ..api.status import Reason as R


def gate_verdict(gate, evaluation: dict | None) -> tuple[bool, str, str]:
    """(passed, reason, message) for `gate` (a ServingGate) against `status.evaluation`."""
    name = gate.metric
    label = metric(name).label
    row = ((evaluation or {}).get("metrics") or {}).get(name) or {}
    tuned, base = row.get("tuned"), row.get("base")
    if tuned is None:
        return False, R.GATE_NO_RESULT, f"serving.gate: the tuned model's {label} was not reported by the evaluation; not served"
    shown = f"{label} {format_value(name, tuned)}"
    if gate.threshold is not None:
        passed = is_better(name, tuned, gate.threshold)
        text = f"{shown} {'beats' if passed else 'does not beat'} serving.gate.threshold {format_value(name, gate.threshold)}"
    elif base is None:
        return False, R.GATE_NO_RESULT, f"serving.gate: the base model's {label} was not reported by the evaluation; not served"
    elif gate.min_improvement is None:
        passed = is_better(name, tuned, base)
        text = f"{shown} {'beats' if passed else 'does not beat'} the base model's {format_value(name, base)}"
    else:
        change = improvement(name, base, tuned)
        passed = change is not None and change >= gate.min_improvement
        how = "base is 0, so no relative improvement" if change is None else f"{change:+.1%} vs base {format_value(name, base)}"
        text = f"{shown} ({how}); serving.gate.minImprovement is {gate.min_improvement:+.1%}"
    return passed, R.GATE_PASSED if passed else R.GATE_MISSED, text + ("; served" if passed else "; not served")


def gate_conditions(gate, evaluation: dict | None) -> tuple[bool, list[tuple[str, str, str, str]]]:
    """(serve, conditions to set) for a succeeded job that asks to be served."""
    if gate is None:
        return True, []
    passed, reason, message = gate_verdict(gate, evaluation)
    conditions = [(C.SERVING_GATED, "False" if passed else "True", reason, message)]
    if not passed:
        conditions.append((C.SERVING, "False", R.SERVING_GATED, message))
    return passed, conditions


def held_back(status: dict) -> bool:
    """Whether this status says the gate keeps the job from being served."""
    return any(c.get("type") == C.SERVING_GATED and c.get("status") == "True" for c in status.get("conditions") or [])
