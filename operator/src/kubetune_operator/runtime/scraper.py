"""Reading trainers' /metrics without letting a trainer hold the operator.

A trainer pod runs a tenant's code: its /metrics endpoint may answer slowly,
one byte at a time, with gigabytes, with a redirect to somewhere inside the
cluster, or with text no parser accepts. So:

- `fetch` is a plain HTTP/1.0 GET on a raw socket with one deadline for the
  whole exchange (connect, headers, body: a trickle cannot stretch it), a size
  cap, and no redirects (anything but 200 is an error);
- the fetch and the parse run on `Scraper`'s own threads, never on the work
  queue's: a pass only asks for a scrape and takes the last result, so the
  workers that create Jobs and write status never wait on a trainer;
- each namespace has a share of those threads (one scrape in flight at a
  time by default): one namespace's slow pods delay only its own scrapes;
- whatever goes wrong is a failed scrape (`ScrapeResult.error`): the next
  pass keeps the status it had and says why in the log and a metric.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

MAX_BYTES = 1 << 20  # a trainer's /metrics is a few KiB; 1 MiB is generous


class ScrapeError(Exception):
    """Why a scrape gave nothing usable (said in the log, never in status)."""


def fetch(host: str, port: int, path: str, deadline_s: float, max_bytes: int = MAX_BYTES,
          clock: Callable[[], float] = time.monotonic) -> str:
    """The body of `GET http://host:port/path`, within `deadline_s` all told."""
    deadline = clock() + deadline_s

    def remaining() -> float:
        left = deadline - clock()
        if left <= 0:
            raise ScrapeError(f"no complete answer within {deadline_s:g}s")
        return left

    try:
        with socket.create_connection((host, port), timeout=remaining()) as sock:
            sock.settimeout(remaining())
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n".encode())
            data = bytearray()
            while True:
                sock.settimeout(remaining())
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > max_bytes + 16384:  # the body's cap, with room for the headers
                    raise ScrapeError(f"more than {max_bytes} bytes")
    except TimeoutError:  # the last read's timeout is what was left of the deadline
        raise ScrapeError(f"no complete answer within {deadline_s:g}s") from None
    except OSError as exc:
        raise ScrapeError(f"{type(exc).__name__}: {exc}") from None
    return _body(bytes(data), max_bytes)


def _body(data: bytes, max_bytes: int) -> str:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ScrapeError("no complete HTTP response")
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/"):
        raise ScrapeError("not an HTTP response")
    if status[1] != b"200":
        # Redirects included: the operator goes nowhere a trainer points it.
        raise ScrapeError(f"HTTP {status[1].decode('ascii', 'replace')[:3]}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = _unchunk(body)
    if len(body) > max_bytes:
        raise ScrapeError(f"more than {max_bytes} bytes")
    return body.decode("utf-8", "replace")


def _unchunk(body: bytes) -> bytes:
    out, rest = bytearray(), body
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            raise ScrapeError("malformed chunked body") from None
        if not sep or size == 0:
            return bytes(out)
        out += rest[:size]
        rest = rest[size + 2:]


@dataclass(frozen=True)
class ScrapeResult:
    at: float  # the clock when it finished
    value: Any = None  # what `parse` made of the body
    error: str | None = None


class Scraper:
    """Scrapes on threads of its own, at most `per_namespace` at once per
    namespace; finished results wait for the next pass of their key."""

    def __init__(self, parse: Callable[[str], Any], on_done: Callable[[Hashable], None], *, workers: int = 4,
                 per_namespace: int = 1, deadline_s: float = 2.0, max_bytes: int = MAX_BYTES,
                 clock: Callable[[], float] = time.monotonic, fetcher: Callable[..., str] = fetch):
        self.parse, self.on_done = parse, on_done
        self.per_namespace, self.deadline_s, self.max_bytes = per_namespace, deadline_s, max_bytes
        self.clock, self.fetcher = clock, fetcher
        self._pool = ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="kubetune-scrape")
        self._lock = threading.Lock()
        self._in_flight: dict[Hashable, str] = {}  # key -> its namespace
        self._results: dict[Hashable, ScrapeResult] = {}

    def request(self, key: tuple, host: str, port: int, path: str = "/metrics") -> bool:
        """Start a scrape of `key` (namespace first); False when one is in flight
        for it, or its namespace's share is taken (asked again next interval)."""
        namespace = key[0]
        with self._lock:
            if key in self._in_flight or sum(ns == namespace for ns in self._in_flight.values()) >= self.per_namespace:
                return False
            self._in_flight[key] = namespace
        self._pool.submit(self._run, key, host, port, path)
        return True

    def take(self, key: Hashable) -> ScrapeResult | None:
        with self._lock:
            return self._results.pop(key, None)

    def busy(self, namespace: str) -> int:
        with self._lock:
            return sum(ns == namespace for ns in self._in_flight.values())

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._results.pop(key, None)

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, key: Hashable, host: str, port: int, path: str) -> None:
        try:
            value = self.parse(self.fetcher(host, port, path, self.deadline_s, self.max_bytes))
            result = ScrapeResult(self.clock(), value=value)
        except ScrapeError as exc:
            result = ScrapeResult(self.clock(), error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a parser's any error is a failed scrape, never a failed pass
            result = ScrapeResult(self.clock(), error=f"unreadable metrics: {type(exc).__name__}: {str(exc)[:200]}")
        with self._lock:
            self._in_flight.pop(key, None)
            self._results[key] = result
        self.on_done(key)
