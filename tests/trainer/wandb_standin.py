"""A stand-in for the W&B server: no W&B server can run here, so this one
answers what W&B's own client (wandb 0.31, its `wandb-core` service) sends an
online run, and keeps it for the test to read:

- GraphQL `UpsertBucket` (create or update the run: its name, project, config),
  answered with the run under entity `kubetune-test`;
- GraphQL `CreateRunFiles` (where to upload the run's files), answered with
  upload URLs on this server, and the `PUT`s of those files;
- `POST /files/<entity>/<project>/<run>/file_stream`: the history rows, the
  summary and the console, as the run goes.

Anything else (the client's own telemetry) is accepted and ignored. What a
real server would check beyond the API key's presence, it does not.
"""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ENTITY = "kubetune-test"


class WandbStandIn:
    def __init__(self):
        self.runs: dict[str, dict] = {}  # run id -> the newest UpsertBucket variables
        self.history: list[dict] = []  # rows of wandb-history.jsonl, in the order they came
        self.uploaded: dict[str, bytes] = {}
        self.api_keys: set[str] = set()  # the keys the client authenticated with
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="wandb-stand-in", daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ answers

    def _graphql(self, request: dict) -> dict:
        variables = request.get("variables") or {}
        if request.get("operationName") == "UpsertBucket":
            with self._lock:
                self.runs.setdefault(variables["name"], {}).update({k: v for k, v in variables.items() if v is not None})
            return {"upsertBucket": {"inserted": True, "bucket": {
                "id": f"run:{variables['name']}", "name": variables["name"], "displayName": variables.get("displayName"),
                "sweepName": None, "historyLineCount": 0, "config": None,
                "project": {"id": f"project:{variables['project']}", "name": variables["project"],
                            "entity": {"id": f"entity:{ENTITY}", "name": ENTITY}}}}}
        if request.get("operationName") == "CreateRunFiles":
            return {"createRunFiles": {"runID": f"run:{variables['run']}", "uploadHeaders": [],
                                       "files": [{"name": name, "uploadUrl": f"{self.url}/upload/{variables['run']}/{name}"}
                                                 for name in variables["files"]]}}
        return {}

    def _file_stream(self, body: dict) -> None:
        history = (body.get("files") or {}).get("wandb-history.jsonl") or {}
        with self._lock:
            self.history += [json.loads(line) for line in history.get("content") or []]

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self, payload: dict | None = None) -> None:
                out = json.dumps(payload or {}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def _note_key(self) -> None:
                auth = self.headers.get("Authorization") or ""
                if auth.startswith("Basic "):
                    user, _, key = base64.b64decode(auth[6:]).decode().partition(":")
                    with standin._lock:
                        standin.api_keys.add(key)

            def do_POST(self):
                body = self._body()
                if self.path.startswith("/graphql"):
                    self._note_key()
                    self._answer({"data": standin._graphql(json.loads(body))})
                elif self.path.startswith("/files/") and self.path.endswith("/file_stream"):
                    self._note_key()
                    standin._file_stream(json.loads(body))
                    self._answer({"exitcode": None, "limits": {}})
                else:
                    self._answer()

            def do_PUT(self):
                body = self._body()
                if self.path.startswith("/upload/"):
                    with standin._lock:
                        standin.uploaded[self.path.removeprefix("/upload/")] = body
                self._answer()

        return Handler
