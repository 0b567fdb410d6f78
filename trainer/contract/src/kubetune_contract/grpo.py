"""`spec.grpo` (objective grpo): group-relative policy optimisation with rewards
computed by rules, declared in the spec and combined with weights; no user code
and no reward model. Each reward is one `RewardSpec`; the trainer's
`rewards` module turns them into TRL reward functions named after their type."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from .base import ApiModel, Rule

RewardType = Literal["exactMatch", "numericCloseness", "regex", "lengthPenalty"]
# Rewards scored against each row's reference answer (the prompts format's `answer`).
NEEDS_ANSWER = ("exactMatch", "numericCloseness")


class RewardSpec(ApiModel):
    """One rule-based reward. exactMatch: 1 when the completion (trimmed, case-folded) equals the row's answer, else 0;
    numericCloseness: minus the error of the completion's first number against the answer's, capped at maxError
    (no number: -maxError); regex: 1 when the pattern is found in the completion, else 0; lengthPenalty: minus the
    share by which the completion exceeds maxChars."""

    rules = (
        Rule("grpo.rewards: pattern is required by a regex reward and applies to no other",
             lambda r: (r.pattern is not None) == (r.type == "regex"),
             cel="has(self.pattern) == (self.type == 'regex')"),
        Rule("grpo.rewards: relative and maxError apply only to a numericCloseness reward",
             lambda r: r.type == "numericCloseness" or (not r.relative and r.max_error is None),
             cel="self.type == 'numericCloseness' || ((!has(self.relative) || !self.relative) && !has(self.maxError))"),
        Rule("grpo.rewards: maxChars is required by a lengthPenalty reward and applies to no other",
             lambda r: (r.max_chars is not None) == (r.type == "lengthPenalty"),
             cel="has(self.maxChars) == (self.type == 'lengthPenalty')"),
    )

    type: RewardType = Field(description="exactMatch, numericCloseness, regex or lengthPenalty (see above).")
    weight: float = Field(1.0, gt=0, le=1000, description="Weight in the sum of rewards.")
    pattern: str | None = Field(None, min_length=1, max_length=1024, description="regex: the pattern (Python syntax) the completion should contain.")
    relative: bool = Field(False, description="numericCloseness: the error relative to the answer (|x - y| / |y|) instead of absolute.")
    max_error: float | None = Field(None, gt=0, le=1e12, description="numericCloseness: the error cap (default 100), also the reward of a completion with no number.")
    max_chars: int | None = Field(None, ge=1, le=1_000_000, description="lengthPenalty: completions up to this many characters are not penalised.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"grpo.rewards pattern {pattern!r} does not compile: {exc}") from None
        return pattern

    @property
    def resolved_max_error(self) -> float:
        return self.max_error if self.max_error is not None else 100.0


class GrpoSpec(ApiModel):
    """GRPO settings (objective grpo): sampling and the rewards."""

    num_generations: int = Field(4, ge=2, le=64, description="Completions sampled per prompt; their rewards are compared within the group.")
    max_completion_length: int = Field(64, ge=1, le=32768, description="Tokens generated per completion.")
    temperature: float = Field(1.0, gt=0, le=2, description="Sampling temperature.")
    beta: float = Field(0.0, ge=0, le=10, description="KL penalty towards the reference model (0: none, TRL's default; no reference model is then kept).")
    rewards: list[RewardSpec] = Field(min_length=1, max_length=16, description="The rewards, summed with their weights.")


_OBJECTIVE = "(has(self.objective) ? self.objective : 'sft')"
_BATCH = ("(has(self.training) && has(self.training.batchSize) ? self.training.batchSize : 4) * "
          "(has(self.training) && has(self.training.gradientAccumulationSteps) ? self.training.gradientAccumulationSteps : 4)")

GRPO_NEEDS_REWARDS = Rule(
    "objective grpo needs grpo.rewards: at least one of exactMatch, numericCloseness, regex, lengthPenalty",
    lambda s: s.objective != "grpo" or s.grpo is not None,
    cel=f"{_OBJECTIVE} != 'grpo' || has(self.grpo)",
    field_path=".grpo",
)
GRPO_SETTINGS_NEED_GRPO = Rule(
    "grpo settings apply only to objective grpo",
    lambda s: s.grpo is None or s.objective == "grpo",
    cel=f"!has(self.grpo) || {_OBJECTIVE} == 'grpo'",
    field_path=".grpo",
)
GRPO_BATCH_HOLDS_GROUPS = Rule(
    "objective grpo: training.batchSize times gradientAccumulationSteps must be a multiple of grpo.numGenerations "
    "(each prompt's completions are compared within one batch)",
    lambda s: s.grpo is None or (s.training.batch_size * s.training.gradient_accumulation_steps) % s.grpo.num_generations == 0,
    cel=f"!has(self.grpo) || ({_BATCH}) % (has(self.grpo.numGenerations) ? self.grpo.numGenerations : 4) == 0",
    field_path=".training.batchSize",
)
GRPO_HAS_NO_VALIDATION = Rule(
    "objective grpo is judged by its rewards: dataset.evalUri, dataset.evalSplit and evaluation.metrics do not apply",
    lambda s: s.objective != "grpo" or not (s.dataset.has_eval or s.evaluation.metrics),
    cel=f"{_OBJECTIVE} != 'grpo' || (!has(self.dataset.evalUri) && !has(self.dataset.evalSplit) && "
        "(!has(self.evaluation) || !has(self.evaluation.metrics) || size(self.evaluation.metrics) == 0))",
    field_path=".objective",
)
GRPO_RULES = (GRPO_NEEDS_REWARDS, GRPO_SETTINGS_NEED_GRPO, GRPO_BATCH_HOLDS_GROUPS, GRPO_HAS_NO_VALIDATION)
