"""A trained job's serving: its own vLLM Deployment and Service, or its place
in a serving pool (whose objects the serving-pool controller owns)."""

from __future__ import annotations

from ...api.status import FineTuneJobStatus
from ...builders import build_serving_objects, serving_endpoint
from ...builders.serving import service_endpoint
from ...builders.serving_plan import pool_name
from ...runtime import Watch
from ..servingpool.members import assemble, candidates
from ..servingpool.watches import POOL_DEPLOYMENTS, POOL_PODS, SERVING_LABELS

SERVING_PODS = Watch("serving-pods", "", "v1", "pods", SERVING_LABELS, owner_label="kubetune.io/job")


def _jobs_kind() -> str:
    from .controller import FINETUNEJOBS  # the controller imports this module

    return FINETUNEJOBS.kind


def pool_refusal(ctl, p) -> str | None:
    """Why this job cannot join its serving pool (it disagrees with the pool's first member), naming the field."""
    pool = p.job.spec.serving.pool
    if not (p.job.spec.serving.enabled and pool):
        return None
    found = candidates(ctl.rt.cache.in_namespace(_jobs_kind(), p.key[0]), pool)
    return assemble(found).refused.get(p.key[1])


def observe_serving(ctl, p, own_deployment: dict | None) -> dict:
    """The Observation fields about serving: the Deployment and pods that serve
    this job and, for a pool member, the model name the pool must serve and why it may not."""
    serving = p.job.spec.serving
    cache = ctl.rt.cache
    if not (serving.enabled and serving.pool):
        return {"deployment": own_deployment, "serving_pods": cache.all(SERVING_PODS.kind, p.key)}
    pool_key = (p.key[0], serving.pool)
    return {"deployment": cache.one(POOL_DEPLOYMENTS.kind, pool_key), "serving_pods": cache.all(POOL_PODS.kind, pool_key),
            "serving_member": p.key[1], "serving_refusal": pool_refusal(ctl, p)}


def ensure_serving(ctl, p, status: dict, deployment: dict | None) -> None:
    """Once trained: create this job's serving objects (a pool member's are the
    pool controller's), and say in status where the job is served."""
    serving, namespace = p.job.spec.serving, p.key[0]
    if serving.pool:
        endpoint = service_endpoint(pool_name(serving.pool), namespace)
    else:
        endpoint = serving_endpoint(p.job)
        if deployment is None:
            output = FineTuneJobStatus.model_validate({"output": status.get("output") or {}}, by_alias=True)
            for obj in build_serving_objects(p.job.model_copy(update={"status": output}), ctl.cfg):  # Deployment last
                ctl.kube.create_if_absent(obj)
            p.logger.info("created vLLM Deployment and Service")
    where = {"endpoint": endpoint, "modelName": p.key[1], "pool": serving.pool}
    status["serving"] = {**(status.get("serving") or {}), **{k: v for k, v in where.items() if v is not None}}


def members_to_mark(ctl, namespace: str, pool: str) -> list[tuple[str, str]]:
    """The jobs a pool's Deployment or pod event concerns."""
    return [(namespace, body["metadata"]["name"]) for body in ctl.rt.cache.in_namespace(_jobs_kind(), namespace)
            if ((body.get("spec") or {}).get("serving") or {}).get("pool") == pool]
