"""Task metrics by generation on held-out rows: exact match, token F1, numeric MAE.

Eval loss/perplexity come from the Trainer; these answer "does it give the
right answer". For numeric answers, `numeric_top_k > 1` averages the top-k
next-token candidates that parse as numbers, weighted by probability (the
price-model decoding), which beats greedy decoding on regression-like tasks.
"""

from __future__ import annotations

import math
import re
from collections import Counter

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def normalise(text: str) -> str:
    return " ".join(text.strip().lower().split())


def token_f1(pred: str, gold: str) -> float:
    p, g = normalise(pred).split(), normalise(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def first_number(text: str) -> float | None:
    m = NUMBER.search(text)
    return float(m.group()) if m else None


def weighted_topk_number(logits, tokenizer, k: int) -> float | None:
    """Probability-weighted mean of the top-k next tokens that are numbers."""
    import torch

    probs = torch.softmax(logits.float(), dim=-1)
    top = torch.topk(probs, k)
    total, weight = 0.0, 0.0
    for p, idx in zip(top.values.tolist(), top.indices.tolist()):
        value = first_number(tokenizer.decode([idx]))
        if value is not None:
            total += p * value
            weight += p
    return total / weight if weight > 0 else None


def task_metrics(model, tokenizer, pairs: list[tuple[str, str]], *, max_new_tokens: int = 32, numeric_top_k: int = 1) -> dict:
    import torch

    if not pairs:
        return {}
    was_training = model.training
    model.eval()
    em = f1 = 0.0
    abs_err: list[float] = []
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for prompt, gold in pairs:
                enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=True).to(device)
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id, output_scores=numeric_top_k > 1, return_dict_in_generate=True)
                text = tokenizer.decode(out.sequences[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                em += float(normalise(text) == normalise(gold))
                f1 += token_f1(text, gold)
                gold_num = first_number(gold)
                if gold_num is not None:
                    pred = None
                    if numeric_top_k > 1:
                        # the first generated position whose top candidate is a number
                        for scores in out.scores:
                            if first_number(tokenizer.decode([int(scores[0].argmax())])) is not None:
                                pred = weighted_topk_number(scores[0], tokenizer, numeric_top_k)
                                break
                    if pred is None:
                        pred = first_number(text)
                    abs_err.append(abs(pred - gold_num) if pred is not None else math.nan)
    finally:
        model.train(was_training)
    n = len(pairs)
    out = {"exactMatch": em / n, "tokenF1": f1 / n, "samples": n}
    finite = [e for e in abs_err if math.isfinite(e)]
    if abs_err:
        out["numericMAE"] = sum(finite) / len(finite) if finite else None
        out["numericUnparsed"] = len(abs_err) - len(finite)
    return out
