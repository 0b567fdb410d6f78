"""What the serving-pool controller watches, what each event marks, and one pass.

Key: (namespace, pool). A pass assembles the pool from the FineTuneJob cache
and server-side applies its Deployment and Service when what they should be
changed (a digest of them is kept on the Deployment): members come and go by
a surge-only rolling update, so the others keep answering throughout.
"""

from __future__ import annotations

import logging

from ...builders.meta import conflict_message, owned_by_any
from ...builders.serving import plan_objects, spec_digest
from ...builders.serving_plan import MEMBERS_ANNOTATION, members_of, pool_name, pool_plan
from ...runtime import Key, PermanentError, Runtime, Watch
from ...status.serving import available, serves
from .members import assemble, candidates
from ..watches import FINETUNEJOBS, POOL_DEPLOYMENTS, POOL_PODS

__all__ = ["POOL_CONFLICTS", "POOL_DEPLOYMENTS", "POOL_PODS", "ServingPoolController"]

DIGEST_ANNOTATION = "kubetune.io/pool-spec"
# The cache entry a pool's conflict is kept under (read by its members' passes: observe).
POOL_CONFLICTS = "pool-conflicts"
CONFLICT_RETRY_SECONDS = 10
FIELD_MANAGER = "kubetune-serving-pool"
log = logging.getLogger("kubetune.servingpool")


def pool_of(body) -> str | None:
    return ((body.get("spec") or {}).get("serving") or {}).get("pool")


def served_now(deployment: dict | None) -> list[str]:
    """The members a Deployment answers for at this moment."""
    return [name for name in members_of(deployment) if serves(deployment, name)]


class ServingPoolController:
    name = "servingpool"
    watches = (FINETUNEJOBS, POOL_DEPLOYMENTS)

    def __init__(self, runtime: Runtime):
        self.rt = runtime
        self.cfg, self.kube = runtime.cfg, runtime.kube
        self.pool_of: dict[Key, Key] = {}  # job key -> the pool key it was last seen in

    def on_event(self, watch: Watch, event_type: str, key: Key, body) -> None:
        if watch is POOL_DEPLOYMENTS:
            self.rt.mark(self.name, key)
            return
        pool = pool_of(body)
        now = (key[0], pool) if pool and event_type != "DELETED" else None
        before = self.pool_of.pop(key, None)
        if now:
            self.pool_of[key] = now
        for pool_key in {before, now} - {None}:
            self.rt.mark(self.name, pool_key)  # a job joined, changed, finished training or left

    def work(self, key: Key) -> float | None:
        namespace, pool = key
        found = candidates(self.rt.cache.in_namespace(FINETUNEJOBS.kind, namespace), pool)
        assembly = assemble(found)
        deployment = self.rt.cache.one(POOL_DEPLOYMENTS.kind, key)
        if not assembly.members:
            self._idle(key, deployment)
            return None
        starting = not available(deployment)
        plan = pool_plan(pool, assembly.members, self.cfg, starting=starting)
        wanted = spec_digest(plan_objects(plan, self.cfg))
        if deployment is not None and (deployment["metadata"].get("annotations") or {}).get(DIGEST_ANNOTATION) == wanted:
            return None
        # What answers now keeps answering while the new template rolls out.
        plan = pool_plan(pool, assembly.members, self.cfg, previous=served_now(deployment), starting=starting)
        *others, pool_deployment = plan_objects(plan, self.cfg)
        pool_deployment["metadata"].setdefault("annotations", {})[DIGEST_ANNOTATION] = wanted
        if self._conflict(key, (*others, pool_deployment), {(c.job.metadata.model_extra or {}).get("uid") for c in found}):
            return CONFLICT_RETRY_SECONDS
        for obj in (*others, pool_deployment):  # the digest last: what it names is applied then
            self.kube.apply(obj, FIELD_MANAGER)
        log.info("[%s] serving pool %s: %s", namespace, pool, ", ".join(job.metadata.name for job in assembly.members))
        return None

    def _conflict(self, key: Key, objects, uids: set) -> bool:
        """Whether an object of a pool object's name exists that no job of the
        pool owns (an unrelated Service called `<pool>-pool`, say): it is never
        applied over; its members say why in their Serving condition."""
        for obj in objects:
            existing = self.kube.get(obj["kind"], key[0], obj["metadata"]["name"])
            if existing is not None and not owned_by_any(existing, uids - {None}):
                message = conflict_message(existing, f"serving pool {key[1]}")
                if self.rt.cache.one(POOL_CONFLICTS, key) != {"message": message}:
                    log.warning("[%s] serving pool %s: %s", key[0], key[1], message)
                    self.rt.cache.put(POOL_CONFLICTS, key, "conflict", {"message": message})
                    self._mark_members(key)
                return True
        if self.rt.cache.one(POOL_CONFLICTS, key) is not None:
            self.rt.cache.drop(POOL_CONFLICTS, key, "conflict")
            self._mark_members(key)
        return False

    def _mark_members(self, key: Key) -> None:
        for body in self.rt.cache.in_namespace(FINETUNEJOBS.kind, key[0]):
            if pool_of(body) == key[1]:
                self.rt.mark("finetunejob", (key[0], body["metadata"]["name"]))

    def _idle(self, key: Key, deployment: dict | None) -> None:
        """No member to serve (they left the pool or stopped serving): scale to
        zero. The Deployment itself goes with its last owner (no delete verb)."""
        if deployment is None or (not members_of(deployment) and (deployment.get("spec") or {}).get("replicas") == 0):
            return
        self.kube.merge_patch("Deployment", key[0], pool_name(key[1]), {
            "metadata": {"annotations": {MEMBERS_ANNOTATION: "", DIGEST_ANNOTATION: None}}, "spec": {"replicas": 0}})
        log.info("[%s] serving pool %s has no members: scaled to zero", *key)

    def on_permanent(self, key: Key, error: PermanentError) -> None:
        log.warning("[%s] serving pool %s: %s: %s", key[0], key[1], error.reason, error.message)
