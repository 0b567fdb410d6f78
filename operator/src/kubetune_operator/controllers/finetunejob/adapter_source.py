"""`spec.model.adapterFrom` naming a FineTuneJob: the job waits while that one
runs, fails when it failed, is missing or exported no adapter, and otherwise
trains on with its `status.output.adapterUri` (resolved into the spec the
renderer sees, so the trainer gets a URI)."""

from __future__ import annotations

from dataclasses import dataclass

from ...api.status import Reason as R
from ...runtime import PermanentError

RETRY_SECONDS = 5  # a poll besides the source job's own events (`dependents`)
FINISHED = ("Succeeded", "Serving")


@dataclass(frozen=True)
class Resolved:
    uri: str | None = None  # the source's adapter URI
    waiting: str | None = None  # why the job waits for its source


def resolve(namespace: str, name: str, source: dict | None) -> Resolved:
    """Pure: the named job as the cache shows it -> its adapter URI, or why to wait;
    PermanentError when waiting cannot help."""
    where = f"model.adapterFrom: FineTuneJob {namespace}/{name}"
    if source is None:
        raise PermanentError(R.ADAPTER_SOURCE_MISSING, f"{where} does not exist; create it first, or name an adapter URI")
    status = source.get("status") or {}
    phase = status.get("phase")
    if phase == "Failed":
        reason = next((c.get("reason") for c in status.get("conditions") or [] if c.get("type") == "Failed"), None)
        raise PermanentError(R.ADAPTER_SOURCE_FAILED, f"{where} failed ({reason or 'no reason'}); fix and rerun it, then recreate this job")
    if phase not in FINISHED:
        return Resolved(waiting=f"{where} is {phase or 'not started'}: waiting for it to succeed")
    uri = (status.get("output") or {}).get("adapterUri")
    if not uri:
        raise PermanentError(R.ADAPTER_SOURCE_FAILED, f"{where} succeeded without an adapter (status.output.adapterUri): "
                                                       "it must train method lora or qlora and export adapter")
    return Resolved(uri=uri)


def with_source_adapter(job, uri: str):
    """The job with adapterFrom replaced by the source's URI (what the trainer is given)."""
    spec = job.spec
    model = spec.model.model_copy(update={"adapter_from": uri})
    return job.model_copy(update={"spec": spec.model_copy(update={"model": model})})


def dependents(jobs: list[dict], namespace: str, name: str) -> list[tuple[str, str]]:
    """Keys of the jobs in the namespace whose adapterFrom names this one."""
    return [(namespace, j["metadata"]["name"]) for j in jobs
            if ((j.get("spec") or {}).get("model") or {}).get("adapterFrom") == name]
