"""FineTuneSweep without a cluster: what is refused and where, how a trial's
values become its spec, and the sampler's and pruner's decisions, checked
against Optuna itself."""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from kubetune_operator.api.manifest import parse_sweep
from kubetune_operator.sweeps import study as st
from kubetune_operator.api.search_space import trial_spec

TEMPLATE = {
    "model": {"uri": "s3://bucket-one/models/tiny"},
    "dataset": {"trainUri": "s3://bucket-one/train.jsonl", "evalSplit": 0.1},
    "method": "lora",
    "training": {"maxSteps": 10, "evalEverySteps": 2},
}


def sweep(**spec) -> dict:
    base = {"template": copy.deepcopy(TEMPLATE), "parameters": [{"path": "training.learningRate", "values": [1e-4, 1e-3]}]}
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneSweep", "metadata": {"name": "s"}, "spec": {**base, **spec}}


def problems(doc: dict) -> dict[str, str]:
    parsed = parse_sweep(doc)
    return {p.path: p.message for p in parsed.problems}


def spec_of(doc: dict):
    parsed = parse_sweep(doc)
    assert parsed.sweep is not None, [p.render() for p in parsed.problems]
    return parsed.sweep.spec


# --------------------------------------------------------------------------- refused, naming the field

BAD = [
    ("unknown path", {"parameters": [{"path": "training.learningrate", "values": [1e-4]}]},
     "spec.parameters[0].path", "is not allowed; valid values"),
    ("min above max", {"parameters": [{"path": "training.learningRate", "min": 0.01, "max": 0.001}]},
     "spec.parameters[0]", "min must be less than max"),
    ("log with zero", {"parameters": [{"path": "training.learningRate", "min": 0.0, "max": 0.01, "scale": "log"}]},
     "spec.parameters[0]", "scale log needs min > 0"),
    ("no values at all", {"parameters": [{"path": "training.learningRate"}]},
     "spec.parameters[0]", "give exactly one of values, choices, or min and max"),
    ("grid over a range without step", {"algorithm": {"type": "grid"}, "parameters": [{"path": "training.learningRate", "min": 1e-4, "max": 1e-3}]},
     "spec", "algorithm grid needs values, choices or a step for every parameter"),
    ("parallelism 0", {"parallelism": 0}, "spec.parallelism", "must be >= 1"),
    ("invalid template", {"template": {**TEMPLATE, "lora": {"r": 0}}}, "spec.template.lora.r", "must be >= 1"),
    ("serving in the template", {"template": {**TEMPLATE, "serving": {"enabled": True}}},
     "spec", "template.serving.enabled must be false: set promote: true to serve the best trial"),
    ("a path searched twice", {"parameters": [{"path": "lora.r", "values": [8]}, {"path": "lora.r", "values": [16]}]},
     "spec", "each path may be searched once"),
    ("startupTrials without tpe", {"algorithm": {"type": "random", "startupTrials": 3}}, "spec.algorithm", "startupTrials applies only to type tpe"),
    # Known only against the template: kubetune validate and the operator, not the API server.
    ("metric the template does not evaluate", {"template": {**TEMPLATE, "dataset": {"trainUri": "s3://bucket-one/t.jsonl"}}},
     "spec.optimize.metric", "evalLoss is measured on the validation rows: set template.dataset.evalUri or template.dataset.evalSplit"),
    ("a test-set metric", {"optimize": {"metric": "perplexity"}}, "spec.optimize.metric",
     "perplexity is measured on the test rows, which a sweep must not choose by"),
    ("a task metric for a preference template", {"template": {**TEMPLATE, "objective": "dpo"}, "optimize": {"metric": "exactMatch"}},
     "spec.optimize.metric", "which objective dpo does not have: judge its trials by evalLoss"),
    ("pruning by a metric known only at the end", {"optimize": {"metric": "exactMatch"}, "pruning": {}}, "spec.pruning",
     "pruning compares trials by validation loss during training, and exactMatch is measured only when a trial ends"),
    ("unknown metric", {"optimize": {"metric": "accuracy"}}, "spec.optimize.metric", "'accuracy' is not a metric a trial reports"),
    ("a value that makes the trial invalid", {"parameters": [{"path": "lora.r", "values": [8, 0]}]},
     "spec.parameters[0].values[1]", "0 makes an invalid trial: spec.template.lora.r: 0 is out of range; must be >= 1"),
    ("a range end that makes the trial invalid", {"parameters": [{"path": "lora.dropout", "min": 0.0, "max": 1.0}]},
     "spec.parameters[0].max", "makes an invalid trial: spec.template.lora.dropout"),
    ("numbers for a word field", {"parameters": [{"path": "training.lrScheduler", "values": [1]}]},
     "spec.parameters[0].path", "training.lrScheduler takes one of cosine, linear"),
    ("a word the field does not take", {"parameters": [{"path": "training.lrScheduler", "choices": ["cosine", "warm"]}]},
     "spec.parameters[0].choices", "training.lrScheduler takes one of cosine"),
    ("a fraction for a whole number", {"parameters": [{"path": "lora.r", "values": [8.5]}]}, "spec.parameters[0].values", "lora.r takes whole numbers"),
    ("pruning without evaluations", {"template": {**TEMPLATE, "training": {"maxSteps": 10}}, "pruning": {}},
     "spec.pruning", "set template.training.evalEverySteps"),
    ("multipleOf a word", {"parameters": [{"path": "lora.alpha", "values": [1, 2], "multipleOf": "training.lrScheduler"}]},
     "spec.parameters[0].multipleOf", "training.lrScheduler is not a number to multiply"),
]


@pytest.mark.parametrize("name,changes,path,message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_sweep_is_refused_naming_the_field(name, changes, path, message):
    found = problems(sweep(**changes))
    assert any(p == path and message in m for p, m in found.items()), found


def test_the_example_style_sweep_is_valid_and_alpha_follows_r():
    spec = spec_of(sweep(parameters=[{"path": "lora.r", "values": [8, 16]}, {"path": "lora.alpha", "multipleOf": "lora.r", "values": [1, 2]},
                                     {"path": "training.lrScheduler", "choices": ["cosine", "linear"]},
                                     {"path": "dataset.packing", "choices": ["true", "false"]}]))
    trial = trial_spec(spec, {"lora.r": 16, "lora.alpha": 2, "training.lrScheduler": "linear", "dataset.packing": "true"})
    assert trial["lora"] == {"r": 16, "alpha": 32}
    assert trial["training"]["lrScheduler"] == "linear" and trial["dataset"]["packing"] is True
    assert trial["training"]["maxSteps"] == 10, "the rest of the template stays"
    # Without r searched, alpha multiplies the template's (resolved default) r.
    alone = spec_of(sweep(parameters=[{"path": "lora.alpha", "multipleOf": "lora.r", "values": [2]}]))
    assert trial_spec(alone, {"lora.alpha": 2})["lora"] == {"alpha": 32}


def test_startup_trials_default_to_a_third_of_the_sweep_within_1_and_10():
    assert [spec_of(sweep(maxTrials=n)).startup_trials for n in (1, 6, 12, 100)] == [1, 2, 4, 10]
    assert spec_of(sweep(maxTrials=100, algorithm={"type": "tpe", "startupTrials": 3})).startup_trials == 3


# --------------------------------------------------------------------------- the sampler, against Optuna


GRID = sweep(algorithm={"type": "grid", "seed": 3},
             parameters=[{"path": "lora.r", "values": [8, 16]}, {"path": "training.learningRate", "min": 1e-4, "max": 3e-4, "step": 2e-4}])


def _run(spec, n: int, objective=lambda values: 1.0) -> list[st.Trial]:
    """n trials, the study rebuilt from the records before every suggestion (as the controller does)."""
    trials: list[st.Trial] = []
    for number in range(n):
        values, attrs = st.suggest(st.rebuild(spec, trials, number), spec)
        trials.append(st.Trial(number, values, attrs, state="complete", objective=objective(values)))
    return trials


def test_grid_visits_every_point_once_though_the_study_is_rebuilt_for_every_trial():
    spec = spec_of(GRID)
    trials = _run(spec, 4)
    points = {(t.values["lora.r"], t.values["training.learningRate"]) for t in trials}
    assert points == {(8, 1e-4), (8, 3e-4), (16, 1e-4), (16, 3e-4)}


def test_grid_skips_points_of_trials_still_running():
    spec = spec_of(GRID)
    first = _run(spec, 2)
    for t in first:
        t.state, t.objective = "running", None
    values, _ = st.suggest(st.rebuild(spec, first, 2), spec)
    assert (values["lora.r"], values["training.learningRate"]) not in {(t.values["lora.r"], t.values["training.learningRate"]) for t in first}


TPE = sweep(algorithm={"type": "tpe", "seed": 11, "startupTrials": 3}, maxTrials=8,
            parameters=[{"path": "training.learningRate", "min": 1e-5, "max": 1e-2, "scale": "log"}, {"path": "lora.r", "values": [8, 16, 32]}])


def test_tpe_start_up_trials_are_optunas_random_ones_then_tpe_takes_over():
    spec = spec_of(TPE)
    dists = st.distributions(spec)
    trials = _run(spec, 5, objective=lambda v: (math.log10(v["training.learningRate"]) + 3.5) ** 2)
    for number, trial in enumerate(trials[:3]):
        random_study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=11 + number))
        assert trial.values == random_study.ask(dists).params, f"start-up trial {number}"
    # After the start-up trials, the suggestion is the one Optuna's TPE makes for this history.
    tpe = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=11 + 3, n_startup_trials=3))
    for t in trials[:3]:
        tpe.add_trial(optuna.trial.create_trial(params=t.values, distributions=dists, value=t.objective))
    assert trials[3].values == tpe.ask(dists).params
    random_study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=11 + 3))
    assert trials[3].values != random_study.ask(dists).params, "TPE did not take over after the start-up trials"


def test_suggestions_are_reproducible_from_the_seed_and_differ_between_trials():
    spec = spec_of(sweep(algorithm={"type": "random", "seed": 5}, parameters=[{"path": "training.learningRate", "min": 1e-5, "max": 1e-2, "scale": "log"}]))
    first, again = _run(spec, 4), _run(spec, 4)
    assert [t.values for t in first] == [t.values for t in again]
    assert len({t.values["training.learningRate"] for t in first}) == 4


def test_the_sampler_is_described_as_used():
    assert st.describe_sampler(spec_of(TPE)) == "TPESampler(seed=11 + trial number, n_startup_trials=3)"
    assert st.describe_sampler(spec_of(GRID)) == "GridSampler(seed=3)"


# --------------------------------------------------------------------------- the pruner, against Optuna

PRUNED = sweep(pruning={"startupTrials": 2, "warmupSteps": 2}, parameters=[{"path": "training.learningRate", "values": [1e-4, 1e-3, 1e-2]}])


def _optuna_prunes(curves: list[dict[int, float]], running: dict[int, float]) -> bool:
    """Optuna's own decision, by its own API: finished trials report and complete, the last one reports and asks."""
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2))
    for curve in curves:
        trial = study.ask()
        for step, value in curve.items():
            trial.report(value, step)
        study.tell(trial, list(curve.values())[-1])
    trial = study.ask()
    for step, value in running.items():
        trial.report(value, step)
    return trial.should_prune()


@pytest.mark.parametrize("running,expected", [({2: 2.9, 4: 2.8}, True), ({2: 1.0, 4: 0.9}, False), ({2: 2.9}, True), ({1: 9.0}, False)],
                         ids=["worse-than-median", "better", "worse-at-the-first-step-after-warmup", "within-warmup"])
def test_pruning_decisions_are_optunas_median_pruner(running, expected):
    spec = spec_of(PRUNED)
    curves = [{2: 2.0, 4: 1.5}, {2: 2.2, 4: 1.7}]
    trials = [st.Trial(i, {"training.learningRate": v}, state="complete", objective=c[4], curve=c)
              for i, (v, c) in enumerate(zip((1e-4, 1e-3), curves))]
    trials.append(st.Trial(2, {"training.learningRate": 1e-2}, state="running", curve=running))
    assert bool(_optuna_prunes(curves, running)) is expected
    assert st.to_prune(spec, trials) == ([2] if expected else [])


def test_no_pruning_before_enough_trials_finished():
    spec = spec_of(PRUNED)
    trials = [st.Trial(0, {"training.learningRate": 1e-4}, state="complete", objective=1.0, curve={2: 1.0}),
              st.Trial(1, {"training.learningRate": 1e-2}, state="running", curve={2: 9.0})]
    assert st.to_prune(spec, trials) == []


def test_best_ignores_pruned_and_failed_trials_and_follows_the_direction():
    spec = spec_of(PRUNED)
    trials = [st.Trial(0, {}, state="complete", objective=1.2), st.Trial(1, {}, state="pruned", objective=0.1),
              st.Trial(2, {}, state="failed"), st.Trial(3, {}, state="complete", objective=0.9)]
    assert st.best(spec, trials).number == 3
    maximize = spec_of(sweep(optimize={"metric": "evalLoss", "direction": "maximize"}))
    assert st.best(maximize, trials).number == 0
    assert TrialState.PRUNED in {t.state for t in st.rebuild(spec, trials).trials}


# --------------------------------------------------------------------------- the objective


def test_a_task_metric_is_asked_of_each_trial_on_the_validation_rows_and_read_from_there():
    from kubetune_operator.api.manifest import parse_document
    from kubetune_operator.api.sweep import FineTuneSweep
    from kubetune_operator.builders.trial import build_trial
    from kubetune_operator.api import sweep_objective as objective

    doc = sweep(optimize={"metric": "exactMatch"})
    doc["metadata"]["namespace"] = "ns"
    spec = spec_of(doc)
    assert st.direction(spec) == "maximize"  # the registry's direction: exact match is better higher
    trial = build_trial(FineTuneSweep.model_validate(doc), 0, {"training.learningRate": 1e-4}, {})
    assert trial["spec"]["evaluation"]["validationMetrics"] == ["exactMatch"]
    assert parse_document(trial).problems == [], "the trial with the added metric is a valid FineTuneJob"
    status = {"phase": "Succeeded", "metrics": {"evalLoss": 1.5},
              "evaluation": {"validation": {"exactMatch": 0.625},
                             "metrics": {"exactMatch": {"base": 0.0, "tuned": 0.5}, "testLoss": {"base": 3.0, "tuned": 1.1},
                                         "evalLoss": {"base": 3.1, "tuned": 1.5}}}}
    assert objective.value(status, "exactMatch") == 0.625  # validation rows, not the test rows' 0.5
    assert objective.value(status, "evalLoss") == 1.5
    assert objective.test_metrics(status) == {"exactMatch": 0.5, "testLoss": 1.1}  # test split only: evalLoss is validation


def test_evalloss_trials_are_not_asked_for_more():
    from kubetune_operator.api.sweep_objective import ask_for

    assert ask_for({"evaluation": {"validationMetrics": ["mae"]}}, "evalLoss") == {"evaluation": {"validationMetrics": ["mae"]}}
    assert ask_for({"evaluation": {"validationMetrics": ["mae"]}}, "mae") == {"evaluation": {"validationMetrics": ["mae"]}}
    assert ask_for({}, "rmse") == {"evaluation": {"validationMetrics": ["rmse"]}}


def test_the_best_trial_carries_its_test_metrics():
    from kubetune_operator.controllers.finetunesweep.progress import best_row

    spec = spec_of(sweep(optimize={"metric": "exactMatch"}))
    trials = [st.Trial(0, {"training.learningRate": 1e-4}, state="complete", objective=0.5),
              st.Trial(1, {"training.learningRate": 1e-3}, state="complete", objective=0.75)]
    bodies = {n: {"metadata": {"name": f"s-t00{n}"}, "status": {"output": {"adapterUri": f"s3://b/{n}"},
                                                                 "evaluation": {"metrics": {"exactMatch": {"tuned": 0.25 * (n + 1)}}}}}
              for n in (0, 1)}
    row = best_row(spec, trials, bodies)
    assert row["name"] == "s-t001" and row["objective"] == 0.75 and row["testMetrics"] == {"exactMatch": 0.5}


# --------------------------------------------------------------------------- where trials write, what they share


def test_trials_of_a_template_with_locations_each_get_their_own_and_share_one_prefix():
    from kubetune_operator.api import parse_job
    from kubetune_operator.api.sweep import FineTuneSweep
    from kubetune_operator.builders.training import trainer_config
    from kubetune_operator.builders.trial import build_trial
    from kubetune_operator.settings import load_settings

    doc = sweep()
    doc["metadata"]["namespace"] = "ns"
    doc["spec"]["template"]["checkpoint"] = {"uri": "s3://bucket-one/runs/ckpt"}
    doc["spec"]["template"]["output"] = {"uri": "s3://bucket-one/runs/out/"}
    sw = FineTuneSweep.model_validate(doc)
    trials = [build_trial(sw, n, {"training.learningRate": 1e-4}, {}) for n in (0, 1)]
    assert [t["spec"]["checkpoint"]["uri"] for t in trials] == ["s3://bucket-one/runs/ckpt/s-t000", "s3://bucket-one/runs/ckpt/s-t001"]
    assert trials[1]["spec"]["output"]["uri"] == "s3://bucket-one/runs/out/s-t001"
    assert doc["spec"]["template"]["checkpoint"]["uri"] == "s3://bucket-one/runs/ckpt", "the template is left as it was"
    settings = load_settings({"KUBETUNE_DEFAULT_BUCKET_URI": "s3://bucket-one/kt"})
    shared = {trainer_config(parse_job(t).job, settings)["shared"]["uri"] for t in trials}
    assert shared == {"s3://bucket-one/runs/ckpt/shared"}, "one prefix for the whole sweep"
    del doc["spec"]["template"]["checkpoint"]
    default = build_trial(FineTuneSweep.model_validate(doc), 2, {"training.learningRate": 1e-4}, {})
    assert trainer_config(parse_job(default).job, settings)["shared"] == {"uri": "s3://bucket-one/kt/ns/s/shared"}


def test_a_job_outside_a_sweep_shares_nothing():
    from kubetune_operator.api import parse_job
    from kubetune_operator.builders.training import trainer_config
    from kubetune_operator.settings import load_settings

    job = {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "j", "namespace": "ns"},
           "spec": copy.deepcopy(TEMPLATE)}
    assert trainer_config(parse_job(job).job, load_settings({"KUBETUNE_DEFAULT_BUCKET_URI": "s3://bucket-one/kt"}))["shared"] is None


def test_validation_metrics_reach_the_trials_status_from_the_trainers_report():
    from kubetune_operator.status.evaluation import evaluation_status

    shown = evaluation_status({"evaluation": {"validation": {"exactMatch": 0.5, "notAMetric": 1.0, "mae": float("nan")}}})
    assert shown["validation"] == {"exactMatch": 0.5}


def test_a_finished_trial_whose_curve_missed_the_running_trials_step_still_prunes_it():
    """The operator samples evaluations once per scrape: a fast trial's curve may
    lack step 4 though it was evaluated there. Its newest value at or before 4 is
    carried, so the median pruner can compare, conservatively for a falling loss."""
    spec = spec_of(sweep(pruning={"startupTrials": 1}, parameters=[{"path": "training.learningRate", "values": [1e-4, 1e-3, 1e-2]}]))
    fast = st.Trial(0, {"training.learningRate": 1e-3}, state="complete", objective=1.0, curve={2: 3.0, 6: 1.5, 10: 1.0})
    slow = st.Trial(1, {"training.learningRate": 1e-4}, state="running", curve={2: 7.0, 4: 7.0})
    assert st.carried(fast.curve, {4}) == {2: 3.0, 4: 3.0, 6: 1.5, 10: 1.0}
    assert st.carried({6: 1.5}, {4}) == {6: 1.5}, "nothing is invented before a trial's first evaluation"
    assert st.to_prune(spec, [fast, slow]) == [1]
    better = st.Trial(1, {"training.learningRate": 1e-4}, state="running", curve={2: 2.0, 4: 2.5})
    assert st.to_prune(spec, [fast, better]) == []


def test_an_operator_with_no_sweep_never_loads_optuna():
    """Optuna (about 20 MB of the operator's memory) is imported by the first sweep
    that asks for a trial or a pruning verdict (`controllers/finetunesweep/act`),
    not when the operator starts with every controller."""
    code = ("import sys, kubetune_operator.handlers, kubetune_operator.controllers.finetunesweep.controller;"
            "loaded = 'optuna' in sys.modules; from kubetune_operator.sweeps import study;"
            "print(loaded, 'optuna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["False", "True"], out.stdout + out.stderr
