"""Holding the next pods back, so that a test reads a state no pod can change.

Every node is cordoned (`spec.unschedulable`, as `kubectl cordon` does) while
the block runs: pods already running go on, a pod created meanwhile (a Job's
replacement for a killed one) stays Pending until the block ends. A test that
must read what a killed attempt left behind (its newest committed checkpoint)
reads it inside the block, once that attempt's processes are gone: the next
attempt cannot have started, whatever the machine's speed.
"""
from __future__ import annotations

from contextlib import contextmanager


def _set_unschedulable(kube, names: list[str], unschedulable: bool) -> None:
    for name in names:
        kube.core.patch_node(name, {"spec": {"unschedulable": True if unschedulable else None}})


@contextmanager
def new_pods_held(kube):
    """Cordon every schedulable node for the block; uncordon those afterwards."""
    names = [n.metadata.name for n in kube.core.list_node().items if not n.spec.unschedulable]
    _set_unschedulable(kube, names, True)
    try:
        yield
    finally:
        _set_unschedulable(kube, names, False)
