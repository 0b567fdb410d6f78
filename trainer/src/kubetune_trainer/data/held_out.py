"""Holding out: the validation rows (`evalSplit`, or the `evalUri` file) and the
test set (`evaluation.testUri` / `testSplit`) the evaluation scores, each
checked as the training rows are, before the first training step.

The test rows are drawn before the validation split, from a different shuffle,
so a row is in at most one of train, validation and test; early stopping and
the best checkpoint read validation only.
"""

from __future__ import annotations

import json
from pathlib import Path

from kubetune_contract.evaluation_data import test_split_problem
from kubetune_contract.sections import ColumnMapping, DatasetSpec, EvaluationSpec

from ..errors import InvalidDataset
from .normalise import normalise
from .preflight import check_answers, check_columns, check_rows
from .read import load_table


def split(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic by seed, independent of process count and library versions."""
    import random

    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(rows) * fraction))
    if n_eval >= len(rows):
        raise InvalidDataset(f"evalSplit {fraction} leaves no training rows out of {len(rows)}")
    eval_idx = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in eval_idx], [r for i, r in enumerate(rows) if i in eval_idx]


def hold_out_test(rows: list[dict], fraction: float, seed: int, source: str) -> tuple[list[dict], list[dict]]:
    """(the rest, the test rows): `fraction` of the rows, deterministic by seed
    and drawn apart from the validation split, which is taken from the rest."""
    problem = test_split_problem(fraction, len(rows))
    if problem:
        raise InvalidDataset(f"{source}: {problem}")
    return split(rows, fraction, seed + 1_000_003)


def held_out_test_rows(evaluation: EvaluationSpec | None, rows: list[dict], fmt: str, cfg: DatasetSpec, use_messages: bool, seed: int,
               cache_dir: Path, s3_endpoint, s3_region) -> tuple[list[dict], list[dict]]:
    """(training rows left, test rows)."""
    if evaluation is None or not evaluation.has_test:
        return rows, []
    if evaluation.test_split:
        return hold_out_test(rows, evaluation.test_split, seed, cfg.train_uri)
    uri = evaluation.test_uri
    traw = load_table(uri, cache_dir, s3_endpoint, s3_region)
    if len(traw) == 0:
        raise InvalidDataset(f"{uri}: the test dataset (evaluation.testUri) is empty")
    check_columns(traw.column_names, cfg.columns, fmt, uri)
    check_answers(traw, fmt, cfg.columns, evaluation, uri, cache_dir)
    check_rows(traw, fmt, cfg.columns, uri, cache_dir)
    test, _ = normalise(traw, fmt, cfg.columns, uri, use_messages)
    if not test:
        raise InvalidDataset(f"{uri}: no usable test rows (every row had a blank required field)")
    return rows, test


def held_out_file_rows(uri: str, fmt: str, columns: ColumnMapping | None, use_messages: bool, cache_dir: Path,
                       s3_endpoint=None, s3_region=None) -> list[dict]:
    """A held-out file (evalUri): loaded whole (it is small), checked like the
    training rows, in the training shape."""
    raw = load_table(uri, cache_dir, s3_endpoint, s3_region)
    if len(raw) == 0:
        raise InvalidDataset(f"{uri}: the evaluation dataset is empty")
    check_columns(raw.column_names, columns, fmt, uri)
    check_rows(raw, fmt, columns, uri, cache_dir)
    return normalise(raw, fmt, columns, uri, use_messages, cache_dir)[0]


def seen_in_training(train: list[dict], test: list[dict]) -> int:
    """Test rows whose prompt is also a training row's: not really held out."""
    key = lambda r: json.dumps(r.get("prompt", r.get("messages", [])[:-1] if "messages" in r else r.get("text")), sort_keys=True)
    prompts = {key(r) for r in train}
    return sum(key(r) in prompts for r in test)

