"""A real MLflow tracking server for the tests, from the environment
hack/mlflow-env.sh installs once (the server is not in the development venv:
the trainer carries only MLflow's client). One server per test session, a
fresh experiment per test; artifacts are served through the server itself
(`--serve-artifacts`, MLflow's default), as a cluster's MLflow serves them.
And a tracker that does not answer: a socket that listens and never replies."""

from __future__ import annotations

import functools
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import procs

REPO = Path(__file__).resolve().parents[2]
MLFLOW_VENV_ENV = "KUBETUNE_MLFLOW_VENV"


@functools.lru_cache(maxsize=1)
def mlflow_venv() -> Path:
    return procs.setup_output(MLFLOW_VENV_ENV, REPO / "hack/mlflow-env.sh")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class MlflowServer:
    root: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    # Loopback for local trainers; the host end of the node's link for pods.
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 120) -> None:
        self.port = self.port or _free_port(self.host)
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [str(mlflow_venv() / "bin/mlflow"), "server", "--host", self.host, "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}", "--artifacts-destination", str(self.root / "artifacts")]
        if self.host != "127.0.0.1":
            # MLflow answers 403 ("DNS rebinding") to a Host header outside
            # localhost and the private ranges; the node's link is neither.
            cmd += ["--allowed-hosts", f"{self.host},{self.host}:{self.port}"]
        log = (self.root / "server.log").open("w")
        self.proc = subprocess.Popen(cmd, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.proc.returncode}): {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("mlflow server did not become ready")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.url)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One real MLflow server for the whole session's local trainers (loopback)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster_mlflow_server(tmp_path_factory, control_plane):
    """A real MLflow server trainer pods reach: on the host end of the node's
    link, like the API server and MinIO."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-cluster"), host=control_plane.network.host_ip)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


class SilentServer:
    """Accepts TCP connections and never answers: a tracker that "does not
    answer", not one that refuses at once. It keeps what each connection sent
    (`requests`: the first line of each request), so a test sees how often a
    client asked."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.received: list[bytes] = []  # what each connection sent, in the order they came
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, name="silent-server", daemon=True).start()

    @property
    def requests(self) -> list[str]:
        with self._lock:
            return [data.split(b"\r\n", 1)[0].decode(errors="replace") for data in self.received if data]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._open.append(conn)
                self.received.append(b"")
                index = len(self.received) - 1
            threading.Thread(target=self._read, args=(conn, index), daemon=True).start()

    def _read(self, conn: socket.socket, index: int) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return  # the client gave up
            with self._lock:
                self.received[index] += data

    def close(self) -> None:
        self.sock.close()
        with self._lock:
            for conn in self._open:
                conn.close()
