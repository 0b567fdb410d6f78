"""Pure: the trainer's `dataset` report (dataset.sources: each source's rows read
and rows consumed) -> `status.dataset`. A report the operator cannot read is
left out rather than trusted."""

from __future__ import annotations

from pydantic import ValidationError

from kubetune_contract.mixing import DatasetStatus


def dataset_fields(report: dict | None) -> dict:
    """{"dataset": ...} for the status, or nothing when the trainer reported no sources."""
    raw = (report or {}).get("dataset")
    if not isinstance(raw, dict):
        return {}
    try:
        return {"dataset": DatasetStatus.model_validate(raw).model_dump(by_alias=True, exclude_none=True)}
    except ValidationError:
        return {}
