"""Pre-flight: a file's format (declared, or detected from its columns with
`dataset.columns`), its columns, and its rows checked before the first training
step, the first bad row refused with its `file:line`. The format detection and
the row checks are the contract's (`kubetune_contract.formats`,
`kubetune_contract.evaluation_data`), shared with `kubetune validate --dataset`."""

from __future__ import annotations

from pathlib import Path

from kubetune_contract.evaluation_data import answer_problem
from kubetune_contract.formats import FORMATS, columns_of, detect_format, row_problem, undetectable
from kubetune_contract.sections import ColumnMapping, EvaluationSpec

from ..errors import InvalidDataset
from .read import row_location

# Formats whose every row is checked (a pair with nothing to prefer teaches the wrong thing quietly).
CHECKED_FORMATS = ("preference", "unpaired", "prompts")


def blank(v) -> bool:
    """A required field with nothing in it: the row is dropped (and counted), not refused."""
    return v is None or (isinstance(v, str) and not v.strip())


def dataset_format(cfg, column_names: list[str], source: str, objective: str = "sft") -> str:
    """The declared format, or the one of the objective's that the columns show (honouring dataset.columns)."""
    if cfg.format != "auto":
        return cfg.format
    fmt = detect_format(column_names, cfg.columns, objective)
    if fmt is None:
        raise InvalidDataset(f"{source}: {undetectable(column_names, objective, cfg.columns)}")
    return fmt


def check_rows(ds, fmt: str, columns: ColumnMapping | None, source: str, cache_dir: Path) -> None:
    """Preference and unpaired rows: the first unusable one is refused with its file:line."""
    if fmt not in CHECKED_FORMATS:
        return
    for i, row in enumerate(ds):
        problem = row_problem(row, fmt, columns)
        if problem:
            raise InvalidDataset(f"{row_location(source, i, cache_dir)}: {problem}")


def check_columns(column_names: list[str], columns: ColumnMapping | None, fmt: str, source: str) -> None:
    m = columns_of(fmt, columns)
    for f in FORMATS[fmt].required:
        if m[f] not in column_names:
            mapped = columns is not None and getattr(columns, f)
            hint = f" (mapped by dataset.columns.{f})" if mapped else f" (set dataset.columns.{f} if yours is named differently)"
            raise InvalidDataset(f"{source}: format {fmt} needs column {m[f]!r}{hint}; found columns: {', '.join(column_names) or 'none'}")


def check_answers(ds, fmt: str, columns: ColumnMapping | None, evaluation: EvaluationSpec, source: str, cache_dir: Path) -> None:
    """Every usable row's answer can be scored by evaluation.metrics and
    .validationMetrics (kubetune_contract.evaluation_data)."""
    scored = [*evaluation.metrics, *evaluation.validation_metrics]
    if not scored:
        return
    m = columns_of(fmt, columns)
    for i, row in enumerate(ds):
        if any(blank(row.get(m[f])) for f in FORMATS[fmt].required):
            continue  # dropped as blank anyway
        problem = answer_problem(row, fmt, scored, columns)
        if problem:
            raise InvalidDataset(f"{row_location(source, i, cache_dir)}: {problem}")

