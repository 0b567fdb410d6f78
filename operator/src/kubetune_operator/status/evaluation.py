"""From the trainer's evaluation summary (its termination message's
`evaluation`) to `status.evaluation`, the `Fit` condition and the Events a
user sees. Pure; the directions, labels and the printer column's text come
from the metric registry (`kubetune_contract.evaluation_metrics`), so the
operator never decides on its own whether a number is better. Also
`status.checkpoint.best` (training.keepBest: the checkpoint the output is).
"""

from __future__ import annotations

import math

from kubetune_contract import fit
from kubetune_contract.evaluation_metrics import METRICS, format_value, improvement, is_better, metric, summary

BASELINES = ("mean", "linear", "randomForest")
MAX_EVENT = 1024
MAX_VERDICT = 512


def finite(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _comparison(name: str, row: dict) -> dict:
    base, tuned = finite(row.get("base")), finite(row.get("tuned"))
    out = {"base": base, "tuned": tuned}
    if base is not None and tuned is not None:
        out.update(change=tuned - base, improvement=improvement(name, base, tuned), better=is_better(name, tuned, base))
    return {k: v for k, v in out.items() if v is not None}


def evaluation_status(report: dict) -> dict | None:
    """status.evaluation from the trainer's summary; None when it sent none."""
    ev = report.get("evaluation")
    if not isinstance(ev, dict):
        return None
    rows = {n: _comparison(n, r) for n, r in (ev.get("metrics") or {}).items() if n in METRICS and isinstance(r, dict)}
    baselines = {b: {m: finite(v) for m, v in scores.items() if m in METRICS and finite(v) is not None}
                 for b, scores in (ev.get("baselines") or {}).items() if b in BASELINES and isinstance(scores, dict)}
    parse = {k: v for k in ("base", "tuned") if (v := finite((ev.get("parseRate") or {}).get(k))) is not None and 0 <= v <= 1}
    validation = {n: v for n, raw in (ev.get("validation") or {}).items() if n in METRICS and (v := finite(raw)) is not None}
    primary = ev.get("primary") if ev.get("primary") in METRICS else None
    verdict = ev.get("verdict") if isinstance(ev.get("verdict"), str) else None
    out = {"primary": primary, "testRows": ev.get("testRows") if isinstance(ev.get("testRows"), int) else None,
           "verdict": _clip(verdict, MAX_VERDICT) if verdict else None,
           "metrics": rows or None, "baselines": {b: s for b, s in baselines.items() if s} or None, "parseRate": parse or None,
           "validation": validation or None}
    if primary in rows and rows[primary].get("tuned") is not None:
        out["summary"] = summary(primary, rows[primary]["tuned"], rows[primary].get("base"))
    return {k: v for k, v in out.items() if v is not None}


def best_checkpoint(checkpoint: dict) -> dict | None:
    """status.checkpoint.best from the report's checkpoint (training.keepBest)."""
    best = checkpoint.get("best")
    if not (isinstance(best, dict) and isinstance(best.get("step"), int)):
        return None
    return {"uri": str(best["uri"]) if best.get("uri") else None, "step": best["step"], "evalLoss": finite(best.get("evalLoss"))}


def fit_condition(report: dict | None, failure_reason: str | None = None) -> tuple[str, str, str] | None:
    """(status, reason, message) of the Fit condition: the trainer's diagnosis,
    or Diverged when the run failed for a diverged loss."""
    if failure_reason == "LossDiverged":
        detail = (report or {}).get("message") or "the training loss diverged"
        return "False", fit.DIVERGED, (f"{detail}: lower training.learningRate (try 10x lower), keep training.maxGradNorm "
                                       "at 1.0, and check the data for empty or corrupt rows")
    diagnosis = ((report or {}).get("evaluation") or {}).get("fit")
    if not isinstance(diagnosis, dict) or diagnosis.get("reason") not in fit.REASONS:
        return None
    reason = diagnosis["reason"]
    return fit.condition_status(reason), reason, str(diagnosis.get("message") or reason)


def _clip(text: str, limit: int = MAX_EVENT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def results_event(evaluation: dict) -> tuple[str, str, str]:
    """The Normal Event with the results: the verdict, then tuned (base) per metric and the baselines."""
    parts = []
    for name, row in (evaluation.get("metrics") or {}).items():
        text = f"{metric(name).short} {format_value(name, row.get('tuned'))}"
        if row.get("base") is not None:
            text += f" (base {format_value(name, row['base'])})"
        parts.append(text)
    for baseline, scores in (evaluation.get("baselines") or {}).items():
        parts.append(f"{baseline} baseline " + ", ".join(f"{metric(m).short} {format_value(m, v)}" for m, v in scores.items()))
    head = f"{evaluation['verdict']}. " if evaluation.get("verdict") else ""
    return "Normal", "Evaluated", _clip(head + "; ".join(parts))


def fit_event(condition: tuple[str, str, str]) -> tuple[str, str, str] | None:
    """A Warning Event when the fit is not Good: reason Fit<Reason>, the condition's message."""
    status, reason, message = condition
    if reason == fit.GOOD:
        return None
    return "Warning", f"Fit{reason}", _clip(message)
