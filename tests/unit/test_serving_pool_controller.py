"""The serving-pool controller's pass, on the runtime with a recording stand-in
for the Kubernetes client (the cluster test runs it against the real API
server and vLLM): what it applies, when it does nothing, what events mark."""
from __future__ import annotations

from kubetune_operator.builders.serving_plan import MEMBERS_ANNOTATION
from kubetune_operator.controllers.watches import FINETUNEJOBS
from kubetune_operator.controllers.servingpool.controller import DIGEST_ANNOTATION, ServingPoolController
from kubetune_operator.controllers.watches import POOL_DEPLOYMENTS
from kubetune_operator.runtime import Runtime
from kubetune_operator.settings import Settings

from .test_builders import _member


class RecordingKube:
    """Records the calls a pass makes (the stand-in for the one client module)."""

    def __init__(self, existing: dict | None = None):
        self.applied, self.patched = [], []
        self.existing = existing or {}  # (kind, name) -> what the API server holds

    def get(self, kind, namespace, name):
        return self.existing.get((kind, name))

    def apply(self, obj, field_manager):
        self.applied.append(obj)
        self.existing[(obj["kind"], obj["metadata"]["name"])] = obj
        return obj

    def merge_patch(self, kind, namespace, name, patch, subresource=None):
        self.patched.append((kind, name, patch))
        return {}


def runtime(*bodies) -> tuple[Runtime, ServingPoolController, RecordingKube]:
    kube = RecordingKube()
    rt = Runtime.create(Settings(vllm_image="registry.local/vllm:1"), kube, (ServingPoolController,), workers=0)
    for body in bodies:
        rt.index(FINETUNEJOBS, "team", body["metadata"]["name"], {}, body)
    return rt, rt.controllers["servingpool"], kube


def test_a_pass_applies_the_pool_once_and_again_only_when_members_change():
    coding, writing = _member("coding", "2026-01-01T00:00:00Z"), _member("writing", "2026-01-02T00:00:00Z")
    rt, ctl, kube = runtime(coding, writing)
    ctl.work(("team", "coding"))
    # The Deployment, which carries the digest a later pass compares, last: an
    # operator killed between the two must not leave the pool without its Service.
    service, deployment = kube.applied
    assert (service["kind"], deployment["kind"], deployment["metadata"]["name"]) == ("Service", "Deployment", "coding-pool")
    assert deployment["metadata"]["annotations"][MEMBERS_ANNOTATION] == "coding,writing"
    # Nothing answers yet: a change replaces the starting pod instead of adding one.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == "100%"

    # The watch shows what was applied (and now available): the next pass has nothing to do.
    shown = {**deployment, "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1,
                                      "conditions": [{"type": "Available", "status": "True"}]}}
    shown["metadata"] = {**shown["metadata"], "generation": 1, "annotations": dict(shown["metadata"]["annotations"])}
    rt.index(POOL_DEPLOYMENTS, "team", "coding-pool", {"kubetune.io/pool": "coding"}, shown)
    kube.applied.clear()
    ctl.work(("team", "coding"))
    applied = kube.applied
    # Available now: the strategy turns surge-only (never fewer ready pods), the members stay.
    assert applied and applied[-1]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    shown["metadata"]["annotations"][DIGEST_ANNOTATION] = applied[-1]["metadata"]["annotations"][DIGEST_ANNOTATION]
    rt.index(POOL_DEPLOYMENTS, "team", "coding-pool", {"kubetune.io/pool": "coding"}, shown)
    kube.applied.clear()
    ctl.work(("team", "coding"))
    assert kube.applied == []

    # A member leaves: its adapter goes, and what answered keeps answering while it rolls out.
    rt.cache.drop(FINETUNEJOBS.kind, ("team", "writing"), "writing")
    ctl.work(("team", "coding"))
    changed = kube.applied[-1]
    assert changed["metadata"]["annotations"][MEMBERS_ANNOTATION] == "coding"
    assert changed["metadata"]["annotations"]["kubetune.io/pool-previous-members"] == "coding,writing"
    assert [o["name"] for o in changed["metadata"]["ownerReferences"]] == ["coding"]


def test_a_job_still_training_is_not_served_and_an_empty_pool_scales_to_zero():
    rt, ctl, kube = runtime(_member("coding", "2026-01-01T00:00:00Z", phase="Running"))
    ctl.work(("team", "coding"))
    assert kube.applied == [] and kube.patched == []
    existing = {"metadata": {"name": "coding-pool", "annotations": {MEMBERS_ANNOTATION: "coding"}}, "spec": {"replicas": 1}, "status": {}}
    rt.index(POOL_DEPLOYMENTS, "team", "coding-pool", {"kubetune.io/pool": "coding"}, existing)
    ctl.work(("team", "coding"))
    (kind, name, patch), = kube.patched
    assert (kind, name, patch["spec"]) == ("Deployment", "coding-pool", {"replicas": 0})


def test_events_mark_the_pools_a_job_was_and_is_in():
    rt, ctl, _ = runtime()
    marked = []
    rt.mark = lambda controller, key, delay=None, urgent=False: marked.append(key)
    job = _member("coding", "2026-01-01T00:00:00Z")
    ctl.on_event(FINETUNEJOBS, "ADDED", ("team", "coding"), job)
    moved = {**job, "spec": {**job["spec"], "serving": {**job["spec"]["serving"], "pool": "other"}}}
    ctl.on_event(FINETUNEJOBS, "MODIFIED", ("team", "coding"), moved)
    ctl.on_event(FINETUNEJOBS, "DELETED", ("team", "coding"), moved)
    assert marked[0] == ("team", "coding") and set(marked[1:3]) == {("team", "coding"), ("team", "other")}
    assert marked[3:] == [("team", "other")]


def test_an_unrelated_object_with_the_pool_s_name_is_never_applied_over():
    """A Service `coding-pool` someone else made: the pool applies nothing (its
    selector is not replaced, no ownerReference added) and its members hear why."""
    from kubetune_operator.controllers.servingpool.controller import POOL_CONFLICTS

    rt, ctl, kube = runtime(_member("a", "2026-01-01T00:00:00Z"))
    kube.existing[("Service", "coding-pool")] = {"kind": "Service", "metadata": {"name": "coding-pool"}, "spec": {"selector": {"app": "theirs"}}}
    assert ctl.work(("team", "coding")) is not None  # looked at again later
    assert kube.applied == [] and kube.existing[("Service", "coding-pool")]["spec"]["selector"] == {"app": "theirs"}
    assert "Service coding-pool exists and is not serving pool coding's" in rt.cache.one(POOL_CONFLICTS, ("team", "coding"))["message"]
    del kube.existing[("Service", "coding-pool")]  # its owner renames it
    ctl.work(("team", "coding"))
    assert [o["kind"] for o in kube.applied] == ["Service", "Deployment"] and rt.cache.one(POOL_CONFLICTS, ("team", "coding")) is None
