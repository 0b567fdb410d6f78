"""Every answer metric against values computed by hand, and the registry that
says which direction is better (nothing else decides it)."""

from __future__ import annotations

import math

import pytest

from kubetune_contract import evaluation_metrics as reg
from kubetune_trainer.evaluation import scoring


def test_exact_match_normalises_case_and_whitespace_only():
    assert scoring.exact_match([" Dopa ", "xe pa", "Qi."], ["dopa", "xe  pa", "qi"]) == pytest.approx(2 / 3)


def test_token_f1_by_hand():
    # "the cat sat" vs "the cat": common 2; precision 2/3, recall 2/2 -> F1 0.8; second row: nothing in common.
    assert scoring.token_f1(["the cat sat", "dog"], ["the cat", "cat"]) == pytest.approx((0.8 + 0.0) / 2)
    assert scoring.token_f1([""], [""]) == 1.0


def test_rouge_l_by_hand():
    # LCS of "a b c d" and "a c d e" is "a c d" (3): P = R = 3/4, F = 0.75.
    assert scoring.rouge_l(["a b c d"], ["a c d e"]) == pytest.approx(0.75)


def test_bleu_and_chrf_are_sacrebleus_corpus_scores():
    assert scoring.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert scoring.bleu(["completely different words here"], ["the cat sat on the mat"]) == pytest.approx(0.0)
    # chrF: identical strings score 100, disjoint character n-grams 0.
    assert scoring.chrf(["abcdef"], ["abcdef"]) == pytest.approx(100.0)
    assert scoring.chrf(["zzzz"], ["abcd"]) == pytest.approx(0.0)
    half = scoring.chrf(["the cat"], ["the cat sat on the mat"])
    assert 0 < half < 100


def test_numeric_metrics_by_hand():
    predicted, actual = [110.0, 90.0, 50.0], [100.0, 100.0, 40.0]
    assert scoring.mae(predicted, actual) == pytest.approx((10 + 10 + 10) / 3)
    assert scoring.rmse(predicted, actual) == pytest.approx(10.0)
    assert scoring.mape(predicted, actual) == pytest.approx(100 * (0.1 + 0.1 + 0.25) / 3)
    # A zero reference has no percentage error: left out, not divided by.
    assert scoring.mape([5.0, 110.0], [0.0, 100.0]) == pytest.approx(10.0)
    assert scoring.mape([5.0], [0.0]) is None


def test_score_routes_each_metric_to_its_inputs():
    out = scoring.score(["mae", "exactMatch"], ["12", "x"], ["12", "y"], [12.0, 20.0], [12.0, 10.0])
    assert out == {"mae": pytest.approx(5.0), "exactMatch": pytest.approx(0.5)}


def test_every_selectable_metric_has_a_scorer():
    # preferenceAccuracy ranks log-probabilities (evaluation.preference), not answers.
    assert set(reg.SELECTABLE) == set(scoring.TEXT_SCORERS) | set(scoring.NUMERIC_SCORERS) | set(reg.PREFERENCE)
    assert set(reg.NUMERIC) == set(scoring.NUMERIC_SCORERS)


@pytest.mark.parametrize("name, higher", [("exactMatch", True), ("tokenF1", True), ("rougeL", True), ("bleu", True), ("chrF", True),
                                          ("mae", False), ("rmse", False), ("mape", False), ("evalLoss", False),
                                          ("testLoss", False), ("perplexity", False)])
def test_direction_and_split_are_declared_once(name, higher):
    m = reg.metric(name)
    assert m.higher_is_better is higher
    assert m.split == ("validation" if name == "evalLoss" else "test")
    assert reg.is_better(name, 2.0, 1.0) is higher and reg.is_better(name, 1.0, 2.0) is not higher


def test_improvement_is_a_fraction_in_the_good_direction():
    assert reg.improvement("mae", 146.0, 47.1) == pytest.approx((146 - 47.1) / 146)  # lower is better: 68% better
    assert reg.improvement("exactMatch", 0.5, 0.25) == pytest.approx(-0.5)  # higher is better: 50% worse
    assert reg.improvement("mae", 0.0, 3.0) is None and reg.improvement("mae", None, 3.0) is None
    assert reg.is_better("mae", 3.0, math.inf) and not reg.is_better("mae", math.nan, 3.0)


def test_printer_column_text():
    assert reg.summary("mae", 47.1234, 146.2) == "MAE 47.1 (base 146)"
    assert reg.summary("exactMatch", 0.625, None) == "EM 62.5%"
    assert reg.summary("mape", 12.34, 80.0) == "MAPE 12.3% (base 80%)"
    assert reg.format_value("perplexity", 6990.7) == "6,991" and reg.format_value("mae", None) == "n/a"


def test_primary_metric_is_the_first_listed_else_a_loss():
    assert reg.primary_metric(["rmse", "mae"], has_test=True, has_validation=True) == "rmse"
    assert reg.primary_metric([], has_test=True, has_validation=True) == "testLoss"
    assert reg.primary_metric([], has_test=False, has_validation=True) == "evalLoss"
    assert reg.primary_metric([], has_test=False, has_validation=False) is None
