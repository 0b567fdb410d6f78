"""The rule-based rewards of `spec.grpo.rewards` as TRL reward functions:
`f(prompts, completions, answer=..., **columns) -> list[float]`, named after
their type (TRL logs each as `rewards/<name>/mean`; the metrics callback exports
them as `kubetune_trainer_reward{reward="<name>"}`)."""

from __future__ import annotations

from collections.abc import Callable

from kubetune_contract.answers import first_number
from kubetune_contract.grpo import NEEDS_ANSWER, RewardSpec

from .errors import InvalidDataset


def _text(completion) -> str:
    """A completion as text (a conversational one is its last message)."""
    return completion if isinstance(completion, str) else (completion[-1]["content"] if completion else "")


def _score(spec: RewardSpec, text: str, answer) -> float:
    if spec.type == "exactMatch":
        return float(text.strip().casefold() == str(answer).strip().casefold())
    if spec.type == "numericCloseness":
        got, want = first_number(text), first_number(str(answer))
        if got is None or want is None:
            return -spec.resolved_max_error
        error = abs(got - want) / (abs(want) or 1.0) if spec.relative else abs(got - want)
        return -min(error, spec.resolved_max_error)
    if spec.type == "regex":
        import re

        return float(re.search(spec.pattern, text) is not None)
    return -max(0, len(text) - spec.max_chars) / spec.max_chars  # lengthPenalty


def reward_names(specs: list[RewardSpec]) -> list[str]:
    """Each reward's name: its type, numbered when a type is listed twice."""
    types = [s.type for s in specs]
    return [t if types.count(t) == 1 else f"{t}{types[:i].count(t) + 1}" for i, t in enumerate(types)]


def reward_functions(specs: list[RewardSpec]) -> list[Callable]:
    def make(spec: RewardSpec, name: str) -> Callable:
        def reward(prompts, completions, answer=None, **_) -> list[float]:
            answers = answer if answer is not None else [None] * len(completions)
            return [_score(spec, _text(c), a) for c, a in zip(completions, answers)]

        reward.__name__ = name
        return reward

    return [make(spec, name) for spec, name in zip(specs, reward_names(specs))]


def check_answers(rows: list[dict], specs: list[RewardSpec], source: str) -> None:
    """Rewards that compare with the answer need one in every row."""
    needing = [s.type for s in specs if s.type in NEEDS_ANSWER]
    if not needing:
        return
    for i, row in enumerate(rows):
        if row.get("answer") is None or str(row["answer"]).strip() == "":
            raise InvalidDataset(f"{source}: row {i + 1}: reward {needing[0]} compares with the row's answer, and it has none; "
                                 "add an answer column (dataset.columns.answer names yours)")
