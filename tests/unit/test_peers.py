"""A survivor of a multi-node attempt recognises a lost peer and waits to be
ended with its attempt (SIGTERM from the eviction) instead of failing on its own."""

from __future__ import annotations

import os
import signal
import threading

import pytest

GLOO_RESET = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
              "[127.0.0.1]:41908: Connection reset by peer. This is typically caused by a remote worker hanging")


def test_a_failed_collective_is_a_lost_peer_and_other_errors_are_not():
    from kubetune_trainer.peers import lost_peer

    assert lost_peer(RuntimeError(GLOO_RESET))
    try:
        try:
            raise RuntimeError(GLOO_RESET)
        except RuntimeError as inner:
            raise ValueError("all_gather failed") from inner
    except ValueError as outer:
        assert lost_peer(outer)  # the transport error is the cause
    assert not lost_peer(RuntimeError("CUDA out of memory"))
    assert not lost_peer(KeyError("input_ids"))


def test_a_dist_error_is_a_lost_peer():
    import torch.distributed as dist

    from kubetune_trainer.peers import lost_peer

    assert lost_peer(dist.DistNetworkError("store went away"))


@pytest.fixture
def restore_sigterm():
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


class Recorded(threading.Event):
    """An Event whose wait returns at once, saying whether it was set (no real
    waiting); with `evict`, SIGTERM arrives while it waits."""

    waited: list = []
    evict = False

    def wait(self, timeout=None):
        Recorded.waited.append(timeout)
        if Recorded.evict:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next line
        return self.is_set()


def test_sigterm_ends_the_wait(restore_sigterm):
    from kubetune_trainer.peers import wait_to_be_ended

    Recorded.waited, Recorded.evict = [], True
    assert wait_to_be_ended(30, event_factory=Recorded) is True
    assert Recorded.waited == [30]


def test_without_an_eviction_the_wait_ends_at_its_timeout(restore_sigterm):
    from kubetune_trainer.peers import PEER_LOSS_WAIT_SECONDS, wait_to_be_ended

    Recorded.waited, Recorded.evict = [], False
    assert wait_to_be_ended(event_factory=Recorded) is False
    assert Recorded.waited == [PEER_LOSS_WAIT_SECONDS]
