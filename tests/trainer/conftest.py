"""Fixtures for the trainer tests: the tiny model (built once per session), a
local MinIO we can stop and restart. The real MLflow server (`mlflow_server`) and
the tracker that never answers (`silent_server`) are in tests/harness/mlflow.py.
Helpers live in tests/trainer/helpers.py."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from .helpers import Minio, free_port, minio_binary

# DeepSpeed compiles its CPU ops once (~100 s); keep them across sessions.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache/kubetune/torch_extensions"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from kubetune_trainer.testing.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def dataset(tmp_path):
    """dataset(fmt, n=192, name=None) → a JSONL path of the lookup task."""
    from kubetune_trainer.testing.tiny_model import make_tiny_dataset

    def make(fmt: str = "completion", n: int = 192, name: str | None = None) -> Path:
        return make_tiny_dataset(tmp_path / (name or f"{fmt}.jsonl"), fmt, n)

    return make


@pytest.fixture(scope="session")
def minio(tmp_path_factory):
    m = Minio(minio_binary(), tmp_path_factory.mktemp("minio"), free_port())
    m.start()
    yield m
    m.stop()


@pytest.fixture
def bucket(minio, monkeypatch):
    """A fresh bucket; AWS_* env points this process (and children) at MinIO."""
    name = f"kt-{uuid.uuid4().hex[:10]}"
    minio.client().create_bucket(Bucket=name)
    for k, v in minio.env().items():
        monkeypatch.setenv(k, v)
    return name


@pytest.fixture
def launch():
    """start_trainer(...) whose processes are killed at teardown if a test left them running."""
    from .helpers import start_trainer

    started = []

    def start(*args, **kwargs):
        proc = start_trainer(*args, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.kill()
            proc.proc.wait()

