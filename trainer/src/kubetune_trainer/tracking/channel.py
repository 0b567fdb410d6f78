"""One tracker's calls, run in order on a thread of their own.

The training loop only ever puts a call on a bounded queue (it never waits):
a slow tracker costs the loop nothing, a full queue drops the call. The first
call that fails (the tracker's own client gives up after its short timeout)
marks the channel degraded, and what follows is dropped rather than retried:
one unreachable server costs one timeout, not one per logged step. Closing
waits for what is queued, up to a deadline, then leaves the thread behind (a
daemon: it cannot keep the process alive).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable

from ..config import redact

log = logging.getLogger("kubetune.tracking")

_STOP = object()


class Channel:
    def __init__(self, name: str, tracker: Any, *, capacity: int = 10_000, on_degrade: Callable[[str], None] | None = None):
        self.name = name
        self.tracker = tracker
        self._on_degrade = on_degrade  # told "<name>: <why>" once, from whichever thread degraded it
        self.degraded: str | None = None
        self.dropped = 0
        self._calls: queue.Queue = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._drain, name=f"tracking-{name}", daemon=True)
        self._thread.start()

    def submit(self, method: str, *args: Any) -> None:
        """Queue `tracker.<method>(*args)`; never blocks."""
        if self.degraded:
            self.dropped += 1
            return
        try:
            self._calls.put_nowait((method, args))
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float, ok: bool = True) -> bool:
        self.request_close(ok)
        return self.wait(timeout)

    def request_close(self, ok: bool = True) -> None:
        """The tracker's `finish` is its last call (ok: the run succeeded)."""
        self.submit("finish", ok)
        try:
            self._calls.put_nowait(_STOP)
        except queue.Full:
            pass  # the thread ends with the process

    def wait(self, timeout: float) -> bool:
        """Run what is queued within `timeout` seconds; False, and degraded,
        when the tracker did not get through it in time."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.degrade(f"did not answer within {timeout:g}s")
            return False
        return True

    def _drain(self) -> None:
        while (call := self._calls.get()) is not _STOP:
            method, args = call
            if self.degraded:
                self.dropped += 1
                continue
            try:
                getattr(self.tracker, method)(*args)
            except Exception as exc:  # noqa: BLE001 - any tracker failure degrades tracking, never training
                self.degrade(f"{method} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    def degrade(self, why: str) -> None:
        if self.degraded is None:
            self.degraded = redact(why)  # a URL's user:password never reaches the log or the report
            log.warning("tracking with %s degraded (training goes on without it): %s", self.name, self.degraded)
            if self._on_degrade is not None:
                try:
                    self._on_degrade(f"{self.name}: {self.degraded}")
                except Exception:  # noqa: BLE001 - telling the metrics must not break tracking's own bookkeeping
                    log.exception("could not publish that tracking degraded")
