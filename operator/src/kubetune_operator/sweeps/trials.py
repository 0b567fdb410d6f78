"""What a sweep knows of its trials, without Optuna: each trial's record, the
direction the sweep optimises, the best trial, and how the sampler and pruner
are described in status. The sweep controller reads these on every pass; it
imports Optuna (`study`) only when a sweep asks for a suggestion or a pruning
verdict, so an operator with no sweep never loads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..api.sweep import FineTuneSweepSpec
from ..api.sweep_objective import lower_is_better

SAMPLERS = {"random": "RandomSampler", "tpe": "TPESampler"}  # spec.algorithm.type -> Optuna's class (grid: GridSampler)


@dataclass
class Trial:
    """What the study knows of one trial."""

    number: int
    values: dict[str, Any]  # parameter path -> the sampled value (Optuna's, before field_value)
    system_attrs: dict[str, Any] = field(default_factory=dict)
    state: str = "running"  # running | complete | pruned | failed
    objective: float | None = None
    curve: dict[int, float] = field(default_factory=dict)  # step -> objective at that evaluation


def direction(spec: FineTuneSweepSpec) -> str:
    if spec.optimize.direction:
        return spec.optimize.direction
    return "minimize" if lower_is_better(spec.optimize.metric) else "maximize"


def describe_sampler(spec: FineTuneSweepSpec) -> str:
    a = spec.algorithm
    if a.type == "grid":
        return f"GridSampler(seed={a.seed})"
    extra = f", n_startup_trials={spec.startup_trials}" if a.type == "tpe" else ""
    return f"{SAMPLERS[a.type]}(seed={a.seed} + trial number{extra})"


def describe_pruner(spec: FineTuneSweepSpec) -> str | None:
    if spec.pruning is None:
        return None
    return f"MedianPruner(n_startup_trials={spec.pruning.startup_trials}, n_warmup_steps={spec.pruning.warmup_steps})"


def carried(curve: dict[int, float], steps: set[int]) -> dict[int, float]:
    """A finished trial's curve, with a value at each of `steps` taken from its
    newest evaluation at or before it.

    The operator samples each trial's newest evaluation once per scrape, so a
    fast trial's curve can miss the very step a running trial is at, and
    Optuna's median pruner compares only values at the same step: without this,
    whether a clearly worse trial is pruned would depend on scrape timing. For
    a falling loss the carried value is the higher, earlier one, so the median
    it gives never prunes more eagerly than the true value would."""
    out = dict(curve)
    known = sorted(curve)
    for step in steps:
        earlier = [k for k in known if k <= step]
        if step not in out and earlier:
            out[step] = curve[earlier[-1]]
    return out


def best(spec: FineTuneSweepSpec, trials: list[Trial]) -> Trial | None:
    """The completed trial with the best objective (pruned and failed ones never count)."""
    done = [t for t in trials if t.state == "complete" and t.objective is not None]
    if not done:
        return None
    pick = min if direction(spec) == "minimize" else max
    return pick(done, key=lambda t: (t.objective, t.number) if pick is min else (t.objective, -t.number))
