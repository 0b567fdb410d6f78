"""`spec.model.adapterFrom` naming a FineTuneJob: the job waits while that one
does not exist yet or runs, fails when it failed or exported no adapter, and
otherwise trains on with its `status.output.adapterUri` (resolved into the spec
the renderer sees, so the trainer gets a URI).

A source that does not exist is waited for, not failed: `kubectl apply -f` of
one file holding the DPO job before its SFT job posts them milliseconds apart,
and the operator may see the first before the second exists (as a Pod waits
for a ConfigMap it names, and a job here waits for a missing Secret)."""

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
    reason: str = R.ADAPTER_SOURCE_PENDING  # the Valid condition's reason while it waits


def resolve(namespace: str, name: str, source: dict | None) -> Resolved:
    """Pure: the named job as the cache shows it -> its adapter URI, or why to wait;
    PermanentError when waiting cannot help."""
    where = f"model.adapterFrom: FineTuneJob {namespace}/{name}"
    if source is None:
        return Resolved(waiting=f"{where} does not exist: waiting for it to be created (or name an adapter URI)",
                        reason=R.ADAPTER_SOURCE_MISSING)
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


class Dependents:
    """Which jobs name which job in adapterFrom, kept from the watch events: a
    source's event marks its dependents without reading every job of the
    namespace (a burst of N jobs would cost N x N reads on Kopf's loop)."""

    def __init__(self) -> None:
        self._source_of: dict[tuple[str, str], str] = {}  # dependent's key -> the job it names
        self._of_source: dict[tuple[str, str], set[tuple[str, str]]] = {}  # source key -> dependents' keys

    def seen(self, key: tuple[str, str], body: dict) -> None:
        """A job's event: remember (or forget) the job its adapterFrom names."""
        source = ((body.get("spec") or {}).get("model") or {}).get("adapterFrom")
        if self._source_of.get(key) == source:
            return
        self.forget(key)
        if source:  # a URI names no job: no job is called s3://...
            self._source_of[key] = source
            self._of_source.setdefault((key[0], source), set()).add(key)

    def forget(self, key: tuple[str, str]) -> None:
        source = self._source_of.pop(key, None)
        if source is not None:
            waiting = self._of_source.get((key[0], source), set())
            waiting.discard(key)
            if not waiting:
                self._of_source.pop((key[0], source), None)

    def of(self, key: tuple[str, str]) -> list[tuple[str, str]]:
        """The jobs whose adapterFrom names the job `key`."""
        return sorted(self._of_source.get(key, ()))
