"""Observe, the first step of a pass: one FineTuneJob and what belongs to it as
the watch caches show them (no API call): the spec parsed once, the children,
what serves it, the pool it may join. The pass then decides (`...status`, pure)
and acts (`reconcile`, `sync`, `serving`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ...api import parse_job
from ...api.errors import Problem
from ...api.job import FineTuneJob
from ...builders.meta import controlled_by
from ...runtime import Key
from ..servingpool.controller import POOL_CONFLICTS
from ..servingpool.members import assemble, candidates
from ..watches import FINETUNEJOBS, POOL_DEPLOYMENTS, POOL_PODS, SERVING_DEPLOYMENTS, SERVING_PODS, TRAINER_PODS, TRAINING_JOBS

log = logging.getLogger("kubetune.operator")


class JobLog(logging.LoggerAdapter):
    """Names the job, as Kopf's per-object loggers do, in logs written outside Kopf's handlers."""

    def process(self, msg, kwargs):
        return f"[{self.extra['namespace']}/{self.extra['name']}] {msg}", kwargs


@dataclass
class Pass:
    """One worker's pass over one FineTuneJob: its body as the cache shows it,
    the spec parsed once (status is not parsed: it is ours, and an old
    operator's fields must not block reconciling)."""

    key: Key
    body: dict
    job: FineTuneJob | None
    problems: list[Problem] = field(default_factory=list)

    @classmethod
    def of(cls, key: Key, body: dict) -> "Pass":
        meta = body["metadata"]
        parsed = parse_job({
            "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "generation", "labels", "annotations") if k in meta},
            "spec": body.get("spec"),
        })
        return cls(key, body, parsed.job, parsed.problems)

    @property
    def generation(self) -> int | None:
        return self.body["metadata"].get("generation")

    @property
    def version(self) -> tuple[str | None, int | None]:
        """What identifies the spec: (uid, generation)."""
        return self.body["metadata"].get("uid"), self.generation

    @property
    def logger(self) -> JobLog:
        return JobLog(log, {"namespace": self.key[0], "name": self.key[1]})


def children(cache, key: Key, uid: str | None) -> tuple[dict | None, list[dict], dict | None]:
    """(training Job, trainer pods, serving Deployment) as the cache shows them:
    only what is ours by UID. The label that files them under this job can be
    set by anyone in the namespace; the Job must name this FineTuneJob (`uid`)
    as its controller, the pods that Job, the Deployment this FineTuneJob."""
    job = next((j for j in cache.all(TRAINING_JOBS.kind, key) if controlled_by(j, uid)), None)
    job_uid = (job or {}).get("metadata", {}).get("uid")
    pods = [pod for pod in cache.all(TRAINER_PODS.kind, key) if controlled_by(pod, job_uid)]
    deployment = next((d for d in cache.all(SERVING_DEPLOYMENTS.kind, key) if controlled_by(d, uid)), None)
    return job, pods, deployment


def pool_refusal(ctl, p) -> str | None:
    """Why this job cannot join its serving pool (it disagrees with the pool's first member), naming the field."""
    pool = p.job.spec.serving.pool
    if not (p.job.spec.serving.enabled and pool):
        return None
    found = candidates(ctl.rt.cache.in_namespace(FINETUNEJOBS.kind, p.key[0]), pool)
    return assemble(found).refused.get(p.key[1])


def observe_serving(ctl, p, own_deployment: dict | None) -> dict:
    """The Observation fields about serving: the Deployment and pods that serve
    this job and, for a pool member, the model name the pool must serve and why it may not."""
    serving = p.job.spec.serving
    cache = ctl.rt.cache
    if not (serving.enabled and serving.pool):
        return {"deployment": own_deployment, "serving_pods": cache.all(SERVING_PODS.kind, p.key)}
    pool_key = (p.key[0], serving.pool)
    conflict = (cache.one(POOL_CONFLICTS, pool_key) or {}).get("message")
    return {"deployment": cache.one(POOL_DEPLOYMENTS.kind, pool_key), "serving_pods": cache.all(POOL_PODS.kind, pool_key),
            "serving_member": p.key[1], "serving_refusal": pool_refusal(ctl, p) or conflict}


def members_to_mark(ctl, namespace: str, pool: str) -> list[tuple[str, str]]:
    """The jobs a pool's Deployment or pod event concerns."""
    return [(namespace, body["metadata"]["name"]) for body in ctl.rt.cache.in_namespace(FINETUNEJOBS.kind, namespace)
            if ((body.get("spec") or {}).get("serving") or {}).get("pool") == pool]
