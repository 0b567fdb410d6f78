"""JSON merge patches (RFC 7386) between two status documents: what changed,
and what the API server will store once the patch is applied."""

from __future__ import annotations


def status_patch(old: dict, new: dict) -> dict:
    """The JSON merge patch turning `old` into `new` (None in `new` means absent;
    lists are replaced whole). Empty when nothing changed."""
    patch: dict = {}
    for key in old.keys() - new.keys():
        if old[key] is not None:
            patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if value is None:
            if before is not None:
                patch[key] = None
        elif isinstance(value, dict) and isinstance(before, dict):
            inner = status_patch(before, value)
            if inner:
                patch[key] = inner
        elif value != before:
            patch[key] = value
    return patch


def apply_patch(old: dict, patch: dict) -> dict:
    """`old` with a merge patch applied (what the API server will store)."""
    out = dict(old)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = apply_patch(out[key], value)
        else:
            out[key] = value
    return out
