"""A sweep's Optuna study, rebuilt from its trials whenever a sweep asks for a
suggestion or a pruning verdict (the first sweep imports Optuna; `trials`
holds what needs no Optuna, and is re-exported here).

There is no database: each trial's values and the sampler's own bookkeeping
for it (`system_attrs`, e.g. the grid point it took) are written on its
FineTuneJob before the FineTuneJob is created, and what the trial reported
(its objective, its evaluations during training) is read back from its status.
Rebuilding the study from those records on every pass is cheap (milliseconds
for hundreds of trials) and makes a restarted operator continue where the last
one stopped: no trial is lost, none is suggested twice.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from ..api.search_space import Dimension, dimensions
from ..api.sweep import FineTuneSweepSpec
from .trials import SAMPLERS, Trial, best, carried, describe_pruner, describe_sampler, direction

__all__ = ["SAMPLERS", "Trial", "best", "carried", "describe_pruner", "describe_sampler", "direction", "distribution",
           "distributions", "pruner", "rebuild", "sampler", "suggest", "to_prune"]

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger("kubetune.sweeps")


def distribution(dim: Dimension) -> BaseDistribution:
    p = dim.param
    if p.values is not None or p.choices is not None:
        return CategoricalDistribution(dim.grid())
    if dim.integer:
        return IntDistribution(int(p.min), int(p.max), log=p.scale == "log", step=int(p.step or 1))
    return FloatDistribution(p.min, p.max, log=p.scale == "log", step=p.step)


def distributions(spec: FineTuneSweepSpec) -> dict[str, BaseDistribution]:
    return {d.path: distribution(d) for d in dimensions(spec)}


def sampler(spec: FineTuneSweepSpec, number: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler that suggests trial `number`. The study is rebuilt for every
    suggestion, so the sampler's random state would restart each time: seeding it
    with the sweep's seed plus the trial number keeps every suggestion reproducible
    and no two alike. The grid keeps the sweep's seed: it shuffles its points by
    that seed, and the grid point each trial took (its `grid_id`) must mean the
    same point in every rebuild; it picks among the points no trial took."""
    a = spec.algorithm
    if a.type == "grid":
        return optuna.samplers.GridSampler({d.path: d.grid() for d in dimensions(spec)}, seed=a.seed)
    seed = (a.seed + number) % 2**32
    if a.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.startup_trials)


def pruner(spec: FineTuneSweepSpec) -> optuna.pruners.BasePruner:
    if spec.pruning is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.pruning.startup_trials, n_warmup_steps=spec.pruning.warmup_steps)


_STATES = {"running": TrialState.RUNNING, "complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}


def rebuild(spec: FineTuneSweepSpec, trials: list[Trial], next_number: int = 0) -> optuna.Study:
    """The study as the trials' records say it is (in trial-number order), its
    sampler ready to suggest trial `next_number`."""
    study = optuna.create_study(direction=direction(spec), sampler=sampler(spec, next_number), pruner=pruner(spec))
    dists = distributions(spec)
    asked = {step for t in trials if t.state == "running" for step in t.curve}
    for t in sorted(trials, key=lambda t: t.number):
        state = _STATES[t.state]
        complete = state == TrialState.COMPLETE and t.objective is not None
        study.add_trial(create_trial(
            state=state if complete or state != TrialState.COMPLETE else TrialState.FAIL,
            value=t.objective if complete else None,
            params=t.values, distributions={k: v for k, v in dists.items() if k in t.values},
            system_attrs=t.system_attrs, intermediate_values=dict(t.curve) if t.state == "running" else carried(t.curve, asked),
        ))
    return study


def suggest(study: optuna.Study, spec: FineTuneSweepSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The next trial's values, and the sampler's bookkeeping to write beside them."""
    trial = study.ask(distributions(spec))
    frozen = study.trials[-1]
    return dict(trial.params), dict(frozen.system_attrs)


def to_prune(spec: FineTuneSweepSpec, trials: list[Trial]) -> list[int]:
    """Numbers of the running trials the study's pruner stops now."""
    ordered = sorted(trials, key=lambda t: t.number)
    study = rebuild(spec, ordered)
    return [t.number for t, frozen in zip(ordered, study.trials)
            if frozen.state == TrialState.RUNNING and frozen.intermediate_values and study.pruner.prune(study, frozen)]


