"""`kubetune validate job.yaml --dataset FILE`: what the job's spec.evaluation
needs of that file, with the trainer's own checks and words
(`kubetune_contract.evaluation_data`): answers that task metrics can compare,
numbers in every answer for numeric metrics, a testSplit that leaves rows."""

from __future__ import annotations

from kubetune_contract.evaluation_data import answer_problem, test_split_problem
from kubetune_contract.sections import ColumnMapping

from ..api.spec import FineTuneJobSpec
from .dataset_check import DatasetReport, RowCheck


def evaluation_row_check(spec: FineTuneJobSpec, columns: ColumnMapping | None = None) -> RowCheck | None:
    """The answer checks of the file's rows; `columns`: the file's (a source's), default dataset.columns."""
    metrics = [*spec.evaluation.metrics, *spec.evaluation.validation_metrics]
    if not metrics:
        return None
    columns = columns or spec.dataset.columns
    return lambda row, fmt: answer_problem(row, fmt, metrics, columns)


def evaluation_split_problems(spec: FineTuneJobSpec, report: DatasetReport) -> list[str]:
    """File-level problems: a testSplit of this file's usable rows that leaves none."""
    fraction = spec.evaluation.test_split
    if not fraction or report.errors or report.rows == 0:
        return []
    problem = test_split_problem(fraction, report.rows - report.bad_row_count)
    return [problem] if problem else []
