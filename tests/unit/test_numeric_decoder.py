"""The multi-token top-k numeric decoder, with a tokenizer that splits digits
(so "147" is three tokens) and a stand-in language model: `TableLM`, a
next-token table instead of a network, so every probability is set by hand
and the weighted answer can be computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from kubetune_trainer.evaluation import numeric, scoring
from kubetune_trainer.evaluation.runner import fill_unparsed
from kubetune_trainer.testing.tiny_model import make_tiny_tokenizer

PROMPT = "Price in dollars:"


@pytest.fixture(scope="module")
def tok():
    t = make_tiny_tokenizer(corpus=[f"{PROMPT} {n}, cheap" for n in range(0, 1000, 7)], split_digits=True)
    assert t.tokenize("147") == ["1", "4", "7"]  # the premise: one token per digit
    return t


class TableLM(torch.nn.Module):
    """Stand-in for a causal LM: next-token probabilities looked up by the text
    generated after the prompt (the rest of the vocabulary shares what is left)."""

    def __init__(self, tokenizer, prompt_ids: list[int], table: dict[str, dict[str, float]]):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.tok, self.prompt, self.vocab = tokenizer, prompt_ids, len(tokenizer)
        self.table = {k: {tokenizer.convert_tokens_to_ids(t) if t != "<eos>" else tokenizer.eos_token_id: p for t, p in v.items()}
                      for k, v in table.items()}
        self.calls = 0

    def _row(self, ids: list[int]) -> torch.Tensor:
        ids = [i for i in ids if i != self.tok.pad_token_id]
        assert ids[: len(self.prompt)] == self.prompt, "every sequence continues the prompt"
        given = self.table.get(self.tok.decode(ids[len(self.prompt):]), {})
        rest = (1.0 - sum(given.values())) / (self.vocab - len(given))
        probs = torch.full((self.vocab,), rest)
        for token, p in given.items():
            probs[token] = p
        return probs.log()

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        self.calls += 1
        seen = past_key_values.rows if past_key_values is not None else [[] for _ in input_ids]
        rows = [before + row.tolist() for before, row in zip(seen, input_ids)]
        logits = torch.stack([self._row(row) for row in rows])
        return type("Out", (), {"logits": logits.unsqueeze(1).expand(-1, input_ids.shape[1], -1),
                                "past_key_values": TableCache(rows) if use_cache else None})()


class TableCache:
    """TableLM's "KV cache": the token ids each row has seen, reordered as a Cache is."""

    def __init__(self, rows: list[list[int]]):
        self.rows = rows

    def reorder_cache(self, index) -> None:
        self.rows = [list(self.rows[i]) for i in index.tolist()]


TABLE = {
    # at the answer position: three digits that start numbers, and a word that does not
    "": {"1": 0.5, "2": 0.3, "9": 0.1, "Ġcheap": 0.09},
    "1": {"4": 0.9}, "14": {"7": 0.8}, "147": {"<eos>": 0.9},  # 147, weight 0.5 * 0.9 * 0.8 = 0.36
    "2": {"0": 0.6}, "20": {",": 0.7},                          # 20 then a comma ends it: 0.3 * 0.6 = 0.18
    "9": {"<eos>": 1.0},                                        # 9: 0.1
}
WEIGHTED = (147 * 0.36 + 20 * 0.18 + 9 * 0.1) / (0.36 + 0.18 + 0.1)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_top_k_candidates_are_whole_numbers_weighted_by_their_tokens(tok):
    prompt = _ids(tok, PROMPT)
    lm = TableLM(tok, prompt, TABLE)
    (found,) = numeric.candidates(lm, tok, [prompt], k=3, max_tokens=6)
    read = {numeric.value_of(tok, c): c.probability for c in found}
    # (float32 softmax: equal to about 1e-6)
    assert read == {147.0: pytest.approx(0.36, rel=1e-5), 20.0: pytest.approx(0.18, rel=1e-5), 9.0: pytest.approx(0.1, rel=1e-5)}
    # One forward for the answer position, then one per extension step, all candidates batched
    # (each a single token on the cache of its row's prefix).
    assert lm.calls == 1 + 3


def test_weighted_answer_and_its_mae_by_hand(tok):
    prompt = _ids(tok, PROMPT)
    lm = TableLM(tok, prompt, TABLE)
    greedy = _ids(tok, "147")
    (value,) = numeric.read_numbers(lm, tok, [prompt], [greedy], k=3, max_tokens=6)
    assert value == pytest.approx(WEIGHTED, rel=1e-5)  # 89.72, not 147 nor a single token's "1"
    assert scoring.mae([value], [100.0]) == pytest.approx(100.0 - WEIGHTED, abs=1e-3)  # 10.28
    # k = 1 reads the greedy answer's number as written, whole.
    assert numeric.read_numbers(lm, tok, [prompt], [greedy], k=1, max_tokens=6) == [147.0]


def test_k_larger_than_the_numbers_on_offer_renormalises_over_those_with_weight(tok):
    prompt = _ids(tok, PROMPT)
    only_two = {"": {"4": 0.75, "8": 0.25}, "4": {"<eos>": 1.0}, "8": {"<eos>": 1.0}}  # nothing else is possible
    (value,) = numeric.read_numbers(TableLM(tok, prompt, only_two), tok, [prompt], [_ids(tok, "4")], k=20, max_tokens=4)
    assert value == pytest.approx(4 * 0.75 + 8 * 0.25)


def test_the_answer_position_is_where_the_first_number_starts(tok):
    generated = _ids(tok, " cheap 35")
    position = numeric.answer_position(tok, generated)
    assert tok.decode(generated[:position]) == " cheap " and tok.decode(generated[position:]) == "35"
    assert numeric.answer_position(tok, _ids(tok, " cheap")) is None


def test_rows_of_a_batch_are_read_together_and_a_row_without_a_number_is_none(tok):
    prompt = _ids(tok, PROMPT)
    lm = TableLM(tok, prompt, TABLE)
    values = numeric.read_numbers(lm, tok, [prompt, prompt, prompt], [_ids(tok, "147"), _ids(tok, " cheap"), _ids(tok, "147")],
                                  k=3, max_tokens=6)
    assert values[0] == values[2] == pytest.approx(WEIGHTED, rel=1e-5) and values[1] is None
    assert lm.calls == 1 + 3  # two rows with numbers, one batch


def test_unparsed_answers_score_as_the_training_mean_and_count_in_the_parse_rate():
    filled, rate = fill_unparsed([12.0, None, 30.0, None], fallback=20.0)
    assert filled == [12.0, 20.0, 30.0, 20.0] and rate == 0.5
    # A base model that never answers with a number scores exactly the mean baseline's error.
    actual = [10.0, 30.0]
    never, rate = fill_unparsed([None, None], fallback=20.0)
    assert rate == 0.0 and scoring.mae(never, actual) == scoring.mae([20.0, 20.0], actual) == 10.0
    assert not math.isnan(scoring.rmse(never, actual))


def test_number_start_tokens(tok):
    starts = {tok.decode([i]) for i in numeric.number_start_ids(tok)}
    assert {str(d) for d in range(10)} <= starts
    assert not any(s.strip() and not (s.lstrip()[0].isdigit() or s.strip() == "-") for s in starts)


class Recomputed(torch.nn.Module):
    """A real network read the slow, obviously right way: every call runs each
    row's whole history (no padding, no KV cache) through the model; its
    "cache" is only the token ids each row has seen. The decoder's KV-cache
    path must read the same candidates from the network as this."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        if past_key_values is None:  # the prefixes, left-padded: keep each row's real tokens
            rows = [[t for t, m in zip(ids.tolist(), keep.tolist()) if m] for ids, keep in zip(input_ids, attention_mask)]
        else:
            rows = [before + row.tolist() for before, row in zip(past_key_values.rows, input_ids)]
        with torch.no_grad():
            logits = torch.stack([self.model(input_ids=torch.tensor([r])).logits[0, -1] for r in rows])
        return type("Out", (), {"logits": logits.unsqueeze(1).expand(-1, input_ids.shape[1], -1),
                                "past_key_values": TableCache(rows) if use_cache else None})()


def test_the_kv_cache_path_reads_what_the_network_gives_without_a_cache(tmp_path):
    """A random-init Llama (real attention, rotary positions, left padding):
    the branches continue on their row's prefix cache, and read the same
    numbers with the same probabilities as whole unpadded forwards."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kubetune_trainer.testing.tiny_model import make_tiny_model

    corpus = [f"{PROMPT} {n}, cheap" for n in range(0, 1000, 7)]
    directory = make_tiny_model(tmp_path / "tiny", corpus=corpus, split_digits=True, seed=0)
    tok, model = AutoTokenizer.from_pretrained(directory), AutoModelForCausalLM.from_pretrained(directory).eval()
    # Prefixes of three lengths, so the batch is left-padded.
    prefixes = [_ids(tok, PROMPT), _ids(tok, f"{PROMPT} 35, cheap. {PROMPT}"), _ids(tok, "Price:")]
    cached = numeric.candidates(model, tok, prefixes, k=3, max_tokens=5)
    plain = numeric.candidates(Recomputed(model), tok, prefixes, k=3, max_tokens=5)
    assert any(len(c.tokens) > 2 for row in cached for c in row), "premise: a number grows over several cached steps"
    assert [[c.tokens for c in row] for row in cached] == [[c.tokens for c in row] for row in plain]
    assert [[c.probability for c in row] for row in cached] == [
        [pytest.approx(c.probability, rel=1e-4) for c in row] for row in plain]


def test_generation_left_what_a_forward_over_the_prefixes_would_make(tmp_path):
    """Numbers read on from generation's KV cache and logits (rows of three
    prompt lengths, answer positions 0, 2 and 3, one row without a number)
    are those a fresh forward over each prompt and answer prefix reads: the
    same tokens, the same probabilities, and no forward over the prefixes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kubetune_trainer.evaluation.generation import _left_padded
    from kubetune_trainer.testing.tiny_model import make_tiny_model

    corpus = [f"{PROMPT} {n}, cheap" for n in range(0, 1000, 7)]
    directory = make_tiny_model(tmp_path / "tiny", corpus=corpus, split_digits=True, seed=0)
    tok, model = AutoTokenizer.from_pretrained(directory), AutoModelForCausalLM.from_pretrained(directory).eval()
    prompts = [PROMPT, f"{PROMPT} 35, cheap. {PROMPT}", "Price:", "cheap"]
    encoded, ids, mask = _left_padded(tok, prompts, "cpu")
    with torch.no_grad():
        output = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False, use_cache=True,
                                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                return_dict_in_generate=True, output_logits=True)
    generated = [output.sequences[row, ids.shape[1]:].tolist() for row in range(len(prompts))]
    rows, positions = [0, 1, 2], [0, 2, 3]
    prefixes = [encoded[r] + generated[r][:p] for r, p in zip(rows, positions)]
    fresh = numeric.candidates(model, tok, prefixes, k=3, max_tokens=5)

    prefilled = numeric.Prefilled.of(output, mask)
    assert prefilled is not None, "premise: a Llama's cache keeps every position"
    real_forward = numeric._prefix_forward
    try:
        numeric._prefix_forward = lambda *a, **k: pytest.fail("a forward over the prefixes")
        reused = numeric.candidates(model, tok, prefixes, k=3, max_tokens=5, start=prefilled.prefixes(rows, positions))
    finally:
        numeric._prefix_forward = real_forward
    assert any(len(c.tokens) > 2 for row in fresh for c in row), "premise: a number grows over several cached steps"
    assert [[c.tokens for c in row] for row in reused] == [[c.tokens for c in row] for row in fresh]
    assert [[c.probability for c in row] for row in reused] == [
        [pytest.approx(c.probability, rel=1e-4) for c in row] for row in fresh]


def test_generation_keeps_its_logits_only_within_their_budget():
    assert numeric.Prefilled.fits(rows=40, vocabulary=49152, max_new_tokens=6)  # SmolLM2, the price job
    assert not numeric.Prefilled.fits(rows=60, vocabulary=151936, max_new_tokens=64)  # 2.3 GB of float32 logits
