"""The run's evaluation, concluded: per metric the base, the tuned model and
the change (directions from the registry), the baselines, the fit diagnosis,
a one-line verdict, each test row's answers, and the compact form the
termination message carries (the operator derives `status.evaluation` from
it; everything else goes to metrics.json, predictions.jsonl and the report).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kubetune_contract.evaluation_metrics import METRICS, format_value, improvement, is_better, metric

from . import baselines as baseline_models
from . import scoring
from .diagnosis import Comparison, Diagnosis, Schedule, diagnose
from .runner import Task


def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def comparison_rows(base: dict | None, tuned: dict) -> dict[str, dict]:
    """{metric: {base, tuned, change, improvement, better}} in the registry's order."""
    base_metrics = (base or {}).get("metrics", {})
    out = {}
    for name in METRICS:
        if name not in tuned["metrics"]:
            continue
        b, t = _finite(base_metrics.get(name)), _finite(tuned["metrics"][name])
        out[name] = {"base": b, "tuned": t, "change": None if b is None or t is None else t - b,
                     "improvement": improvement(name, b, t), "better": None if b is None or t is None else is_better(name, t, b)}
    return out


def baseline_scores(task: Task, seed: int) -> dict[str, dict[str, float | None]]:
    """{baseline: {numeric metric: value}} on the same test rows."""
    if not task.spec.baselines or not task.examples:
        return {}
    predictions = baseline_models.predict(task.spec.baselines, task.train_prompts, task.train_values,
                                          [e.question for e in task.examples], seed=seed)
    numeric = [m for m in task.spec.metrics if metric(m).numeric]
    return {name: scoring.score(numeric, [], [], values, task.reference_numbers) for name, values in predictions.items()}


def _versus(primary: str, tuned: float | None, base: float | None) -> str | None:
    """"tuned beats base on exact match by 68% (47.1 vs 146)" (no percentage when base is 0)."""
    label = metric(primary).label
    if tuned is None:
        return None
    if base is None:
        return f"tuned {label} {format_value(primary, tuned)}"
    both = f"({format_value(primary, tuned)} vs {format_value(primary, base)})"
    if tuned == base:
        return f"tuned equals base on {label} {both}"
    gain = improvement(primary, base, tuned)
    if is_better(primary, tuned, base):
        return f"tuned beats base on {label}" + (f" by {100 * gain:.0f}%" if gain is not None else "") + f" {both}"
    return "tuned is " + (f"{-100 * gain:.0f}% " if gain is not None else "") + f"worse than base on {label} {both}"


def _beats(primary: str, tuned: float | None, base: float | None, baselines: dict) -> list[str]:
    parts = [p for p in (_versus(primary, tuned, base),) if p]
    scored = {n: s.get(primary) for n, s in baselines.items() if s.get(primary) is not None}
    if scored and tuned is not None:
        best = min(scored, key=lambda n: scored[n]) if not metric(primary).higher_is_better else max(scored, key=lambda n: scored[n])
        beaten = is_better(primary, tuned, scored[best])
        parts.append(f"{'beats' if beaten else 'loses to'} the best baseline, {best} ({format_value(primary, scored[best])})")
    return parts


def verdict(primary: str | None, rows: dict, baselines: dict, diagnosis: Diagnosis) -> str:
    """"tuned beats base on mean absolute error by 68% (47.1 vs 146); overfitting from step 900: consider 2 epochs"."""
    parts = _beats(primary, rows[primary]["tuned"], rows[primary]["base"], baselines) if primary in rows else []
    parts.append("good fit" if diagnosis.reason == "Good" else diagnosis.short)
    return "; ".join(parts)


@dataclass
class Concluded:
    full: dict  # metrics.json's "evaluation"
    compact: dict  # the termination message's "evaluation"
    predictions: list[dict]  # predictions.jsonl


def predictions(task: Task, base: dict | None, tuned: dict) -> list[dict]:
    out = []
    for i, example in enumerate(task.examples):
        row = {"index": i, "prompt": example.question, "reference": example.reference,
               "base": (base or {}).get("answers", [None] * len(task.examples))[i], "tuned": tuned["answers"][i]}
        if task.numeric:
            row.update(referenceNumber=task.reference_numbers[i], baseNumber=(base or {}).get("numbers", [None] * (i + 1))[i],
                       tunedNumber=tuned["numbers"][i])
        out.append(row)
    return out


def conclude(task: Task, base: dict | None, tuned: dict | None, history: list[dict], schedule: Schedule, seed: int) -> Concluded:
    tuned = tuned or {"metrics": {}}
    rows = comparison_rows(base, tuned)
    primary = task.primary
    cmp = Comparison(base_eval_loss=(rows.get("evalLoss") or {}).get("base"), tuned_eval_loss=tuned["metrics"].get("evalLoss"),
                     primary=primary, base_primary=(rows.get(primary) or {}).get("base"),
                     tuned_primary=(rows.get(primary) or {}).get("tuned"))
    diagnosis = diagnose(history, cmp, schedule)
    scores = baseline_scores(task, seed) if task.examples else {}
    parse = {k: m.get("parseRate") for k, m in (("base", base or {}), ("tuned", tuned)) if m.get("parseRate") is not None}
    full = {"primary": primary, "testRows": len(task.examples) or len(task.pairs) or (len(task.test) if task.test is not None else 0),
            "metrics": rows, "baselines": scores, "parseRate": parse, "fit": diagnosis.to_json(),
            "validation": tuned.get("validation") or {},
            "verdict": verdict(primary, rows, scores, diagnosis), "settings": task.spec.model_dump(by_alias=True, mode="json"),
            "seconds": {k: m.get("seconds") for k, m in (("base", base or {}), ("tuned", tuned)) if m.get("seconds") is not None}}
    return Concluded(full=full, compact=compact(full), predictions=predictions(task, base, tuned) if tuned.get("answers") else [])


def compact(full: dict) -> dict:
    """What status.evaluation and the Fit condition need, small enough for the termination message."""
    return {
        "primary": full["primary"], "testRows": full["testRows"],
        "metrics": {n: {k: r[k] for k in ("base", "tuned") if r[k] is not None} for n, r in full["metrics"].items()},
        "baselines": full["baselines"], "parseRate": full["parseRate"],
        "fit": {k: full["fit"][k] for k in ("reason", "message")}, "verdict": full["verdict"],
        **({"validation": full["validation"]} if full.get("validation") else {}),
    }
