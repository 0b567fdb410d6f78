"""A peer of a multi-node run died: wait to be ended with the attempt instead of
failing on our own.

The rendezvous is static, so when one pod of an attempt fails, the others
cannot go on: their next collective fails within seconds (gloo: "Connection
reset by peer") or hangs (NCCL, a lost node). Failing on their own would make
the Job count one broken attempt once per pod and burn `backoffLimit` that
many times. Instead a survivor waits: the operator sees the failed pod and
evicts the others of that attempt (an eviction is a disruption, which the
Job's pod failure policy does not count), then the Job starts the whole group
again from the newest checkpoint every node committed. Without an operator
(`kubetune run`, a plain torchrun) the wait ends after `PEER_LOSS_WAIT_SECONDS`
and the process fails as it would have.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Callable

log = logging.getLogger("kubetune.peers")

# Longer than the operator takes to notice a failed pod and evict its peers
# (about a second), shorter than anyone would wait for a broken run to end.
PEER_LOSS_WAIT_SECONDS = 120.0
# How transports say that the other end of a collective went away.
_LOST = ("gloo/transport", "connection reset by peer", "connection closed by peer", "nccl communicator was aborted")


def lost_peer(exc: BaseException) -> bool:
    """Whether an exception (or one it was raised from) is a collective that
    failed because another process of the run is gone."""
    seen = 0
    while exc is not None and seen < 10:
        if _is_dist_error(exc) or any(marker in str(exc).lower() for marker in _LOST):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _is_dist_error(exc: BaseException) -> bool:
    try:
        from torch.distributed import DistError
    except ImportError:  # pragma: no cover - torch is in the trainer image
        return False
    return isinstance(exc, DistError)


def wait_to_be_ended(timeout: float = PEER_LOSS_WAIT_SECONDS, event_factory: Callable[[], threading.Event] = threading.Event) -> bool:
    """Block until SIGTERM (True: the attempt was ended for us) or `timeout` (False)."""
    ended = event_factory()
    signal.signal(signal.SIGTERM, lambda signum, frame: ended.set())
    log.warning("a peer of this run is gone; waiting up to %.0fs for the operator to end this attempt", timeout)
    return ended.wait(timeout)
