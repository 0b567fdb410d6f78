"""What the trainer reports about `dataset.sources`: each source's rows read and
rows consumed. The trainer puts `{"sources": [...]}` under `dataset` in its
termination message; the operator copies it to `status.dataset`. The list is
capped (and long URIs shortened) so the termination message stays under 4 KiB
and the status small; the report has every source in full."""

from __future__ import annotations

from pydantic import Field

from .base import ApiModel

MAX_STATUS_SOURCES = 8
MAX_STATUS_URI = 256


class SourceUsage(ApiModel):
    """One source of the mix: its weight, the rows read from it and the rows training consumed."""

    uri: str = Field(max_length=MAX_STATUS_URI, description="The source (dataset.sources[].uri; a long one shortened with ...).")
    weight: float = Field(gt=0, description="Its weight as the spec gives it.")
    rows_read: int = Field(ge=0, description="Rows in its file(s).")
    rows_consumed: int = Field(ge=0, description="Rows the training read from it, repeats counted (a source smaller than its share repeats).")


class DatasetStatus(ApiModel):
    """dataset.sources: the mix as training consumed it (the report has every source, with shares asked and got)."""

    sources: list[SourceUsage] = Field(default_factory=list, max_length=MAX_STATUS_SOURCES,
                                       description=f"The first {MAX_STATUS_SOURCES} sources, in spec order.")
    more_sources: int | None = Field(None, ge=0, description="Sources beyond those listed (see the report).")


def _short(uri: str) -> str:
    return uri if len(uri) <= MAX_STATUS_URI else uri[: MAX_STATUS_URI - 3] + "..."


def status_sources(sources: list[dict]) -> dict:
    """The termination message's `dataset`, from the per-source stats (uri, weight, rowsRead, rowsConsumed)."""
    listed = [SourceUsage(uri=_short(s["uri"]), weight=float(s["weight"]), rows_read=s["rowsRead"], rows_consumed=s.get("rowsConsumed", 0))
              for s in sources[:MAX_STATUS_SOURCES]]
    status = DatasetStatus(sources=listed, more_sources=len(sources) - len(listed) or None)
    return status.model_dump(by_alias=True, exclude_none=True)
