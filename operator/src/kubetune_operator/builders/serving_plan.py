"""What one vLLM Deployment serves (`ServingPlan`), for one job or for a pool of
jobs on one base model. Pure: the serving builders turn a plan into objects.

A pool is the jobs of a namespace naming the same `serving.pool`: one
Deployment serves the base model with every member's adapter (vLLM's
multi-LoRA), each under its job's name. The members must agree on what the
Deployment is; the first member (oldest, then by name) sets those terms, and a
job that disagrees is refused naming the field (`pool_conflict`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubetune_contract.outputs import output_key, output_uri

from ..api.job import API_VERSION, KIND, FineTuneJob
from ..settings import Settings
from . import locations
from .meta import (
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
    SERVING_APP,
    child_name,
    common_labels,
    owner_references,
    serving_name,
)

LABEL_POOL = "kubetune.io/pool"
# The members whose adapters the Deployment's current template serves, and
# those the template before it served (they keep answering during a rollout).
MEMBERS_ANNOTATION = "kubetune.io/pool-members"
PREVIOUS_MEMBERS_ANNOTATION = "kubetune.io/pool-previous-members"
BASE_MODEL_SUFFIX = "base"


@dataclass(frozen=True)
class Adapter:
    name: str  # the model name clients ask for: the job's name
    uri: str  # where the trainer wrote it
    rank: int


@dataclass(frozen=True)
class ServingPlan:
    name: str  # of the Deployment and the Service
    namespace: str
    labels: dict[str, str]
    owners: list[dict]
    # Whose serving settings, credentials and placement apply (a pool's first member).
    source: FineTuneJob
    model_uri: str  # the base (adapter mode) or the merged weights
    model_name: str  # what that model answers as
    adapters: tuple[Adapter, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    # Nothing answers yet (the Deployment is new, or none of its pods is ready):
    # a change replaces the starting pods instead of starting more beside them.
    starting: bool = False


def exported_uri(job: FineTuneJob, cfg: Settings, name: str) -> str:
    """Where the trainer wrote an output, as it reported it in status; before
    it reported (`kubetune render`), where it will write it."""
    reported = ((job.status.output if job.status else None) or {}).get(output_key(name))
    return reported or output_uri(locations.output_uri(job, cfg), name)


def job_adapter(job: FineTuneJob, cfg: Settings) -> Adapter:
    lora = job.spec.resolved_lora
    return Adapter(job.metadata.name, exported_uri(job, cfg, "adapter"), lora.r if lora else 1)


def job_plan(job: FineTuneJob, cfg: Settings) -> ServingPlan:
    """One job, its own Deployment: its adapter on the base model, or its merged model."""
    name, ns = job.metadata.name, job.metadata.namespace or "default"
    labels = common_labels(job, SERVING_APP, "serving")
    if job.spec.serving.resolved_mode(job.spec.method) == "merged":
        return ServingPlan(serving_name(name), ns, labels, owner_references(job), job, exported_uri(job, cfg, "merged"), name)
    return ServingPlan(serving_name(name), ns, labels, owner_references(job), job, job.spec.model.uri,
                       f"{name}-{BASE_MODEL_SUFFIX}", (job_adapter(job, cfg),))


# --------------------------------------------------------------------------- pools


def pool_name(pool: str) -> str:
    """The pool's Deployment and Service."""
    return child_name(pool, "pool")


def pool_labels(pool: str) -> dict[str, str]:
    return {LABEL_NAME: SERVING_APP, LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: "serving", LABEL_POOL: pool}


def pool_terms(job: FineTuneJob) -> dict[str, object]:
    """What every member of a pool must agree on, by the field that sets it."""
    spec = job.spec
    s3 = spec.credentials.s3
    return {
        "spec.model.uri": spec.model.uri,
        "spec.serving.image": spec.serving.image,
        "spec.serving.replicas": spec.serving.replicas,
        "spec.serving.gpus": spec.serving.gpus,
        "spec.serving.extraArgs": list(spec.serving.extra_args),
        "spec.credentials.s3": s3.model_dump(by_alias=True) if s3 else None,
        "spec.credentials.hfToken": spec.credentials.hf_token.model_dump(by_alias=True) if spec.credentials.hf_token else None,
    }


def pool_conflict(job: FineTuneJob, first: FineTuneJob) -> str | None:
    """Why `job` cannot join the pool whose terms `first` set, naming the field; None when it agrees."""
    if job.metadata.name == first.metadata.name:
        return None
    mine, theirs = pool_terms(job), pool_terms(first)
    for path, value in mine.items():
        if value != theirs[path]:
            return (f"{path} is {_show(value)}, but serving pool {job.spec.serving.pool} serves {_show(theirs[path])} "
                    f"(set by its first member, {first.metadata.name}): pool members share one vLLM Deployment; "
                    f"make them agree or use another serving.pool")
    return None


def _show(value) -> str:
    return "unset" if value is None else repr(value)


def pool_owner_references(members: list[FineTuneJob]) -> list[dict]:
    """One reference per member, none the controller: the garbage collector
    removes the Deployment once the last member is gone."""
    refs = []
    for job in members:
        uid = (job.metadata.model_extra or {}).get("uid")
        if uid:
            refs.append({"apiVersion": API_VERSION, "kind": KIND, "name": job.metadata.name, "uid": uid,
                         "controller": False, "blockOwnerDeletion": False})
    return refs


def pool_plan(pool: str, members: list[FineTuneJob], cfg: Settings, previous: list[str] | None = None,
              starting: bool = False) -> ServingPlan:
    """The pool's Deployment: the first member's terms, every member's adapter."""
    first = members[0]
    names = [job.metadata.name for job in members]
    annotations = {MEMBERS_ANNOTATION: ",".join(names)}
    if previous is not None:
        annotations[PREVIOUS_MEMBERS_ANNOTATION] = ",".join(previous)
    return ServingPlan(pool_name(pool), first.metadata.namespace or "default", pool_labels(pool), pool_owner_references(members),
                       first, first.spec.model.uri, f"{pool}-{BASE_MODEL_SUFFIX}",
                       tuple(job_adapter(job, cfg) for job in members), annotations, starting)


def members_of(deployment: dict | None, annotation: str = MEMBERS_ANNOTATION) -> list[str]:
    value = ((deployment or {}).get("metadata", {}).get("annotations") or {}).get(annotation, "")
    return [name for name in value.split(",") if name]
