"""A small raw-JSON Kubernetes REST client for the harness and tests: dicts in,
dicts out with the API's own camelCase keys, no model (de)serialisation,
thread-safe (watches and requests from many threads)."""
from __future__ import annotations

import json
import time
from typing import Any, Iterator
from urllib.parse import urlencode

import urllib3

THROTTLED_RETRIES = 10  # 429s in a row before the harness gives up on a request


class ApiError(Exception):
    def __init__(self, status: int, body: str):
        self.status = status
        try:
            self.message = json.loads(body).get("message", body)
        except ValueError:
            self.message = body
        super().__init__(f"HTTP {status}: {self.message}")


class KubeApi:
    def __init__(self, kubeconfig: str, pool_size: int = 32):
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        self.host = cfg.host.rstrip("/")
        self._http = urllib3.PoolManager(
            maxsize=pool_size, cert_reqs="CERT_REQUIRED", ca_certs=cfg.ssl_ca_cert,
            cert_file=cfg.cert_file, key_file=cfg.key_file,
        )

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None,
                content_type: str = "application/json", timeout: float = 30) -> dict:
        url = self.host + path + (("?" + urlencode(params)) if params else "")
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(1, THROTTLED_RETRIES + 1):
            resp = self._http.request(method, url, body=data, headers={"Content-Type": content_type},
                                      timeout=timeout, retries=False)
            # As client-go does: a 429 (a resource's watch cache re-initialising
            # under load, say) says when to come back; it is no answer yet.
            if resp.status != 429 or attempt == THROTTLED_RETRIES:
                break
            time.sleep(min(float(resp.headers.get("Retry-After") or 1), 5))
        if resp.status >= 400:
            raise ApiError(resp.status, resp.data.decode(errors="replace"))
        return json.loads(resp.data) if resp.data else {}

    def get(self, path: str, **params) -> dict:
        return self.request("GET", path, params=params or None)

    def merge_patch(self, path: str, body: dict) -> dict:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def watch(self, path: str, resource_version: str, timeout_seconds: int = 240) -> Iterator[dict]:
        """Watch events (``{"type", "object"}``) from ``resource_version`` until the
        server ends the stream. Raises ApiError(410) when the version is too old."""
        params = {"watch": "1", "resourceVersion": resource_version,
                  "timeoutSeconds": str(timeout_seconds), "allowWatchBookmarks": "true"}
        resp = self._http.request("GET", f"{self.host}{path}?{urlencode(params)}",
                                  preload_content=False, timeout=urllib3.Timeout(connect=5, read=timeout_seconds + 30),
                                  retries=False)
        try:
            if resp.status >= 400:
                raise ApiError(resp.status, resp.read().decode(errors="replace"))
            buffer = b""
            for chunk in resp.stream(65536):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            status = event["object"]
                            raise ApiError(status.get("code", 500), json.dumps(status))
                        yield event
        finally:
            resp.release_conn()
