"""A vLLM server started directly (not through the cluster), from the cached vLLM
environment (``hack/vllm-env.sh``: vLLM's CPU build apart from the development
venv, whose transformers it cannot share): for tests and benchmarks that need
vLLM itself rather than the operator's Deployment (that one runs the test-only
vLLM image on the node).

``VllmServer(model_dir, adapters={"name": dir}).start()``; ``url``; ``stop()``.
"""
from __future__ import annotations

import functools
import os
import time
import urllib.request
from pathlib import Path

from . import procs

REPO = Path(__file__).resolve().parents[2]
VLLM_VENV_ENV = "KUBETUNE_VLLM_VENV"
# For this machine: a 1 GiB KV cache, and OpenMP threads left to the scheduler
# (vLLM's default pins each server's worker to core 0: two servers side by
# side would share one core).
VLLM_CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}


@functools.cache
def vllm_venv() -> Path:
    """The cached vLLM environment (installed on first use)."""
    return procs.setup_output(VLLM_VENV_ENV, REPO / "hack/vllm-env.sh")

START_TIMEOUT = 900  # about a minute on an idle 2-core machine, several when it is shared


class VllmServer:
    def __init__(self, model: Path, *, adapters: dict[str, Path] | None = None, max_lora_rank: int = 16,
                 served_name: str = "base", log_path: Path, extra_args: list[str] | None = None):
        self.model, self.adapters, self.max_lora_rank = Path(model), dict(adapters or {}), max_lora_rank
        self.served_name, self.log_path, self.extra_args = served_name, Path(log_path), list(extra_args or [])
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def argv(self) -> list[str]:
        venv = vllm_venv()
        args = [str(venv / "bin/python"), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
                "--served-model-name", self.served_name, "--dtype=float32", "--max-model-len=256",
                "--host", "127.0.0.1", "--port", str(self.port), *self.extra_args]
        if self.adapters:
            args += ["--enable-lora", "--max-loras", str(len(self.adapters)), "--max-lora-rank", str(self.max_lora_rank),
                     "--lora-modules", *(f"{name}={path}" for name, path in self.adapters.items())]
        return args

    def start(self, timeout: float = START_TIMEOUT) -> "VllmServer":
        env = {**os.environ, **VLLM_CPU_ENV}
        self.proc = procs.spawn(self.argv(), self.log_path, env=env, die_with_parent=True)
        procs.wait_until(self._healthy, timeout, "vllm", self.proc, self.log_path)
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        # The whole group even when the API server has exited already: its
        # engine-core processes outlive it (a crashed server left them running).
        if self.proc is not None:
            procs.stop_group(self.proc.pid)
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> "VllmServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until_metrics(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=2) as response:
                if b"vllm:num_requests_running" in response.read():
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no vLLM metrics at {url}/metrics after {timeout}s")
