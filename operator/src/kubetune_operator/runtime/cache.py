"""What the watches have shown, for the workers to read without asking the API server.

Kopf delivers watch events on its event loop; the workers run in threads. Each
watched object is written here (a slim copy: only what status derivation
needs) where Kopf hands it over, and dropped on DELETED; readers get snapshots
under a lock. Stored bodies are never mutated, only replaced, so a snapshot
stays valid after the lock is released.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable


class ObjectCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # watch kind -> owner key -> {object name: slim body}; by kind first, so
        # reading one kind of a namespace never walks the others
        self._objects: dict[str, dict[Hashable, dict[str, dict]]] = {}

    def put(self, kind: str, key: Hashable, name: str, body: dict) -> None:
        with self._lock:
            self._objects.setdefault(kind, {}).setdefault(key, {})[name] = body

    def drop(self, kind: str, key: Hashable, name: str) -> None:
        with self._lock:
            of_kind = self._objects.get(kind, {})
            found = of_kind.get(key)
            if found is not None:
                found.pop(name, None)
                if not found:
                    del of_kind[key]

    def all(self, kind: str, key: Hashable) -> list[dict]:
        """Every object of `kind` under `key`, as last seen."""
        with self._lock:
            return list(self._objects.get(kind, {}).get(key, {}).values())

    def one(self, kind: str, key: Hashable) -> dict | None:
        """The object of `kind` under `key` (for kinds with one per key), or None."""
        with self._lock:
            found = self._objects.get(kind, {}).get(key)
            return next(iter(found.values()), None) if found else None

    def in_namespace(self, kind: str, namespace: str) -> list[dict]:
        """Every object of `kind` whose owner key is in `namespace` (for a
        controller whose key is not the objects' own, e.g. a serving pool)."""
        with self._lock:
            return [body for key, found in self._objects.get(kind, {}).items() if key[0] == namespace
                    for body in found.values()]

    def entries(self, kind: str) -> list[tuple[Hashable, str, dict]]:
        """(owner key, name, body) of every object of `kind` (a resync compares them with a listing)."""
        with self._lock:
            return [(key, name, body) for key, found in self._objects.get(kind, {}).items() for name, body in found.items()]

    def get(self, kind: str, key: Hashable, name: str) -> dict | None:
        with self._lock:
            return self._objects.get(kind, {}).get(key, {}).get(name)
