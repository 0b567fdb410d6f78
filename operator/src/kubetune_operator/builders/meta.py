"""Names, labels and owner references shared by every child object.

Names are deterministic functions of the FineTuneJob name, so a restarted
operator finds the children it created instead of creating new ones.
"""

from __future__ import annotations

import hashlib

from ..api.job import API_VERSION, KIND, FineTuneJob

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_JOB = "kubetune.io/job"
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"
LABEL_SWEEP = "kubetune.io/sweep"  # on a sweep's trial FineTuneJobs: the sweep's name
LABEL_TRIAL = "kubetune.io/trial"  # ... and the trial's number
TRIAL_ANNOTATION = "kubetune.io/trial"  # the trial's values and the sampler's bookkeeping (JSON)
MANAGED_BY = "kubetune"
TRAINER_APP = "kubetune-trainer"
SERVING_APP = "kubetune-serving"

# An Indexed Job's pod hostnames are `<job name>-<index>` and must stay DNS
# labels (63), so the Job name leaves room for "-255".
MAX_JOB_NAME = 58
MAX_NAME = 63


def child_name(name: str, suffix: str, limit: int = MAX_NAME) -> str:
    """`<name>-<suffix>`, shortened with a stable hash when it would exceed `limit`."""
    full = f"{name}-{suffix}"
    if len(full) <= limit:
        return full
    digest = hashlib.sha1(full.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 2
    return f"{name[:keep].rstrip('-')}-{digest}-{suffix}"


def config_map_name(name: str) -> str:
    return child_name(name, "config")


def training_job_name(name: str) -> str:
    return child_name(name, "train", MAX_JOB_NAME)


def headless_service_name(name: str) -> str:
    # The rendezvous Service is the Job's pod subdomain: same name as the Job.
    return training_job_name(name)


def serving_name(name: str) -> str:
    return child_name(name, "serve")


def common_labels(job: FineTuneJob, app: str, component: str) -> dict[str, str]:
    return {
        LABEL_NAME: app,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_COMPONENT: component,
        LABEL_JOB: job.metadata.name,
    }


def owner_references(job: FineTuneJob) -> list[dict]:
    """The resource (a FineTuneJob, or a sweep owning its trials) as controller
    owner: deleting it garbage-collects the child. Empty when it has no uid yet
    (`kubetune render` of a local file)."""
    uid = (job.metadata.model_extra or {}).get("uid")
    if not uid:
        return []
    return [
        {
            "apiVersion": getattr(job, "api_version", API_VERSION),
            "kind": getattr(job, "kind", KIND),
            "name": job.metadata.name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def object_meta(job: FineTuneJob, namespace: str, name: str, labels: dict[str, str]) -> dict:
    meta: dict = {"name": name, "namespace": namespace, "labels": dict(labels)}
    owners = owner_references(job)
    if owners:
        meta["ownerReferences"] = owners
    return meta


def controlled_by(obj: dict | None, uid: str | None) -> bool:
    """Whether `obj` names `uid` as its controlling owner: what makes a child
    ours. Names and labels prove nothing (anyone in the namespace can pick
    them); an ownerReference to our object's UID is only ever written by us."""
    if obj is None or not uid:
        return False
    return any(o.get("uid") == uid and o.get("controller") for o in (obj.get("metadata") or {}).get("ownerReferences") or [])


def owned_by_any(obj: dict | None, uids) -> bool:
    """Whether `obj` names any of `uids` as an owner (a serving pool's objects are owned by its members)."""
    wanted = set(uids)
    return obj is not None and any(o.get("uid") in wanted for o in (obj.get("metadata") or {}).get("ownerReferences") or [])


def conflict_message(obj: dict, whose: str) -> str:
    kind, name = obj.get("kind", "object"), obj["metadata"]["name"]
    return (f"{kind} {name} exists and is not {whose}'s (no ownerReference to it): it is left untouched; "
            f"rename or delete it, or use another name")
