"""Pure: what a sweep judges its trials by (`spec.optimize.metric`).

Always something measured on the **validation** rows: the test rows must stay
held out, so that the best trial's test metrics are an unbiased estimate.
`evalLoss` is the trainer's validation loss; a task metric of the metric
registry (`kubetune_contract.evaluation_metrics`) is asked of each trial
through `evaluation.validationMetrics`, which scores the tuned model on the
validation rows. Test-split losses (testLoss, perplexity) are refused.
"""

from __future__ import annotations

from kubetune_contract.evaluation_metrics import METRICS, PREFERENCE, SELECTABLE, metric

from .errors import Problem

# preferenceAccuracy ranks test pairs only: a preference sweep judges by evalLoss.
OBJECTIVES = ("evalLoss", *(m for m in SELECTABLE if m not in PREFERENCE))
WHERE = "spec.optimize.metric"


def lower_is_better(name: str) -> bool:
    return not metric(name).higher_is_better


def problems(spec) -> list[Problem]:
    """Why `spec.optimize` cannot judge this template's trials, each naming the field."""
    name = spec.optimize.metric
    if name not in OBJECTIVES:
        if name in METRICS:
            return [Problem(WHERE, f"{name} is measured on the test rows, which a sweep must not choose by (they would no longer be "
                                   f"held out); judge by evalLoss or a task metric, scored on the validation rows: {', '.join(OBJECTIVES)}")]
        return [Problem(WHERE, f"{name!r} is not a metric a trial reports; valid: {', '.join(OBJECTIVES)}")]
    out = []
    if name != "evalLoss" and spec.template.objective != "sft":
        out.append(Problem(WHERE, f"{name} scores answers against reference answers on the validation rows, which objective "
                                  f"{spec.template.objective} does not have: judge its trials by evalLoss"))
    if not spec.template.dataset.has_eval:
        out.append(Problem(WHERE, f"{name} is measured on the validation rows: set template.dataset.evalUri or template.dataset.evalSplit"))
    if spec.pruning is not None and name != "evalLoss":
        out.append(Problem("spec.pruning", f"pruning compares trials by validation loss during training, and {name} is measured "
                                           "only when a trial ends: prune with optimize.metric evalLoss, or drop pruning"))
    return out


def ask_for(trial_spec: dict, name: str) -> dict:
    """The trial's spec (manifest form), asking its trainer for `name` on the validation rows."""
    if name == "evalLoss":
        return trial_spec
    evaluation = trial_spec.setdefault("evaluation", {})
    wanted = list(evaluation.get("validationMetrics") or [])
    if name not in wanted:
        evaluation["validationMetrics"] = [*wanted, name]
    return trial_spec


def value(status: dict, name: str) -> float | None:
    """A finished trial's objective from its FineTuneJob's status."""
    if name == "evalLoss":
        return (status.get("metrics") or {}).get("evalLoss")
    return ((status.get("evaluation") or {}).get("validation") or {}).get(name)


def test_metrics(status: dict) -> dict[str, float]:
    """The trial's tuned-model metrics on the held-out test rows (the unbiased estimate of the best trial)."""
    rows = (status.get("evaluation") or {}).get("metrics") or {}
    return {n: r["tuned"] for n, r in rows.items()
            if n in METRICS and metric(n).split == "test" and isinstance(r, dict) and r.get("tuned") is not None}
