"""What the operator asks Kopf to watch: every child watch is filtered by the API
server, with exactly the labels its handlers filter by, so a cluster's other
pods, Jobs and Deployments never reach the operator."""

from __future__ import annotations

import kopf

from kubetune_operator import handlers
from kubetune_operator.api import GROUP


def _registered_child_handlers():
    registry = kopf.get_default_registry()
    found = [h for reg in (registry._indexing, registry._watching) for h in reg.get_all_handlers()]
    return [h for h in found if h.selector.group != GROUP]


def test_every_child_watch_is_filtered_server_side_by_its_handlers_labels():
    settings = kopf.OperatorSettings()
    handlers._watch_only_ours(settings)
    children = _registered_child_handlers()
    assert {h.selector.any_name for h in children} == {"jobs", "pods", "deployments"}
    for handler in children:
        selector = handler.selector
        resource = kopf.Resource(selector.group, selector.version, selector.any_name)
        wanted = ",".join(f"{k}={v}" for k, v in handler.labels.items())
        assert list(settings.watching.label_selectors.collect(resource)) == [wanted], handler.id


def test_finetunejobs_are_watched_whole():
    settings = kopf.OperatorSettings()
    handlers._watch_only_ours(settings)
    assert list(settings.watching.label_selectors.collect(kopf.Resource(GROUP, "v1alpha1", "finetunejobs"))) == []
