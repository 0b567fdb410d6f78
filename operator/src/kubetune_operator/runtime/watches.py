"""What a controller watches, declared once: the Kopf handlers, the label
selector the API server filters by, and the cache entry all come from one
`Watch`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

Key = tuple[str, str]  # (namespace, name) of the resource a controller reconciles


def slim(body) -> dict:
    """What status derivation needs of a child; keeps the cache small. Its
    owners' UIDs are kept: a child is ours only when it names our object as
    its controller (a label anyone in the namespace can set)."""
    meta = body["metadata"]
    spec = body.get("spec") or {}
    owners = [{"uid": o.get("uid"), "kind": o.get("kind"), "controller": bool(o.get("controller"))}
              for o in meta.get("ownerReferences") or []]
    return {
        "metadata": {**{k: meta.get(k) for k in ("name", "uid", "annotations", "labels", "creationTimestamp") if meta.get(k) is not None},
                     **({"ownerReferences": owners} if owners else {})},
        "spec": {k: spec.get(k) for k in ("suspend", "replicas") if k in spec},
        "status": dict(body.get("status") or {}),
    }


def whole(body) -> dict:
    """A resource a controller reconciles: everything but Kopf's view of it and
    the API server's field-ownership bookkeeping (managedFields, often larger
    than the spec, and read by nothing here)."""
    kept = {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec", "status")}
    kept["metadata"] = {k: v for k, v in (kept["metadata"] or {}).items() if k != "managedFields"}
    return kept


@dataclass(frozen=True, eq=False)  # compared by identity: one declaration, one watch
class Watch:
    """One resource kind a controller watches. `labels`, when set, are applied by
    the API server (so other objects never reach the operator) and by Kopf; the
    owner key of each object is its namespace and the value of `owner_label`
    (its own name when None)."""

    kind: str  # the cache's name for it, e.g. "pods"
    group: str
    version: str
    plural: str
    labels: dict[str, str] = field(default_factory=dict)
    owner_label: str | None = None
    keep: Callable[[dict], dict] = slim

    @property
    def selector(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.labels.items())

    def key_of(self, namespace: str, name: str, labels: dict) -> Key | None:
        if self.owner_label is None:
            return (namespace, name)
        owner = labels.get(self.owner_label)
        return (namespace, owner) if owner else None
