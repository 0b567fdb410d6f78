"""Errors a controller's pass raises to tell the runtime what retrying can do."""

from __future__ import annotations


class PermanentError(Exception):
    """Retrying cannot help until the resource changes (a spec the API server's
    schema let through but the operator cannot act on, an image not allowed, a
    child object the API server refuses for good). The runtime stops retrying and
    the controller records `reason` and `message` in the resource's conditions."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
