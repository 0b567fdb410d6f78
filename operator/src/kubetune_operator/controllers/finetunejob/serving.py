"""A trained job's serving: its own vLLM Deployment and Service, or its place
in a serving pool (whose objects the serving-pool controller owns)."""

from __future__ import annotations

from ...api.status import ConditionType as C
from ...api.status import FineTuneJobStatus
from ...api.status import Reason as R
from ...builders.meta import conflict_message, controlled_by
from ...k8s import now_rfc3339
from ...status.observed import set_condition
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
                stored, created = ctl.kube.create_if_absent(obj)
                if not created and not controlled_by(stored, p.body["metadata"].get("uid")):
                    # Someone else's object of our name: never taken over, said in the Serving condition.
                    status["conditions"] = set_condition(list(status.get("conditions") or []), C.SERVING, "False", R.CHILD_CONFLICT,
                                                         conflict_message(stored, "this FineTuneJob"), now_rfc3339(), p.generation)
                    return
            p.logger.info("created vLLM Deployment and Service")
    where = {"endpoint": endpoint, "modelName": p.key[1], "pool": serving.pool}
    status["serving"] = {**(status.get("serving") or {}), **{k: v for k, v in where.items() if v is not None}}
