"""What spec.evaluation needs of the data, checked the same way (and refused
with the same words) by `kubetune validate job.yaml --dataset FILE` and by the
trainer's pre-flight, before the first training step:

- task metrics compare answers: rows must have one (not format text);
- numeric metrics read the number in every answer, training rows included
  (their mean scores a model answer that has no number);
- a testSplit must leave both test rows and training rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from .answers import answer_of, first_number
from .evaluation_metrics import metric
from .sections import ColumnMapping


def answer_problem(row: dict, fmt: str, metrics: Sequence[str], mapping: ColumnMapping | None = None) -> str | None:
    """Why this row's answer cannot be scored by `metrics` (spec.evaluation.metrics), or None."""
    if not metrics:
        return None
    if fmt == "text":
        return (f"evaluation.metrics {', '.join(metrics)} compare answers, but format text has none; "
                "use completion, instruction or chat rows")
    numeric = [m for m in metrics if metric(m).numeric]
    if not numeric:
        return None
    answer = answer_of(row, fmt, mapping)
    if answer is None or first_number(answer) is None:
        shown = answer if answer is None or len(answer) <= 40 else answer[:37] + "..."
        return f"evaluation.metrics {numeric[0]} needs a number in every answer: the answer {shown!r} has none"
    return None


def test_split_problem(fraction: float, rows: int) -> str | None:
    """Why evaluation.testSplit cannot split `rows` usable rows, or None."""
    n_test = round(rows * fraction)
    if n_test == 0:
        least = 1 / max(rows, 1)
        fix = f"raise it to at least {least:.2g}" if least < 0.5 else "add rows"
        return f"evaluation.testSplit {fraction} of {rows} usable rows leaves no test rows; {fix} or set evaluation.testUri"
    if n_test >= rows:
        return f"evaluation.testSplit {fraction} of {rows} usable rows leaves no training rows"
    return None
