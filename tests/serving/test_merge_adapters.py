"""`kubetune merge-adapters`: two adapters trained on different tiny tasks,
merged with `cat` and with `ties`, served by vLLM side by side with their
sources: each merge answers a larger share of both tasks' prompts than
either source does."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.cluster.serving_helpers import complete, models

from .conftest import MERGES, task_prompts

pytestmark = [pytest.mark.slow]


def share(address: str, model: str) -> float:
    prompts = [p for task in task_prompts().values() for p in task]
    with ThreadPoolExecutor(8) as pool:
        answers = pool.map(lambda p: complete(address, model, p[0], max_tokens=4), prompts)
    right = sum(text.strip().split()[:1] == [want] for text, (_, want) in zip(answers, prompts))
    return right / len(prompts)


def test_each_merge_answers_more_of_both_tasks_than_either_source(vllm_server, serving_assets):
    address = vllm_server.url.removeprefix("http://")
    assert models(address) == sorted(["base", "words", "numbers", *MERGES])
    shares = {name: share(address, name) for name in ("base", "words", "numbers", *MERGES)}
    print("share of both tasks' prompts answered:", json.dumps({k: round(v, 3) for k, v in shares.items()}))
    # Each source knows its own task: about half of all prompts, nothing of the other half.
    assert 0.35 <= shares["words"] <= 0.5 and 0.35 <= shares["numbers"] <= 0.5, shares
    assert shares["base"] < 0.1, shares
    for merge in MERGES:
        assert shares[merge] > max(shares["words"], shares["numbers"]), (merge, shares)


def test_the_merged_adapter_carries_a_model_card_of_its_sources_and_weights(serving_assets):
    for merge in MERGES:
        out = serving_assets[merge]
        card = (out / "README.md").read_text()
        assert f"PEFT's `{merge}` combination" in card
        for task in ("words", "numbers"):
            assert f"| file://{serving_assets[task]} | 1 | 8 |" in card, card
        rank = json.loads((out / "adapter_config.json").read_text())["r"]
        assert rank == (16 if merge == "cat" else 8), rank  # cat stacks the ranks; ties keeps one
        assert f"Rank {rank}." in card


def test_bad_merge_arguments_are_refused_naming_what_is_wrong(serving_assets, tmp_path, capsys):
    from kubetune_operator.cli import main

    words, numbers, model = (str(serving_assets[k]) for k in ("words", "numbers", "model"))
    assert main(["merge-adapters", words, "--base", model, "-o", str(tmp_path / "x")]) == 2
    assert "adapters: List should have at least 2 items" in capsys.readouterr().err
    assert main(["merge-adapters", words, numbers, "--base", model, "-o", str(tmp_path / "x"), "--method", "svd"]) == 2
    assert "method: Input should be 'linear', 'cat', 'ties' or 'dare_linear'" in capsys.readouterr().err
    assert main(["merge-adapters", words, numbers, "--base", model, "-o", str(tmp_path / "x"), "--density", "0.3"]) == 2
    assert "density applies only to methods ties and dare_linear" in capsys.readouterr().err
    assert main(["merge-adapters", words, numbers, "--base", model, "-o", str(tmp_path / "x"), "--weights", "1"]) == 2
    assert "--weights: 1 weights for 2 adapters" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
