"""An output format that could not be written. The run still succeeds: the
training result stands, and the termination message names the format and the
reason (`exportFailures`), which the operator shows as `Exported=False`."""

from __future__ import annotations


class ExportFailed(Exception):
    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason
