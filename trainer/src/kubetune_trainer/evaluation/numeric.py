"""Reading a number from a language model as a probability-weighted answer.

Greedy decoding reads one number; a model that is unsure between 140 and 160
is better summarised by their weighted mean. At the answer position (where
the greedy answer's first number starts), the k most probable tokens that can
start a number are each extended greedily until the number ends, so a number
spanning several tokens ("1", "4", "7") is read whole, at its real scale. Each
candidate is weighted by the product of the probabilities of the tokens that
make up its number; the weights are renormalised over the candidates.

All rows of a generation batch are read together. Each row's prefix (prompt
and answer up to the answer position) is the start of what generation already
ran, so its KV cache and the next-token probabilities after it are taken from
generation (`Prefilled`: the cache's later positions are masked out); without
them (a cache that drops past states) one forward over the prefixes makes
them. The k branches of each row share that cache (copied per branch, not
recomputed), with one single-token forward per extension step over every
candidate. Every rank of a ZeRO-3 run given the same rows does the same
forwards in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from kubetune_contract.answers import NUMBER, NUMBER_PREFIX, NUMBER_START, first_number


@dataclass
class Candidate:
    row: int  # which prompt of the batch it answers
    tokens: list[int]  # from the answer position on
    probability: float  # product of its number's tokens' probabilities
    open: bool = True  # still growing


def number_start_ids(tokenizer) -> list[int]:
    """Ids of the tokens whose text can start a number (special tokens excluded)."""
    return list(_number_start_ids(tokenizer))


@lru_cache(maxsize=8)
def _number_start_ids(tokenizer) -> tuple[int, ...]:
    special = set(tokenizer.all_special_ids)
    return tuple(i for i in range(len(tokenizer)) if i not in special and NUMBER_START.match(tokenizer.decode([i])))


def number_chars(text: str) -> int:
    """How many characters at the start of `text` are its number (leading spaces included)."""
    stripped = len(text) - len(text.lstrip())
    match = NUMBER.match(text, stripped)
    return match.end() if match else stripped


@dataclass
class _Prefixes:
    """Where the branches start: the next-token probabilities after each prefix,
    and a KV cache whose row `rows[i]` holds prefix i, with its attention mask
    and next position per cache row."""
    probs: Any  # [prefixes, vocabulary]
    cache: Any
    mask: Any  # [cache rows, cached positions]
    next_position: Any  # [cache rows]
    rows: list[int]


def _prefix_forward(model, sequences: Sequence[Sequence[int]], pad_id: int) -> _Prefixes:
    """One forward over the sequences, left-padded into one batch."""
    import torch

    device = next(model.parameters()).device
    width = max(len(s) for s in sequences)
    ids = torch.tensor([[pad_id] * (width - len(s)) + list(s) for s in sequences], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    lengths = torch.tensor([len(s) for s in sequences], device=device)
    return _Prefixes(torch.softmax(out.logits[:, -1, :].float(), dim=-1), out.past_key_values, mask, lengths, list(range(len(sequences))))


# The most logits (vocabulary x rows x generated tokens) generation keeps for
# the decoder, 256 MB in float32: beyond it, one forward over the prefixes is
# the cheaper way to have them (long answers over a large vocabulary).
PREFILLED_LOGITS = 2**26


@dataclass
class Prefilled:
    """What generation computed for a batch, kept for the decoder: the KV cache
    (every row's prompt, left-padded to one width, then its answer but the last
    token) and each step's raw logits (step j: after the answer's first j tokens)."""
    cache: Any
    logits: Sequence[Any]  # one [batch, vocabulary] tensor per generated step
    prompt_mask: Any  # [batch, width]

    @staticmethod
    def fits(rows: int, vocabulary: int, max_new_tokens: int) -> bool:
        return rows * vocabulary * max_new_tokens <= PREFILLED_LOGITS

    @classmethod
    def of(cls, output, prompt_mask) -> Prefilled | None:
        """From `generate`'s output (return_dict_in_generate, output_logits); None
        where a prefix may not be in the cache whole (a layer keeping a sliding window)."""
        cache, logits = getattr(output, "past_key_values", None), getattr(output, "logits", None)
        if cache is None or not logits or not getattr(cache, "is_croppable", False):
            return None
        if cache.get_seq_length() != prompt_mask.shape[1] + len(logits) - 1:
            return None
        return cls(cache, logits, prompt_mask)

    def prefixes(self, rows: list[int], positions: list[int]) -> _Prefixes:
        """Row rows[i]'s prompt and its answer's first positions[i] tokens: the
        cache's later positions masked out, the next token placed after them."""
        import torch

        device = self.prompt_mask.device
        answered = self.cache.get_seq_length() - self.prompt_mask.shape[1]
        upto = torch.zeros(self.prompt_mask.shape[0], dtype=torch.long, device=device)
        upto[torch.tensor(rows, device=device)] = torch.tensor(positions, device=device)
        answer_mask = (torch.arange(answered, device=device)[None, :] < upto[:, None]).to(self.prompt_mask.dtype)
        mask = torch.cat([self.prompt_mask, answer_mask], dim=1)
        logits = torch.stack([self.logits[p][r] for r, p in zip(rows, positions)])
        return _Prefixes(torch.softmax(logits.float(), dim=-1), self.cache, mask, self.prompt_mask.sum(-1) + upto, rows)


def _first_tokens(probs, starts: list[int], k: int) -> list[list[tuple[int, float]]]:
    import torch

    allowed = torch.tensor(starts, device=probs.device)
    top = torch.topk(probs[:, allowed], min(k, len(starts)), dim=-1)
    return [[(int(allowed[i]), float(p)) for p, i in zip(values, indices)] for values, indices in zip(top.values, top.indices)]


class _Branches:
    """Every candidate's sequence as a KV cache: its row's prefix cache, copied
    once per candidate, then one token a step."""

    def __init__(self, start: _Prefixes, prefixes: list[int]):
        import torch

        index = torch.tensor([start.rows[i] for i in prefixes], device=start.mask.device)
        start.cache.reorder_cache(index)  # index_select along the batch: a row's cache repeated for each of its branches
        self.cache, self.mask, self.next_position = start.cache, start.mask[index], start.next_position[index]

    def step(self, model, last_tokens: list[int]):
        """Next-token probabilities after each candidate's newest token."""
        import torch

        ids = torch.tensor(last_tokens, device=self.mask.device)[:, None]
        self.mask = torch.cat([self.mask, torch.ones_like(ids)], dim=1)
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=self.mask, position_ids=self.next_position[:, None],
                        past_key_values=self.cache, use_cache=True)
        self.cache, self.next_position = out.past_key_values, self.next_position + 1
        return torch.softmax(out.logits[:, -1, :].float(), dim=-1)


def _grow(model, tokenizer, branches: _Branches, found: list[Candidate]) -> None:
    """One greedy token for every open candidate (one batch; closed ones ride along unread)."""
    top_p, top_i = branches.step(model, [c.tokens[-1] for c in found]).max(dim=-1)
    for c, token, p in zip(found, top_i.tolist(), top_p.tolist()):
        if not c.open:
            continue
        if token == tokenizer.eos_token_id:
            c.open = False
            continue
        before = number_chars(tokenizer.decode(c.tokens))
        c.tokens.append(token)
        text = tokenizer.decode(c.tokens)
        if number_chars(text) > before:
            c.probability *= p  # the token carries digits of the number
        c.open = NUMBER_PREFIX.fullmatch(text) is not None


def candidates(model, tokenizer, prefixes: list[list[int]], *, k: int, max_tokens: int,
               start: _Prefixes | None = None) -> list[list[Candidate]]:
    """Per prefix (token ids ending at an answer position): its k most probable
    numbers, each read whole. `start`: the prefixes as generation left them
    (consumed: its cache is reordered); without it, one forward makes them."""
    starts = number_start_ids(tokenizer)
    if not starts or not prefixes:
        return [[] for _ in prefixes]
    start = start or _prefix_forward(model, prefixes, tokenizer.pad_token_id)
    found = [Candidate(row, [token], p) for row, tops in enumerate(_first_tokens(start.probs, starts, k)) for token, p in tops]
    for c in found:
        c.open = NUMBER_PREFIX.fullmatch(tokenizer.decode(c.tokens)) is not None
    if max_tokens > 1 and any(c.open for c in found):
        branches = _Branches(start, [c.row for c in found])
        for _ in range(max_tokens - 1):
            if not any(c.open for c in found):
                break
            _grow(model, tokenizer, branches, found)
    return [[c for c in found if c.row == row] for row in range(len(prefixes))]


def value_of(tokenizer, c: Candidate) -> float | None:
    text = tokenizer.decode(c.tokens)
    return first_number(text[: number_chars(text)])


def weighted_value(values_and_weights: Sequence[tuple[float | None, float]]) -> float | None:
    """The probability-weighted mean of the candidates' numbers, renormalised over those that are numbers."""
    usable = [(v, w) for v, w in values_and_weights if v is not None and w > 0]
    total = sum(w for _, w in usable)
    return sum(v * w for v, w in usable) / total if total else None


def answer_position(tokenizer, generated: Sequence[int]) -> int | None:
    """Index of the generated token where the answer's first number starts, or None."""
    for j in range(len(generated)):
        if NUMBER.search(tokenizer.decode(list(generated[: j + 1]), skip_special_tokens=True)):
            return j
    return None


def read_numbers(model, tokenizer, prompts: Sequence[Sequence[int]], generated: Sequence[Sequence[int]], *, k: int,
                 max_tokens: int, prefilled: Prefilled | None = None) -> list[float | None]:
    """Each answer's number: top-k weighted at its position (k > 1), else the greedy one; None without one.
    `prefilled`: what generating `generated` from `prompts` left (consumed)."""
    greedy = [first_number(tokenizer.decode(list(g), skip_special_tokens=True)) for g in generated]
    positions = [answer_position(tokenizer, g) for g in generated]
    rows = [i for i, pos in enumerate(positions) if pos is not None]
    if k <= 1 or not rows:
        return greedy
    prefixes = [list(prompts[i]) + list(generated[i][: positions[i]]) for i in rows]
    start = prefilled.prefixes(rows, [positions[i] for i in rows]) if prefilled is not None else None
    found = candidates(model, tokenizer, prefixes, k=k, max_tokens=max_tokens, start=start)
    out = list(greedy)
    for i, cands in zip(rows, found):
        weighted = weighted_value([(value_of(tokenizer, c), c.probability) for c in cands])
        out[i] = weighted if weighted is not None else greedy[i]
    return out
