"""Reading a trainer's /metrics cannot hold the operator: one deadline for the
whole exchange (a trickle cannot stretch it), a size cap, no redirects, any
parse error a failed scrape; scrapes run on threads of their own with a share
per namespace. Real sockets on loopback; the servers are the hostile pods."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from kubetune_operator.runtime.scraper import ScrapeError, Scraper, fetch
from kubetune_operator.status.progress import read_trainer_metrics

GOOD = b'kubetune_trainer_step{namespace="ns",job="j",rank="0"} 12.0\nkubetune_trainer_total_steps{namespace="ns",job="j",rank="0"} 60.0\n'


class Pod:
    """A listening socket whose every connection is answered by `answer(conn)`; counts connections."""

    def __init__(self, answer):
        self.answer, self.connections = answer, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            conn.recv(4096)
            self.answer(conn, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.fixture
def pod():
    started = []

    def make(answer):
        started.append(Pod(answer))
        return started[-1]

    yield make
    for p in started:
        p.close()


def ok(body: bytes):
    return lambda conn, stop: conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body)


def trickle(conn, stop):
    conn.sendall(b"HTTP/1.0 200 OK\r\n")
    while not stop.wait(0.05):  # one byte at a time, for as long as anyone listens
        conn.sendall(b"x")


def test_a_normal_page_is_read(pod):
    assert fetch("127.0.0.1", pod(ok(GOOD)).port, "/metrics", 2.0) == GOOD.decode()


def test_a_trickle_cannot_stretch_the_deadline(pod):
    started = time.monotonic()
    with pytest.raises(ScrapeError, match="within 0.5s"):
        fetch("127.0.0.1", pod(trickle).port, "/metrics", 0.5)
    assert time.monotonic() - started < 5  # the per-read timeout alone would never have ended it


def test_a_huge_page_is_cut_off(pod):
    def huge(conn, stop):
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
        for _ in range(64):
            conn.sendall(b"#" * 65536)
    with pytest.raises(ScrapeError, match="more than 1024 bytes"):
        fetch("127.0.0.1", pod(huge).port, "/metrics", 5.0, max_bytes=1024)


def test_a_redirect_is_not_followed(pod):
    sink = pod(ok(GOOD))
    redirect = pod(lambda conn, stop: conn.sendall(f"HTTP/1.0 302 Found\r\nLocation: http://127.0.0.1:{sink.port}/\r\n\r\n".encode()))
    with pytest.raises(ScrapeError, match="HTTP 302"):
        fetch("127.0.0.1", redirect.port, "/metrics", 2.0)
    assert sink.connections == 0  # fetch returned: a followed redirect would have connected by now


def test_garbage_and_a_chunked_page(pod):
    with pytest.raises(ScrapeError, match="no complete HTTP response|not an HTTP response"):
        fetch("127.0.0.1", pod(lambda conn, stop: conn.sendall(b"\x00\xff garbage")).port, "/metrics", 2.0)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + f"{len(GOOD):x}\r\n".encode() + GOOD + b"\r\n0\r\n\r\n"
    assert fetch("127.0.0.1", pod(lambda conn, stop: conn.sendall(chunked)).port, "/metrics", 2.0) == GOOD.decode()


def _run_scraper(parse=read_trainer_metrics, **kw):
    done = threading.Event()
    finished = []

    def on_done(key):
        finished.append(key)
        done.set()
    return Scraper(parse, on_done, **kw), finished, done


@pytest.mark.parametrize("body", [b'{"metrics": [1]}', b"kubetune_trainer_step{rank=\"0\"} not-a-number\n", b"[" * 4096])
def test_an_unparseable_page_is_a_failed_scrape_not_an_exception(pod, body):
    scraper, finished, done = _run_scraper()
    assert scraper.request(("ns", "j"), "127.0.0.1", pod(ok(body)).port)
    assert done.wait(10)
    result = scraper.take(("ns", "j"))
    assert result.value is None and result.error.startswith("unreadable metrics")
    scraper.stop()


def test_a_namespace_gets_its_share_and_no_more(pod):
    slow, fast = pod(trickle), pod(ok(GOOD))
    scraper, finished, done = _run_scraper(workers=4, per_namespace=1, deadline_s=30)
    assert scraper.request(("greedy", "a"), "127.0.0.1", slow.port)
    assert not scraper.request(("greedy", "b"), "127.0.0.1", slow.port)  # its namespace's share is taken
    assert not scraper.request(("greedy", "a"), "127.0.0.1", slow.port)  # already in flight
    assert scraper.request(("calm", "c"), "127.0.0.1", fast.port)  # another namespace is not held by it
    assert done.wait(10)
    assert finished == [("calm", "c")] and scraper.take(("calm", "c")).value.values["step"] == 12.0
    assert scraper.busy("greedy") == 1
    slow.close()
    scraper.stop()
