"""`FineTuneSweep` (`kubetune.io/v1alpha1`, short name `fts`): many FineTuneJobs
from one template, their hyper-parameters chosen by Optuna, the best one named.

The CRD is generated from these models like the FineTuneJob's; rules the API
server can check are `Rule`s (CEL + Python, one message). What needs the
template itself (a path's type and bounds, a metric the template does not
evaluate) is checked in Python by `kubetune validate` and by the operator
before any trial exists (`sweep.search_space`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kubetune_contract.base import ApiModel, Rule

from .job import ObjectMeta
from .schema import model_schema
from .spec import FineTuneJobSpec, immutable
from .status import Condition

SWEEP_KIND = "FineTuneSweep"
SWEEP_PLURAL = "finetunesweeps"
SWEEP_SINGULAR = "finetunesweep"
SWEEP_SHORT_NAMES = ["fts"]
# What a sweep may vary: the hyper-parameters, not where the job runs or what it
# serves. Dataset fields other than these would change the validation rows the
# trials are compared on.
_SEARCHABLE_PREFIXES = ("training.", "lora.", "quantization.")
_SEARCHABLE_EXTRA = ("method", "dataset.maxSeqLength", "dataset.packing")
_NOT_SEARCHABLE = ("training.evalEverySteps", "training.logEverySteps")


def _leaves(schema: dict, path: str = ""):
    for name, sub in schema.get("properties", {}).items():
        here = f"{path}.{name}" if path else name
        if "properties" in sub:
            yield from _leaves(sub, here)
        elif sub.get("type") in ("number", "integer", "boolean") or "enum" in sub:
            yield here, sub


SEARCHABLE: dict[str, dict] = {
    path: schema for path, schema in _leaves(model_schema(FineTuneJobSpec))
    if (path.startswith(_SEARCHABLE_PREFIXES) or path in _SEARCHABLE_EXTRA) and path not in _NOT_SEARCHABLE
}
SearchablePath = Literal[tuple(SEARCHABLE)]  # type: ignore[valid-type]


class SweepParameter(ApiModel):
    """One dimension of the search space: a path into the template and where its values come from."""

    rules = (
        Rule("give exactly one of values, choices, or min and max",
             lambda p: [p.values is not None, p.choices is not None, p.min is not None or p.max is not None].count(True) == 1
             and (p.min is None) == (p.max is None),
             cel="[has(self.values), has(self.choices), has(self.min) || has(self.max)].filter(x, x).size() == 1"
                 " && has(self.min) == has(self.max)"),
        Rule("min must be less than max", lambda p: p.min is None or p.max is None or p.min < p.max,
             cel="!has(self.min) || !has(self.max) || self.min < self.max", field_path=".min"),
        Rule("scale log needs min > 0", lambda p: p.scale != "log" or p.min is None or p.min > 0,
             cel="self.scale != 'log' || !has(self.min) || self.min > 0.0", field_path=".scale"),
        Rule("step and scale apply only to a range (min, max)",
             lambda p: p.min is not None or (p.step is None and p.scale == "linear"),
             cel="has(self.min) || (!has(self.step) && self.scale == 'linear')"),
        Rule("step needs scale linear", lambda p: p.step is None or p.scale == "linear",
             cel="!has(self.step) || self.scale == 'linear'", field_path=".step"),
        Rule("multipleOf applies to numbers (values or a range), not choices",
             lambda p: p.multiple_of is None or p.choices is None,
             cel="!has(self.multipleOf) || !has(self.choices)", field_path=".multipleOf"),
        Rule("multipleOf must name another path", lambda p: p.multiple_of != p.path,
             cel="!has(self.multipleOf) || self.multipleOf != self.path", field_path=".multipleOf"),
    )

    path: SearchablePath = Field(description="The template field to vary, e.g. training.learningRate, lora.r.")
    values: list[float] | None = Field(None, min_length=1, max_length=64, description="Numbers to try (grid: each of them).")
    choices: list[str] | None = Field(None, min_length=1, max_length=64, description="Words to try, for fields that take one (training.lrScheduler; true/false for switches).")
    min: float | None = Field(None, description="Lower bound of a range (inclusive).")
    max: float | None = Field(None, description="Upper bound of a range (inclusive).")
    scale: Literal["linear", "log"] = Field("linear", description="How a range is sampled: log for learning rates.")
    step: float | None = Field(None, gt=0, description="Spacing of a linear range's values; grid needs it for a range.")
    multiple_of: SearchablePath | None = Field(None, description="The value is this many times another field's value: lora.alpha with multipleOf lora.r and values [1, 2] tries alpha = r and 2r.")


class SweepAlgorithm(ApiModel):
    """How Optuna picks the next trial's parameters."""

    rules = (
        Rule("startupTrials applies only to type tpe", lambda a: a.startup_trials is None or a.type == "tpe",
             cel="!has(self.startupTrials) || self.type == 'tpe'", field_path=".startupTrials"),
    )

    type: Literal["grid", "random", "tpe"] = Field("tpe", description="grid: every combination; random; tpe: Bayesian (Optuna's TPE), random for its first startupTrials.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the sampler (the same sweep suggests the same trials).")
    startup_trials: int | None = Field(None, ge=1, le=1000, description="tpe: random trials before TPE takes over (default: a third of maxTrials, at least 1, at most 10; Optuna's own 10 would make a small sweep random).")


class SweepOptimize(ApiModel):
    """What a trial is judged by: on the validation rows, so the test rows stay held out."""

    metric: str = Field("evalLoss", min_length=1, max_length=64, pattern=r"^[a-z][A-Za-z0-9]*$",
                        description="evalLoss, or a task metric (exactMatch, tokenF1, rougeL, bleu, chrF, mae, rmse, mape) scored on the validation rows (each trial gets it in evaluation.validationMetrics); test-set metrics are refused, the test rows stay held out.")
    direction: Literal["minimize", "maximize"] | None = Field(None, description="Default: the metric's own (lower is better for losses and errors, higher for scores).")


class SweepPruning(ApiModel):
    """Stop trials clearly worse than the median of earlier trials at the same step (Optuna's median pruner)."""

    startup_trials: int = Field(2, ge=0, le=1000, description="Trials that must finish before any is pruned.")
    warmup_steps: int = Field(0, ge=0, le=10_000_000, description="Steps before a trial may be pruned.")


class FineTuneSweepSpec(ApiModel):
    """A template FineTuneJob, the search space, and how to search it."""

    rules = (
        Rule("template.serving.enabled must be false: set promote: true to serve the best trial",
             lambda s: not s.template.serving.enabled,
             cel="!has(self.template.serving) || !self.template.serving.enabled", field_path=".template.serving.enabled"),
        Rule("algorithm grid needs values, choices or a step for every parameter",
             lambda s: s.algorithm.type != "grid" or all(p.values or p.choices or p.step for p in s.parameters),
             cel="self.algorithm.type != 'grid' || self.parameters.all(p, has(p.values) || has(p.choices) || has(p.step))",
             field_path=".parameters"),
        Rule("each path may be searched once", lambda s: len({p.path for p in s.parameters}) == len(s.parameters),
             cel="self.parameters.all(p, self.parameters.exists_one(q, q.path == p.path))", field_path=".parameters"),
    )

    template: FineTuneJobSpec = Field(description="The FineTuneJob spec every trial starts from.", json_schema_extra=immutable("template"))
    parameters: list[SweepParameter] = Field(min_length=1, max_length=16, description="The search space.")
    algorithm: SweepAlgorithm = Field(default_factory=SweepAlgorithm, description="Sampler and seed.")
    optimize: SweepOptimize = Field(default_factory=SweepOptimize, description="The metric trials are judged by, and its direction.")
    max_trials: int = Field(10, ge=1, le=1000, description="Trials to run in all.")
    parallelism: int = Field(2, ge=1, le=100, description="Trials running at once.")
    max_failed_trials: int = Field(3, ge=0, le=1000, description="The sweep fails once more trials than this have failed (pruned trials are not failures).")
    pruning: SweepPruning | None = Field(None, description="Stop clearly worse trials early (needs evaluation during training: template.training.evalEverySteps).")
    promote: bool = Field(False, description="Serve the best trial when the sweep ends (the template's serving settings, enabled).")
    suspend: bool = Field(False, description="Suspend every running trial (checkpoints kept); false resumes them.")

    @property
    def startup_trials(self) -> int:
        """TPE's random start-up trials: given, or a third of the sweep (1 to 10)."""
        if self.algorithm.startup_trials is not None:
            return self.algorithm.startup_trials
        return max(1, min(10, self.max_trials // 3))


# --------------------------------------------------------------------------- status

SweepPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]
SWEEP_PHASES: tuple[str, ...] = ("Pending", "Running", "Succeeded", "Failed", "Suspended")


class TrialRecord(ApiModel):
    """One trial as the sweep sees it (its FineTuneJob holds the rest)."""

    number: int = Field(ge=0)
    name: str = Field(max_length=63, description="The trial's FineTuneJob.")
    parameters: dict[str, str] = Field(default_factory=dict, description="The values tried, by path.")
    phase: str | None = Field(None, max_length=32, description="The trial's phase (Invalid: its suggested spec was refused before it was created).")
    objective: float | None = Field(None, description="The optimized metric's final value.")
    pruned: bool = Field(False, description="Stopped early: clearly worse than the median of earlier trials.")
    reason: str | None = Field(None, max_length=128)
    # step -> the optimized metric at that evaluation (what the pruner compares)
    curve: dict[str, float] = Field(default_factory=dict, max_length=48)


class BestTrial(ApiModel):
    number: int = Field(ge=0)
    name: str = Field(max_length=63)
    objective: float
    parameters: dict[str, str] = Field(default_factory=dict)
    output: dict[str, str] = Field(default_factory=dict, description="The best trial's outputs, as its status.output.")
    test_metrics: dict[str, float] | None = Field(None, max_length=32, description="The best trial's tuned model on the held-out test rows (testLoss, perplexity, task metrics): the unbiased estimate, since trials were chosen on the validation rows.")


class TrialCounts(ApiModel):
    created: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    pruned: int = 0


class FineTuneSweepStatus(ApiModel):
    phase: SweepPhase | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    sampler: str | None = Field(None, max_length=256, description="The Optuna sampler and its settings, as used.")
    pruner: str | None = Field(None, max_length=256, description="The Optuna pruner and its settings, as used.")
    trials: list[TrialRecord] = Field(default_factory=list, max_length=1000)
    best: BestTrial | None = None
    counts: TrialCounts | None = None
    summary: str | None = Field(None, max_length=32, description="Trials finished / maxTrials, shown by kubectl get.")
    observed_generation: int | None = None
    start_time: str | None = None
    completion_time: str | None = None


class FineTuneSweep(ApiModel):
    api_version: Literal["kubetune.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["FineTuneSweep"]
    metadata: ObjectMeta
    spec: FineTuneSweepSpec
    status: FineTuneSweepStatus | None = None
