"""How many rows the evaluation generates for at once: as many as
GENERATION_TOKENS prompt-and-answer tokens hold, never fewer than the training batch."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

from kubetune_trainer.evaluation import generation  # noqa: E402
from kubetune_trainer.testing.tiny_model import make_tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return make_tiny_tokenizer(corpus=["what is the code for kaka", "short"])


def test_rows_fill_the_token_budget_at_the_longest_prompt(tok):
    prompts = ["short", "what is the code for kaka"]
    longest = max(len(tok(p)["input_ids"]) for p in prompts)
    assert generation.rows_per_batch(tok, prompts, 16, batch_size=8) == generation.GENERATION_TOKENS // (longest + 16)


def test_never_fewer_rows_than_the_training_batch(tok):
    assert generation.rows_per_batch(tok, ["short"], 4000, batch_size=8) == 8
    assert generation.rows_per_batch(tok, [], 16, batch_size=8) == 8


def test_wide_left_padded_batches_answer_as_one_row_at_a_time(tmp_path, monkeypatch):
    """A random-init Llama (real attention and KV cache): prompts of different
    lengths generated in one wide batch give the same answers, and the same
    top-k numbers, as each prompt alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kubetune_contract.evaluation_spec import GenerationSpec, NumericSpec
    from kubetune_trainer.testing.tiny_model import make_tiny_model

    directory = make_tiny_model(tmp_path / "tiny", corpus=[f"price of item {n}: {n * 7}" for n in range(200)], split_digits=True)
    tok, model = AutoTokenizer.from_pretrained(directory), AutoModelForCausalLM.from_pretrained(directory)
    prompts = ["price of item 3:", "price", "price of item 12: 84, price of item 13:", "item 7", "price of item"]
    read = {"generation": GenerationSpec(max_new_tokens=6), "numeric_spec": NumericSpec(top_k=3), "batch_size": 1, "seed": 0}
    assert generation.rows_per_batch(tok, prompts, 6, batch_size=1) >= len(prompts), "premise: one batch holds them all"
    wide = generation.generate_answers(model, tok, prompts, **read)
    monkeypatch.setattr(generation, "GENERATION_TOKENS", 0)  # one row per batch (the training batch)
    alone = generation.generate_answers(model, tok, prompts, **read)
    assert wide.texts == alone.texts
    assert any(n is not None for n in alone.numbers), "premise: some answers hold a number"
    assert wide.numbers == [pytest.approx(n, rel=1e-4) if n is not None else None for n in alone.numbers]
