"""Held-out preference accuracy (metric `preferenceAccuracy`): the share of
test pairs whose chosen answer the model gives a higher log-probability than
the rejected one, given the prompt. The same number for the base before
training and the tuned model after says whether the preference was learnt.

Pairs come from preference rows as they are; from unpaired (KTO) rows, each
desirable completion of a prompt is paired with each undesirable one of the
same prompt. Sums of token log-probabilities, as DPO compares them; the prompt
and the answer are tokenised apart and joined, as TRL's preference trainers do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Pair:
    prompt: str | list  # a string, or chat messages
    chosen: str | list
    rejected: str | list


def pairs_of(rows: list[dict]) -> list[Pair]:
    if rows and "chosen" in rows[0]:
        return [Pair(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    by_prompt: dict[str, tuple[list, list]] = {}
    for r in rows:
        good, bad = by_prompt.setdefault(json.dumps(r["prompt"], sort_keys=True), ([], []))
        (good if r["label"] else bad).append(r)
    return [Pair(g["prompt"], g["completion"], b["completion"]) for good, bad in by_prompt.values() for g in good for b in bad]


def _ids(tokenizer, prompt, answer) -> tuple[list[int], list[int]]:
    if isinstance(prompt, list):
        head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        whole = tokenizer.apply_chat_template(prompt + answer, tokenize=False)
        tail = whole[len(head):] if whole.startswith(head) else answer[-1]["content"]
        return tokenizer(head, add_special_tokens=False)["input_ids"], tokenizer(tail, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return tokenizer(prompt)["input_ids"], answer_ids


def answer_logprob(model, tokenizer, prompt, answer) -> float:
    """log p(answer | prompt) under the model: the sum over the answer's tokens."""
    import torch

    head, tail = _ids(tokenizer, prompt, answer)
    device = next(model.parameters()).device
    ids = torch.tensor([head + tail], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(head) - 1:-1].float()
    return float(torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(head):, None]).sum())


def preference_accuracy(model, tokenizer, pairs: list[Pair]) -> float | None:
    """The share of pairs ranked right (ties count as wrong); None without pairs."""
    if not pairs:
        return None
    was_training = model.training
    model.eval()
    try:
        right = sum(answer_logprob(model, tokenizer, p.prompt, p.chosen) > answer_logprob(model, tokenizer, p.prompt, p.rejected)
                    for p in pairs)
    finally:
        model.train(was_training)
    return right / len(pairs)
