"""Scoring answers against references: each metric of the registry
(`kubetune_contract.evaluation_metrics`) that is computed from answers has its
scorer here, and nothing here decides which direction is better.

Text metrics compare answer strings: exact match and token F1 after
normalising case and whitespace (SQuAD-style, without dropping articles or
punctuation: answers here are often codes and numbers), ROUGE-L F1 with
`rouge-score`, corpus BLEU and chrF with `sacrebleu` (0-100, as sacrebleu
reports them). Numeric metrics compare the number read from each answer
(`numbers`) with the reference's; an answer without one has already been
given the training answers' mean by the caller, and the share that had one is
the parse rate.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

from kubetune_contract.evaluation_metrics import metric


def normalise(text: str) -> str:
    return " ".join(text.strip().lower().split())


def exact_match(answers: Sequence[str], references: Sequence[str]) -> float:
    return sum(normalise(a) == normalise(r) for a, r in zip(answers, references)) / len(references)


def _f1(answer: str, reference: str) -> float:
    a, r = normalise(answer).split(), normalise(reference).split()
    if not a or not r:
        return float(a == r)
    common = sum((Counter(a) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def token_f1(answers: Sequence[str], references: Sequence[str]) -> float:
    return sum(_f1(a, r) for a, r in zip(answers, references)) / len(references)


def rouge_l(answers: Sequence[str], references: Sequence[str]) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return sum(scorer.score(r, a)["rougeL"].fmeasure for a, r in zip(answers, references)) / len(references)


def bleu(answers: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(answers), [list(references)]).score)


def chrf(answers: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(answers), [list(references)]).score)


def mae(predicted: Sequence[float], actual: Sequence[float]) -> float:
    return sum(abs(p - y) for p, y in zip(predicted, actual)) / len(actual)


def rmse(predicted: Sequence[float], actual: Sequence[float]) -> float:
    return math.sqrt(sum((p - y) ** 2 for p, y in zip(predicted, actual)) / len(actual))


def mape(predicted: Sequence[float], actual: Sequence[float]) -> float | None:
    """Mean absolute percentage error (%), over the rows whose reference is not 0."""
    pairs = [(p, y) for p, y in zip(predicted, actual) if y != 0]
    if not pairs:
        return None
    return 100 * sum(abs(p - y) / abs(y) for p, y in pairs) / len(pairs)


TEXT_SCORERS: dict[str, Callable[[Sequence[str], Sequence[str]], float]] = {
    "exactMatch": exact_match, "tokenF1": token_f1, "rougeL": rouge_l, "bleu": bleu, "chrF": chrf,
}
NUMERIC_SCORERS: dict[str, Callable[[Sequence[float], Sequence[float]], float | None]] = {
    "mae": mae, "rmse": rmse, "mape": mape,
}


def score(names: Sequence[str], answers: Sequence[str], references: Sequence[str],
          numbers: Sequence[float] | None = None, reference_numbers: Sequence[float] | None = None) -> dict[str, float | None]:
    """{metric: value} for each named metric; numeric ones need `numbers`."""
    out: dict[str, float | None] = {}
    for name in names:
        if metric(name).numeric:
            out[name] = NUMERIC_SCORERS[name](numbers, reference_numbers) if reference_numbers else None
        else:
            out[name] = TEXT_SCORERS[name](answers, references) if references else None
    return out
