"""Talking to vLLM as a client in the cluster would: there is no kube-proxy here,
so requests go to the ready addresses of the Service's EndpointSlices (what
kube-proxy would route to), never to a pod picked by the test."""
from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field


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
    """Asks one model a prompt over and over, each time at a ready address read
    afresh (as a client behind a Service would be routed), and counts the outcomes."""

    kube: object
    namespace: str
    service: str
    model: str
    prompt: str
    expected: str
    interval: float = 0.5
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    addresses_seen: Counter = field(default_factory=Counter)  # right answers by the address that gave them
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "Poller":
        self._thread = threading.Thread(target=self._run, name="serving-poller", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            addresses = ready_addresses(self.kube, self.namespace, self.service)
            if not addresses:
                self.failures.append(f"{time.strftime('%H:%M:%S')}: no ready endpoint")
            else:
                address = random.choice(addresses)
                try:
                    text = complete(address, self.model, self.prompt, max_tokens=4)
                    if text.strip().split()[:1] != self.expected.split()[:1]:
                        self.failures.append(f"{address}: answered {text!r}, expected {self.expected!r}")
                    else:
                        self.answered += 1
                        self.addresses_seen[address] += 1
                except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} {address}: {type(exc).__name__}: {exc}")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(30)
