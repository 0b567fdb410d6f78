"""`routed` (tests/cluster/serving_helpers.py) tells "kube-proxy has not routed
this Service yet" from a real failure: what serving tests wait on between a
ready endpoint in the API and a connection that reaches it."""
from __future__ import annotations

import errno
import socket

import pytest

from tests.cluster.serving_helpers import routed


def test_an_accepted_connection_is_routed():
    with socket.create_server(("127.0.0.1", 0)) as server:
        assert routed(f"127.0.0.1:{server.getsockname()[1]}") is True


def test_a_refused_connection_is_not_routed_yet():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
    assert routed(f"127.0.0.1:{port}") is False  # nothing listens there any more


@pytest.mark.parametrize("code", [errno.ENETUNREACH, errno.EHOSTUNREACH])
def test_an_unreachable_network_is_not_routed_yet(monkeypatch, code):
    def unreachable(*_args, **_kwargs):
        raise OSError(code, "unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    assert routed("198.19.16.112:8000") is False


def test_any_other_error_is_raised(monkeypatch):
    def denied(*_args, **_kwargs):
        raise PermissionError(errno.EACCES, "denied")

    monkeypatch.setattr(socket, "create_connection", denied)
    with pytest.raises(PermissionError):
        routed("198.19.16.112:8000")
