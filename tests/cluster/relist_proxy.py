"""A STAND-IN for a network gap and an etcd compaction between the operator
and the real API server, for tests/cluster/test_hostile_tenant.py.

The operator talks plain HTTP to this proxy on 127.0.0.1, which forwards every
request to the real API server (TLS, with the credentials of the kubeconfig it
is given: the operator's token).
`partition()` stops delivering watch events (they are dropped, as on a broken
connection); `compact()` ends every open watch and, as the API server does for
a resourceVersion older than the last compaction, answers each watch that
resumes from an older resourceVersion with `410 Gone`: the client lists again.
What was deleted in the gap then gets no DELETED event. The real API server
only does this after a compaction outran its watch cache, which a test cannot
bring about on demand.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

GONE = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                    "message": "too old resource version (compacted)", "reason": "Expired", "code": 410}}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "proxy-connection", "upgrade"}


class RelistProxy:
    def __init__(self, kubeconfig: str):
        config = yaml.safe_load(Path(kubeconfig).read_text())
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        server = urlsplit(cluster["server"])
        self.upstream = (server.hostname, server.port or 443)
        self.tls = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self.auth = {"Authorization": f"Bearer {user['token']}"} if user.get("token") else {}
        if not self.auth:
            self.tls.load_cert_chain(user["client-certificate"], user["client-key"])
        self.lock = threading.Lock()
        self.generation = 0  # compact() ends every watch of an older generation
        self.partitioned = False
        self.compacted_at = 0  # watches resuming from a resourceVersion below this get 410
        self.watches: dict[int, tuple[int, http.client.HTTPSConnection]] = {}
        self.lists_after_compaction: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                proxy.forward(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kubeconfig(self, path: Path) -> str:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "proxy",
            "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}]}))
        return str(path)

    # ------------------------------------------------------------------ what a test does

    def partition(self) -> None:
        """Watch events stop reaching the operator (its other requests still go through)."""
        self.partitioned = True

    def compact(self, resource_version: int) -> None:
        """End every open watch; a watch resuming below `resource_version` gets 410 Gone."""
        with self.lock:
            self.compacted_at, self.partitioned = resource_version, False
            self.generation += 1
            self.lists_after_compaction.clear()
            open_watches = list(self.watches.values())
        for _, conn in open_watches:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except (OSError, AttributeError):
                pass

    def stop(self) -> None:
        self.server.shutdown()

    # ------------------------------------------------------------------ forwarding

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        parts = urlsplit(handler.path)
        query = parse_qs(parts.query)
        watching = query.get("watch") == ["true"]
        since = (query.get("resourceVersion") or [""])[0]
        if watching and since.isdigit() and int(since) < self.compacted_at:
            self._answer_gone(handler)
            return
        if handler.command == "GET" and not watching and self.compacted_at:
            self.lists_after_compaction.append(parts.path)
        conn = http.client.HTTPSConnection(*self.upstream, context=self.tls, timeout=None if watching else 60)
        headers = {**{k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP | {"authorization"}}, **self.auth}
        conn.request(handler.command, handler.path, body=body, headers=headers)
        response = conn.getresponse()
        handler.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP:
                handler.send_header(key, value)
        if not watching or response.status != 200:
            data = response.read()
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            conn.close()
            return
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        with self.lock:
            generation = self.generation
            self.watches[id(conn)] = (generation, conn)
        try:
            while True:
                try:
                    line = response.readline()
                except OSError:
                    line = b""
                if not line or self.generation != generation:
                    break
                if not self.partitioned:
                    self._chunk(handler, line)
            self._chunk(handler, b"")  # the watch ends, as one the API server closes
        finally:
            with self.lock:
                self.watches.pop(id(conn), None)
            conn.close()

    @staticmethod
    def _chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        handler.wfile.flush()

    def _answer_gone(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        self._chunk(handler, json.dumps(GONE).encode() + b"\n")
        self._chunk(handler, b"")
