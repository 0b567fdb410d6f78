"""The held-out test set (`evaluation.testUri` / `testSplit`) and the answer
checks the evaluation needs, as part of `data.prepare`'s pre-flight: a bad
row is refused before the first training step, with its file and line.

The test rows are drawn before the validation split, from a different shuffle,
so a row is in at most one of train, validation and test; early stopping and
the best checkpoint read validation only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kubetune_contract.evaluation_data import answer_problem, test_split_problem
from kubetune_contract.formats import FORMATS, columns_of
from kubetune_contract.sections import ColumnMapping, DatasetSpec, EvaluationSpec

from .read import _blank, check_columns, check_rows, load_table, normalise, split
from ..errors import InvalidDataset
from ..storage import local_path

def _row_location(uri: str, index: int, cache_dir: Path) -> str:
    """`uri:line` for the index-th row of a JSONL file (blank lines skipped, as
    the loader does), `uri: row N` otherwise."""
    if uri.lower().endswith(".jsonl"):
        local = local_path(uri) if uri.startswith(("file://", "pvc://")) else cache_dir / hashlib.sha1(uri.encode()).hexdigest()[:16]
        if local.is_dir():  # an s3 object lands in its own cache directory
            local = next(iter(sorted(local.rglob("*.jsonl"))), local)
        if local.is_file():
            seen = 0
            with local.open(encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if line.strip():
                        if seen == index:
                            return f"{uri}:{lineno}"
                        seen += 1
    return f"{uri}: row {index + 1}"


def check_answers(ds, fmt: str, columns: ColumnMapping | None, evaluation: EvaluationSpec, source: str, cache_dir: Path) -> None:
    """Every usable row's answer can be scored by evaluation.metrics and
    .validationMetrics (kubetune_contract.evaluation_data)."""
    scored = [*evaluation.metrics, *evaluation.validation_metrics]
    if not scored:
        return
    m = columns_of(fmt, columns)
    for i, row in enumerate(ds):
        if any(_blank(row.get(m[f])) for f in FORMATS[fmt].required):
            continue  # dropped as blank anyway
        problem = answer_problem(row, fmt, scored, columns)
        if problem:
            raise InvalidDataset(f"{_row_location(source, i, cache_dir)}: {problem}")


def hold_out_test(rows: list[dict], fraction: float, seed: int, source: str) -> tuple[list[dict], list[dict]]:
    """(the rest, the test rows): `fraction` of the rows, deterministic by seed
    and drawn apart from the validation split, which is taken from the rest."""
    problem = test_split_problem(fraction, len(rows))
    if problem:
        raise InvalidDataset(f"{source}: {problem}")
    return split(rows, fraction, seed + 1_000_003)


def test_rows(evaluation: EvaluationSpec | None, rows: list[dict], fmt: str, cfg: DatasetSpec, use_messages: bool, seed: int,
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


def seen_in_training(train: list[dict], test: list[dict]) -> int:
    """Test rows whose prompt is also a training row's: not really held out."""
    key = lambda r: json.dumps(r.get("prompt", r.get("messages", [])[:-1] if "messages" in r else r.get("text")), sort_keys=True)
    prompts = {key(r) for r in train}
    return sum(key(r) in prompts for r in test)
