"""The built-in GRPO rewards: what each scores, their names as TRL logs them."""

from __future__ import annotations

import pytest

from kubetune_contract.grpo import RewardSpec
from kubetune_trainer.rewards import reward_functions, reward_names


def score(spec: dict, completions: list, answers: list | None = None) -> list[float]:
    (fn,) = reward_functions([RewardSpec.model_validate(spec)])
    return fn(prompts=[""] * len(completions), completions=completions, answer=answers)


def test_exact_match_trims_and_folds_case():
    assert score({"type": "exactMatch"}, [" Qivu ", "qivu!", "zori"], ["qivu", "qivu", "qivu"]) == [1.0, 0.0, 0.0]


def test_numeric_closeness_is_the_negative_capped_error():
    spec = {"type": "numericCloseness", "maxError": 10}
    assert score(spec, [" 12", "about 7.5", "no number", "100"], ["12", "10", "3", "3"]) == [0.0, -2.5, -10.0, -10.0]
    relative = {"type": "numericCloseness", "relative": True, "maxError": 1}
    assert score(relative, ["110", "0"], ["100", "0"]) == [pytest.approx(-0.1), 0.0]


def test_regex_and_length_penalty():
    assert score({"type": "regex", "pattern": r"^\s*\d+\s*$"}, [" 42", "42 apples"]) == [1.0, 0.0]
    assert score({"type": "lengthPenalty", "maxChars": 4}, ["abcd", "abcdefgh"]) == [0.0, -1.0]
    # A conversational completion is scored on its last message.
    assert score({"type": "regex", "pattern": "ok"}, [[{"role": "assistant", "content": "ok"}]]) == [1.0]


def test_names_are_the_types_numbered_when_repeated():
    specs = [RewardSpec(type="regex", pattern="a"), RewardSpec(type="exactMatch"), RewardSpec(type="regex", pattern="b")]
    assert reward_names(specs) == ["regex1", "exactMatch", "regex2"]
    assert [f.__name__ for f in reward_functions(specs)] == ["regex1", "exactMatch", "regex2"]


@pytest.mark.parametrize("spec, message", [
    ({"type": "regex", "pattern": "(x"}, "grpo.rewards pattern '(x' does not compile"),
    ({"type": "regex"}, "pattern is required by a regex reward"),
    ({"type": "exactMatch", "maxError": 3}, "relative and maxError apply only to a numericCloseness reward"),
    ({"type": "lengthPenalty"}, "maxChars is required by a lengthPenalty reward"),
])
def test_bad_rewards_are_refused(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        RewardSpec.model_validate(spec)
