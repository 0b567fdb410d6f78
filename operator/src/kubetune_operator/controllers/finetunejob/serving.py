"""A trained job's serving: its own vLLM Deployment and Service, or its place
in a serving pool (whose objects the serving-pool controller owns); and taking
them away when the job is no longer to be served (serving.enabled false, a
gate now missed). A pool member leaves its pool through the pool controller,
which rolls the pool's Deployment without it: the other members answer
throughout."""

from __future__ import annotations

from ...api.status import ConditionType as C
from ...api.status import FineTuneJobStatus
from ...api.status import Reason as R
from ...builders.meta import conflict_message, controlled_by
from ...k8s import now_rfc3339
from ...status.conditions import set_condition
from ...builders import build_serving_objects, serving_endpoint
from ...builders.meta import serving_name
from ...builders.serving import service_endpoint, spec_digest, template_patch
from ...builders.serving_plan import pool_name
from ...status.serving_gate import held_back

# What the job's own Deployment was built from (`spec_digest`): a pass rolls it only when that changed.
DIGEST_ANNOTATION = "kubetune.io/serving-spec"


def converge_serving(ctl, p, old: dict, new: dict, deployment: dict | None) -> None:
    """Serve a trained job that is to be served; take away what served one that no
    longer is (its own objects: a pool's member leaves through the pool)."""
    to_serve = p.job.spec.serving.enabled and not held_back(new)
    if to_serve and new.get("phase") in ("Succeeded", "Serving"):
        ensure_serving(ctl, p, new, deployment)
    elif not to_serve and (deployment is not None or _own_endpoint(old)):
        remove_serving(ctl, p)


def _own_endpoint(status: dict) -> bool:
    serving = status.get("serving") or {}
    return bool(serving.get("endpoint")) and not serving.get("pool")


def ensure_serving(ctl, p, status: dict, deployment: dict | None) -> None:
    """Once trained: create this job's serving objects (a pool member's are the
    pool controller's), roll its Deployment when spec.serving changed what it
    should be (mode, image, extraArgs, replicas, gpus: a surge-only rollout, the
    old pod answers until the new one is ready), and say in status where the
    job is served."""
    serving, namespace = p.job.spec.serving, p.key[0]
    if serving.pool:
        endpoint = service_endpoint(pool_name(serving.pool), namespace)
    else:
        endpoint = serving_endpoint(p.job)
        output = FineTuneJobStatus.model_validate({"output": status.get("output") or {}}, by_alias=True)
        objects = build_serving_objects(p.job.model_copy(update={"status": output}), ctl.cfg)  # Deployment last
        wanted = spec_digest(objects)
        objects[-1]["metadata"].setdefault("annotations", {})[DIGEST_ANNOTATION] = wanted
        if deployment is None:
            for obj in objects:
                stored, created = ctl.kube.create_if_absent(obj)
                if not created and not controlled_by(stored, p.body["metadata"].get("uid")):
                    # Someone else's object of our name: never taken over, said in the Serving condition.
                    status["conditions"] = set_condition(list(status.get("conditions") or []), C.SERVING, "False", R.CHILD_CONFLICT,
                                                         conflict_message(stored, "this FineTuneJob"), now_rfc3339(), p.generation)
                    return
            p.logger.info("created vLLM Deployment and Service")
        elif (deployment["metadata"].get("annotations") or {}).get(DIGEST_ANNOTATION) != wanted:
            # `deployment` is this job's (children: controlled by its UID); its Service does not change.
            ctl.kube.merge_patch("Deployment", namespace, serving_name(p.key[1]), template_patch(objects[-1]))
            p.logger.info("rolling vLLM Deployment: spec.serving changed what it serves")
    where = {"endpoint": endpoint, "modelName": p.key[1], "pool": serving.pool}
    status["serving"] = {**(status.get("serving") or {}), **{k: v for k, v in where.items() if v is not None}}


def owned_by(obj: dict | None, uid: str | None) -> bool:
    return obj is not None and any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def remove_serving(ctl, p) -> None:
    """This job's own vLLM Deployment, then its Service (the reverse of their
    creation), deleted when they are this job's by owner uid."""
    namespace, name, uid = p.key[0], serving_name(p.key[1]), p.body["metadata"].get("uid")
    for kind in ("Deployment", "Service"):
        found = ctl.kube.get(kind, namespace, name)
        if owned_by(found, uid) and ctl.kube.delete(kind, namespace, name, found["metadata"]["uid"]):
            p.logger.info("deleted vLLM %s %s: the job is no longer to be served", kind, name)
