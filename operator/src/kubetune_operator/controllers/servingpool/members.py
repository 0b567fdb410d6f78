"""A pool's jobs, from the FineTuneJob cache, and which of them are served.

The first candidate (oldest, then by name; failed ones left out) sets the
terms every member must agree with (`serving_plan.pool_terms`); a job that
disagrees is refused with the field named. Of the rest, those whose training
succeeded and whose serving gate (if any) passed are the members the
Deployment serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...api import parse_job
from ...api.job import FineTuneJob
from ...api.status import FineTuneJobStatus
from ...builders.serving_plan import pool_conflict
from ...status.serving_gate import held_back

TRAINED = ("Succeeded", "Serving")


@dataclass(frozen=True)
class PoolCandidate:
    job: FineTuneJob  # with status.output, so its adapter URI is the one the trainer reported
    created: str
    phase: str | None
    gated: bool = False  # trained, but spec.serving.gate holds it back


@dataclass(frozen=True)
class PoolAssembly:
    first: FineTuneJob | None
    members: list[FineTuneJob] = field(default_factory=list)  # served, in pool order
    refused: dict[str, str] = field(default_factory=dict)  # job name -> why it is not served


def candidate(body: dict) -> PoolCandidate | None:
    """A cached FineTuneJob body as a pool candidate, or None (invalid spec, being deleted)."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    status = body.get("status") or {}
    parsed = parse_job({
        "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "generation") if k in meta},
        "spec": body.get("spec"),
    })
    if parsed.job is None or not parsed.job.spec.serving.enabled or not parsed.job.spec.serving.pool:
        return None
    output = FineTuneJobStatus.model_validate({"output": status.get("output") or None}, by_alias=True)
    return PoolCandidate(parsed.job.model_copy(update={"status": output}), meta.get("creationTimestamp") or "", status.get("phase"),
                         held_back(status))


def candidates(bodies: list[dict], pool: str) -> list[PoolCandidate]:
    """The jobs among `bodies` (one namespace's) that ask to be served in `pool`."""
    found = [c for body in bodies if ((body.get("spec") or {}).get("serving") or {}).get("pool") == pool
             and (c := candidate(body)) is not None]
    return sorted(found, key=lambda c: (c.created, c.job.metadata.name))


def assemble(found: list[PoolCandidate]) -> PoolAssembly:
    """Who sets the terms, who is served, who is refused and why."""
    standing = [c for c in found if c.phase != "Failed"]
    if not standing:
        return PoolAssembly(None)
    first = standing[0].job
    members, refused = [], {}
    for c in standing:
        conflict = pool_conflict(c.job, first)
        if conflict:
            refused[c.job.metadata.name] = conflict
        elif c.phase in TRAINED and not c.gated:
            members.append(c.job)
    return PoolAssembly(first, members, refused)
