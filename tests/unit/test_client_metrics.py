"""Where a request's time goes, as the operator's metrics say it (what
`make bench-operator` reads to tell a throttled client from a busy API server):
the seconds spent waiting for the client's QPS budget, and each request's round
trip per kind and verb. The clock and the sleep are fakes: nothing here sleeps."""

from __future__ import annotations

from kubetune_operator import metrics
from kubetune_operator.k8s import Kube, RateLimiter


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Answering:
    status = 200

    def read(self) -> bytes:
        return b'{"kind": "Job"}'


class ApiServer:
    def param_serialize(self, method, resource_path, query_params, header_params, body, auth_settings):
        return method, resource_path, header_params, body, None

    def call_api(self, method, url, header_params, body, _request_timeout):
        return Answering()


def _sample(name: str, labels: dict | None = None) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_the_limiter_says_how_long_a_request_waited_for_its_budget():
    fake = FakeTime()
    limiter = RateLimiter(qps=10, burst=2, clock=fake, sleep=fake.sleep)
    assert [limiter.acquire(), limiter.acquire()] == [0.0, 0.0]  # the burst is saved up
    assert limiter.acquire() == 0.1 and fake.slept == [0.1]  # then one token every 1/qps seconds
    fake.now += 1.0  # idle: tokens refill up to the burst
    assert [limiter.acquire(), limiter.acquire()] == [0.0, 0.0] and limiter.acquire() > 0


def test_a_throttled_request_counts_its_wait_and_every_request_its_round_trip():
    fake = FakeTime()
    kube = Kube(ApiServer(), qps=10, burst=1)
    kube.limiter = RateLimiter(qps=10, burst=1, clock=fake, sleep=fake.sleep)
    throttled = _sample("kubetune_operator_client_throttle_seconds_total")
    timed = _sample("kubetune_operator_api_request_duration_seconds_count", {"kind": "Job", "verb": "POST"})
    kube.request("POST", "/apis/batch/v1/namespaces/ns/jobs", {"kind": "Job"})  # the saved-up token
    assert _sample("kubetune_operator_client_throttle_seconds_total") == throttled
    kube.request("POST", "/apis/batch/v1/namespaces/ns/jobs", {"kind": "Job"})  # waits 1/qps
    assert round(_sample("kubetune_operator_client_throttle_seconds_total") - throttled, 6) == 0.1
    assert _sample("kubetune_operator_api_request_duration_seconds_count", {"kind": "Job", "verb": "POST"}) == timed + 2
