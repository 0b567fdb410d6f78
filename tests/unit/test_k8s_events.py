"""Events leave the pass: `Kube.event` hands them to one poster thread with a
request budget of its own, so a reconcile never waits for an Event and a
burst's Events do not use up the requests its creates and status writes need."""

from __future__ import annotations

import threading

from kubetune_operator.k8s import Kube

OWNER = {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "j", "namespace": "ns", "uid": "u"}}


class Response:
    status = 201

    def read(self) -> bytes:
        return b"{}"


class HeldApiServer:
    """Answers each POST only once the test lets it; records what was posted, in order."""

    def __init__(self, expected: int):
        self.open = threading.Event()
        self.done = threading.Event()
        self.expected = expected
        self.posted: list[tuple[str, str, str]] = []

    def param_serialize(self, method, resource_path, query_params, header_params, body, auth_settings):
        return method, resource_path, header_params, body, None

    def call_api(self, method, url, header_params, body, _request_timeout):
        assert self.open.wait(10), "the test never let the API server answer"
        self.posted.append((method, url, body["reason"]))
        if len(self.posted) == self.expected:
            self.done.set()
        return Response()


def test_an_event_is_posted_by_the_poster_thread_in_order_without_holding_the_caller():
    api = HeldApiServer(expected=2)
    kube = Kube(api, qps=0.01, burst=2)  # the client's own budget: two requests, both spent here
    kube.limiter.acquire()
    kube.limiter.acquire()
    kube.event(OWNER, "Normal", "PhasePending", "New -> Pending")
    kube.event(OWNER, "Normal", "PhaseRunning", "Pending -> Running")
    assert api.posted == []  # both calls returned while the API server holds every request
    api.open.set()
    assert api.done.wait(10)
    assert api.posted == [("POST", "/api/v1/namespaces/ns/events", "PhasePending"), ("POST", "/api/v1/namespaces/ns/events", "PhaseRunning")]
