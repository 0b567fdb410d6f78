"""Polling with a deadline and a useful failure message."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30, interval: float = 0.2,
             what: str = "condition", describe: Callable[[], str] | None = None) -> T:
    """Call ``predicate`` until it returns something truthy and return that.

    On timeout raise AssertionError naming ``what`` and, if given, the current
    state from ``describe()`` (e.g. the pod's status) so a failure explains itself.
    Exceptions from ``predicate`` propagate (they are bugs, not "not yet")."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\ncurrent state: {describe()}" if describe else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)
