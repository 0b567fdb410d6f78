"""The watch cache resyncs: what the API server no longer has, that no watch
event said was deleted (a relist after 410 Gone), is dropped and handed to the
controllers as DELETED; what changed or appeared during the listing is not."""
from __future__ import annotations

from kubetune_operator.controllers.finetunejob.controller import FineTuneJobController
from kubetune_operator.controllers.watches import FINETUNEJOBS, TRAINING_JOBS
from kubetune_operator.builders.meta import LABEL_JOB
from kubetune_operator.runtime import Runtime
from kubetune_operator.runtime.resync import resync
from kubetune_operator.settings import Settings


class Lister:
    """The API server's listings, metadata only, in pages of one."""

    def __init__(self, objects: dict[str, list[dict]], during=None):
        self.objects, self.during, self.paths = objects, during, []

    def request(self, method, path, body=None, *, query=None, accept=None, **_):
        assert method == "GET" and "PartialObjectMetadataList" in accept
        self.paths.append((path, dict(query)))
        if self.during:
            self.during()
            self.during = None
        items = self.objects.get(path.rsplit("/", 1)[-1], [])
        start = int(query.get("continue", 0))
        page = items[start:start + 1]
        more = {"continue": str(start + 1)} if start + 1 < len(items) else {}
        return {"items": page, "metadata": more}


def meta(name, namespace="team", **labels):
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels}}


def _runtime(kube):
    rt = Runtime.create(Settings(), kube, (FineTuneJobController,), workers=0)
    for name in ("ghost", "alive"):
        rt.index(FINETUNEJOBS, "team", name, {}, {"metadata": {"name": name, "namespace": "team", "uid": f"u-{name}"}, "spec": {}})
    rt.index(TRAINING_JOBS, "team", "ghost-train", {LABEL_JOB: "ghost"}, {"metadata": {"name": "ghost-train", "labels": {LABEL_JOB: "ghost"}}})
    return rt


def test_an_object_deleted_while_the_watch_relisted_is_dropped_and_forgotten():
    kube = Lister({"finetunejobs": [meta("alive")], "jobs": []})
    rt = _runtime(kube)
    ctl = rt.controllers["finetunejob"]
    ctl.reconciled[("team", "ghost")] = ("u-ghost", 1)
    dropped = resync(rt, (FINETUNEJOBS, TRAINING_JOBS))
    assert sorted(dropped) == [("finetunejobs", ("team", "ghost"), "ghost"), ("training-jobs", ("team", "ghost"), "ghost-train")]
    assert rt.cache.one(FINETUNEJOBS.kind, ("team", "ghost")) is None and rt.cache.one(FINETUNEJOBS.kind, ("team", "alive"))
    assert ("team", "ghost") not in ctl.reconciled
    assert kube.paths[0] == ("/apis/kubetune.io/v1alpha1/finetunejobs", {"limit": "500"})  # cluster-wide, no selector of its own


def test_what_changed_during_the_listing_is_left_alone():
    rt = None

    def a_watch_event_meanwhile():  # the object came back (re-created) while the listing ran
        rt.index(FINETUNEJOBS, "team", "ghost", {}, {"metadata": {"name": "ghost", "namespace": "team", "uid": "u-new"}, "spec": {}})
    kube = Lister({"finetunejobs": [meta("alive")], "jobs": [meta("ghost-train", **{LABEL_JOB: "ghost"})]}, during=a_watch_event_meanwhile)
    rt = _runtime(kube)
    assert resync(rt, (FINETUNEJOBS, TRAINING_JOBS)) == []
    assert rt.cache.one(FINETUNEJOBS.kind, ("team", "ghost"))["metadata"]["uid"] == "u-new"


def test_watched_namespaces_are_listed_one_by_one_and_paged():
    kube = Lister({"jobs": [meta("a-train", **{LABEL_JOB: "a"}), meta("b-train", **{LABEL_JOB: "b"})]})
    rt = Runtime.create(Settings(), kube, (FineTuneJobController,), workers=0)
    resync(rt, (TRAINING_JOBS,), ("team", "other"))
    assert [p for p, _ in kube.paths] == ["/apis/batch/v1/namespaces/team/jobs"] * 2 + ["/apis/batch/v1/namespaces/other/jobs"] * 2
    assert kube.paths[0][1]["labelSelector"] == TRAINING_JOBS.selector
