"""Conditions as status keeps them: one upsert rule (lastTransitionTime moves
only when a condition's status changes) and one bound on every message."""

from __future__ import annotations

MAX_MESSAGE = 1024


def clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def set_condition(conditions: list[dict], type_: str, status: str, reason: str, message: str, now: str, generation: int | None) -> list[dict]:
    """Upsert one condition; lastTransitionTime moves only when status changes."""
    out = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(cond)
            continue
        found = True
        changed = cond.get("status") != status
        out.append({
            "type": type_, "status": status, "reason": reason, "message": clip(message),
            "lastTransitionTime": now if changed else cond.get("lastTransitionTime", now),
            "observedGeneration": generation,
        })
    if not found:
        out.append({"type": type_, "status": status, "reason": reason, "message": clip(message), "lastTransitionTime": now, "observedGeneration": generation})
    return out
