"""vLLM itself, started directly from the cached vLLM environment (no cluster):
one server for this package, serving the tiny base model with two adapters
trained on different tiny tasks and their merges by `kubetune merge-adapters`.

Task `words`: the code word of each of the first 12 keys (completion rows).
Task `numbers`: the number of each of the last 12 keys. Every adapter is asked
every prompt of both tasks, so an adapter that knows one task answers half.
"""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.harness.vllm import VllmServer

TASK_KEYS = 12
MERGES = ("cat", "ties")


def task_prompts() -> dict[str, list[tuple[str, str]]]:
    """{task: [(prompt, expected first word)]}: one prompt per key of each task
    (the code-word prompts take the training templates in turn), so each task is half."""
    from kubetune_trainer.testing.tiny_model import KEYS, MAPPING, NUMERIC, PROMPTS

    return {"words": [(PROMPTS[i % len(PROMPTS)].format(k=k), MAPPING[k]) for i, k in enumerate(KEYS[:TASK_KEYS])],
            "numbers": [(f"Number for {k}:", str(int(NUMERIC[k]))) for k in KEYS[TASK_KEYS:]]}


def task_rows(task: str) -> list[dict]:
    from kubetune_trainer.testing.tiny_model import KEYS, make_rows

    if task == "words":
        return [r for r in make_rows("completion", 192) if any(k in r["prompt"] for k in KEYS[:TASK_KEYS])]
    return [r for r in make_rows("numeric", 192) if r["prompt"].removeprefix("Number for ").rstrip(":") in KEYS[TASK_KEYS:]]


def _manifest(name: str, model: Path, data: Path) -> dict:
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name},
            "spec": {"model": {"uri": f"file://{model}"}, "dataset": {"trainUri": f"file://{data}", "maxSeqLength": 64},
                     "method": "lora", "lora": {"r": 8},
                     "training": {"maxSteps": 60, "learningRate": 0.003, "batchSize": 8, "gradientAccumulationSteps": 1,
                                  "gradientCheckpointing": False, "logEverySteps": 20},
                     "resources": {"gpusPerNode": 0}}}


def _kubetune(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "kubetune_operator.cli", *args], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"kubetune {' '.join(args)} failed:\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="package")
def serving_assets(tmp_path_factory) -> dict[str, Path]:
    """The tiny base model, the two task adapters (trained side by side by
    `kubetune run`) and their merges (`kubetune merge-adapters`, cat and ties)."""
    from kubetune_trainer.testing.tiny_model import make_tiny_model

    root = tmp_path_factory.mktemp("serving-assets")
    model = make_tiny_model(root / "model")
    jobs = []
    for task in ("words", "numbers"):
        data = root / f"{task}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in task_rows(task)))
        (root / f"{task}.yaml").write_text(yaml.safe_dump(_manifest(task, model, data)))
        jobs.append(("run", str(root / f"{task}.yaml"), "--workdir", str(root / "runs")))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda args: _kubetune(*args), jobs))
    adapters = {task: root / "runs" / task / "output" / "adapter" for task in ("words", "numbers")}
    merges = [("merge-adapters", str(adapters["words"]), str(adapters["numbers"]), "--base", str(model), "--method", m,
               "--name", f"words-numbers-{m}", "-o", str(root / f"merged-{m}")) for m in MERGES]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda args: _kubetune(*args), merges))
    return {"model": model, **adapters, **{m: root / f"merged-{m}" for m in MERGES}}


@pytest.fixture(scope="package")
def vllm_server(serving_assets, tmp_path_factory):
    """One vLLM for the package: the base (`base`) with words, numbers, cat and ties."""
    adapters = {name: serving_assets[name] for name in ("words", "numbers", *MERGES)}
    server = VllmServer(serving_assets["model"], adapters=adapters, max_lora_rank=16,
                        log_path=tmp_path_factory.mktemp("vllm") / "vllm.log")
    with server:
        yield server
