"""A trained job's serving: its own vLLM Deployment and Service, or its place
in a serving pool (whose objects the serving-pool controller owns)."""

from __future__ import annotations

from ...api.status import FineTuneJobStatus
from ...builders import build_serving_objects, serving_endpoint
from ...builders.serving import service_endpoint
from ...builders.serving_plan import pool_name

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
