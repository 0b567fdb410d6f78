"""Talking to vLLM as a client in the cluster would: through the Service's
name (`<service>.<namespace>.svc.cluster.local`, answered by CoreDNS with the
ClusterIP) and kube-proxy's routing to a ready pod, never to a pod picked by
the test."""
from __future__ import annotations

import errno
import http.client
import json
import socket
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from tests.harness import coredns
from tests.harness.waiting import wait_for


def ready_addresses(kube, namespace: str, service: str) -> list[str]:
    """`ip:port` of every ready, not terminating endpoint of the Service."""
    slices = kube.raw.get(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                          labelSelector=f"kubernetes.io/service-name={service}")["items"]
    out = []
    for item in slices:
        port = next((p["port"] for p in item.get("ports") or [] if p.get("name") == "http"), None)
        for endpoint in item.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if port and conditions.get("ready") and not conditions.get("terminating"):
                out += [f"{address}:{port}" for address in endpoint.get("addresses") or []]
    return sorted(out)


def serving_pods(kube, namespace: str) -> list[dict]:
    """Every vLLM pod of the namespace (a job's own Deployment's and a pool's)."""
    return kube.raw.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector="app.kubernetes.io/name=kubetune-serving")["items"]


def service_address(kube, dns_ip: str, namespace: str, service: str, timeout: float = 60) -> str:
    """`ip:port` of the Service's name as CoreDNS answers it, once the Service
    has a ready endpoint and kube-proxy routes its ClusterIP to one. The ready
    endpoint in the API comes first; kube-proxy writes its rules after it has
    seen that slice, and until then the node answers a connection to the
    ClusterIP with "network unreachable" (it has no route for the Service range)
    or "connection refused" (a Service whose endpoints it has not seen yet)."""
    wait_for(lambda: ready_addresses(kube, namespace, service), timeout, what=f"a ready endpoint of {service}")
    (port,) = [p["port"] for p in kube.raw.get(f"/api/v1/namespaces/{namespace}/services/{service}")["spec"]["ports"]
               if p.get("name") == "http"]
    address = f"{coredns.resolve(f'{service}.{namespace}.svc.cluster.local', dns_ip)[0]}:{port}"
    wait_for(lambda: routed(address), timeout, what=f"kube-proxy routing {service}'s ClusterIP {address} to a ready pod")
    return address


NOT_ROUTED_YET = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED}


def routed(address: str) -> bool:
    """Whether a TCP connection to `ip:port` is accepted. Only the answers a
    Service not yet routed gives count as "not yet"; any other error is raised."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return True
    except OSError as exc:
        if exc.errno in NOT_ROUTED_YET:
            return False
        raise


def post(address: str, path: str, body: dict, timeout: float = 60) -> dict:
    request = urllib.request.Request(f"http://{address}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def complete(address: str, model: str, prompt: str, max_tokens: int = 6) -> str:
    answer = post(address, "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
    return answer["choices"][0]["text"]


def chat(address: str, model: str, messages: list[dict], max_tokens: int = 6) -> dict:
    return post(address, "/v1/chat/completions", {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0})


def models(address: str) -> list[str]:
    with urllib.request.urlopen(f"http://{address}/v1/models", timeout=10) as response:
        return sorted(m["id"] for m in json.loads(response.read())["data"])


@dataclass
class Poller:
    """Asks one model a prompt over and over through the Service's address, as a
    client would (kube-proxy picks a pod per connection), and counts the right
    answers by the server that gave them (`answers`). Each round is one
    connection: `GET /v1/models`, then the completion; kube-proxy keeps a
    connection on one pod, so the model list names the pod that answered
    (the pods of a pool's rollout serve different lists)."""

    address: str
    model: str
    prompt: str
    expected: str
    interval: float = 0.5
    answers: Counter = field(default_factory=Counter)  # right answers by the answering server's models
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "Poller":
        self._thread = threading.Thread(target=self._run, name="serving-poller", daemon=True)
        self._thread.start()
        return self

    def _ask(self) -> None:
        host, port = self.address.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            connection.request("GET", "/v1/models")
            response = connection.getresponse()
            served = tuple(sorted(m["id"] for m in json.loads(response.read())["data"]))
            if response.will_close:  # a second connection could reach another pod: the answer would not be tied to `served`
                self.failures.append(f"{self.address}: the server closed the connection after /v1/models")
                return
            body = {"model": self.model, "prompt": self.prompt, "max_tokens": 4, "temperature": 0}
            connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            text = json.loads(response.read())["choices"][0]["text"]
        finally:
            connection.close()
        if text.strip().split()[:1] != self.expected.split()[:1]:
            self.failures.append(f"{self.address} (serving {served}): answered {text!r}, expected {self.expected!r}")
        else:
            self.answers[served] += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._ask()
            except (OSError, http.client.HTTPException, KeyError, ValueError) as exc:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {self.address}: {type(exc).__name__}: {exc}")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(30)
