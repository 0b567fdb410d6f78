"""What the operator asks Kopf to watch: every child watch is filtered by the API
server with exactly the labels its handlers filter by (both come from one
`Watch` declaration), so a cluster's other pods, Jobs and Deployments never
reach the operator."""

from __future__ import annotations

import re

import kopf

from kubetune_operator import handlers
from kubetune_operator.api import GROUP
from kubetune_operator.runtime.kopf_setup import filter_server_side
from kubetune_operator.runtime.watches import Watch


def _selectors(settings, watch) -> list[str]:
    return list(settings.watching.label_selectors.collect(kopf.Resource(watch.group, watch.version, watch.plural)))


def _selects(selector: str, labels: dict[str, str]) -> bool:
    """Whether a label selector (`k=v` and `k in (a,b)` terms) selects an object with `labels`."""
    for part in re.findall(r"[^,()]+ in \([^)]*\)|[^,]+", selector):
        if " in (" in part:
            key, values = part.split(" in (")
            if labels.get(key.strip()) not in values.rstrip(")").split(","):
                return False
        else:
            key, value = part.split("=")
            if labels.get(key) != value:
                return False
    return True


def test_every_child_watch_is_filtered_server_side_by_its_handlers_labels():
    settings = kopf.OperatorSettings()
    filter_server_side(settings, handlers.WATCHES)
    children = [w for w in handlers.WATCHES if w.group != GROUP]
    assert {w.plural for w in children} == {"jobs", "pods", "deployments"}
    for watch in children:
        assert watch.labels, watch.kind
        (selector,) = _selectors(settings, watch)
        # Every watch of the resource gets what its handlers want, and nothing that is not kubetune's.
        assert _selects(selector, watch.labels), (watch.kind, selector)
        assert "app.kubernetes.io/managed-by=kubetune" in selector.split(","), selector
        others = [w for w in children if w.plural == watch.plural]
        if len({tuple(sorted(w.labels.items())) for w in others}) == 1:
            assert selector == ",".join(f"{k}={v}" for k, v in watch.labels.items()), watch.kind


def test_trainer_and_serving_pods_share_one_set_based_selector():
    trainer = Watch("t", "", "v1", "pods", {"managed": "k", "name": "trainer"}, owner_label="j")
    serving = Watch("s", "", "v1", "pods", {"managed": "k", "name": "serving"}, owner_label="j")
    settings = kopf.OperatorSettings()
    filter_server_side(settings, (trainer, serving))
    assert _selectors(settings, trainer) == ["managed=k,name in (serving,trainer)"]
    assert not _selects("managed=k,name in (serving,trainer)", {"managed": "k", "name": "other"})


def test_selectors_differing_in_two_keys_are_not_merged():
    one = Watch("one", "", "v1", "pods", {"a": "1", "b": "1"}, owner_label="j")
    two = Watch("two", "", "v1", "pods", {"a": "2", "b": "2"}, owner_label="j")
    settings = kopf.OperatorSettings()
    filter_server_side(settings, (one, two))
    # a in (1,2),b in (1,2) would also select a=1,b=2: one selector cannot say it.
    assert _selectors(settings, one) == []


def test_finetunejobs_and_sweeps_are_watched_whole():
    # The sweep controller watches its trials (FineTuneJobs with its labels) on the
    # FineTuneJob controller's own watch, which must see every FineTuneJob.
    settings = kopf.OperatorSettings()
    filter_server_side(settings, handlers.WATCHES)
    ours = [w for w in handlers.WATCHES if w.group == GROUP]
    assert {w.plural for w in ours} == {"finetunejobs", "finetunesweeps"}
    assert [w for w in ours if w.plural == "finetunejobs" and not w.labels], "no watch takes every FineTuneJob"
    for watch in ours:
        assert _selectors(settings, watch) == []


def test_a_resource_watched_with_and_without_labels_is_not_filtered():
    # One Kopf watch serves both: filtering it for one would starve the other.
    labelled = Watch("labelled", "batch", "v1", "jobs", {"a": "b"}, owner_label="x")
    whole = Watch("whole", "batch", "v1", "jobs")
    settings = kopf.OperatorSettings()
    filter_server_side(settings, (labelled, whole))
    assert _selectors(settings, labelled) == []


def test_a_reconciled_resource_is_kept_without_the_api_servers_field_bookkeeping():
    from kubetune_operator.runtime.watches import whole

    body = {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "extra": 1, "spec": {"method": "lora"}, "status": {"phase": "Running"},
            "metadata": {"name": "a", "uid": "u", "generation": 2, "managedFields": [{"manager": "kubectl"}] * 50}}
    kept = whole(body)
    assert kept == {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "spec": {"method": "lora"}, "status": {"phase": "Running"},
                    "metadata": {"name": "a", "uid": "u", "generation": 2}}
    assert "managedFields" in body["metadata"], "Kopf's body is not changed"


def test_a_namespaced_operator_asks_nothing_cluster_wide_of_kopf():
    """The chart's namespaced scope grants no namespace listing and no CRD watch:
    Kopf must not try them (each 403 was retried for ~50 s before it served a
    namespace); an operator of the whole cluster keeps observing both."""
    from kubetune_operator.runtime.kopf_setup import observe_cluster
    from kubetune_operator.settings import Settings

    namespaced, clusterwide = kopf.OperatorSettings(), kopf.OperatorSettings()
    observe_cluster(namespaced, Settings(watched_namespaces=("ml-a", "ml-b")))
    observe_cluster(clusterwide, Settings())
    assert (namespaced.scanning.disabled, clusterwide.scanning.disabled) == (True, False)
