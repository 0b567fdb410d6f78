"""Helpers for the trainer tests: MinIO control, configs, running the trainer
as a real process (`python -m kubetune_trainer --config ...`) as the pod does."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import procs

REPO = Path(__file__).resolve().parents[2]
ACCESS_KEY, SECRET_KEY = "kubetune-test", "kubetune-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- MinIO


def minio_binary() -> Path:
    binary = procs.setup_output("KUBETUNE_TOOLS_BIN", REPO / "hack/cluster-tools/build.sh") / "minio"
    if not binary.exists():
        pytest.fail(f"minio not built by hack/cluster-tools/build.sh (looked for {binary})")
    return binary


@dataclass
class Minio:
    binary: Path
    data: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1"}

    def start(self) -> None:
        env = {**os.environ, "MINIO_ROOT_USER": ACCESS_KEY, "MINIO_ROOT_PASSWORD": SECRET_KEY, "MINIO_BROWSER": "off"}
        self.proc = subprocess.Popen([str(self.binary), "server", "--quiet", "--address", f"127.0.0.1:{self.port}", str(self.data)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.endpoint}/minio/health/live", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("minio did not become ready")

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                            region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))


# --------------------------------------------------------------------------- running the trainer


# Sections of the FineTuneJob spec (merged into the spec before rendering) and
# of the trainer config only (merged into the rendered config).
SPEC_SECTIONS = ("model", "dataset", "method", "objective", "preference", "kto", "grpo", "lora", "quantization", "training",
                 "distributed", "checkpoint", "output", "resources", "evaluation", "tracking", "credentials")
CONFIG_SECTIONS = ("metrics", "watchdog")
CHECKPOINT_SPEC_FIELDS = ("uri", "everySteps", "keepLast")  # the rest of `checkpoint` is the trainer's own


def _merge(into: dict, section: str, value) -> None:
    if isinstance(value, dict) and isinstance(into.get(section), dict):
        into[section] = {**into[section], **value}
    else:
        into[section] = value


def render_config(spec: dict, root: Path, name: str = "tiny", namespace: str = "test", **config_over) -> dict:
    """A FineTuneJob spec rendered by the operator's own renderer, as the trainer
    receives it; unnamed checkpoint/output locations are file:// directories under
    `root`. `config_over` merges per section into the rendered config."""
    from kubetune_operator.api import parse_job
    from kubetune_operator.render.trainer_config import Placement, render_trainer_config

    parsed = parse_job({"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name}, "spec": spec})
    assert not parsed.problems, parsed.problems
    placement = Placement(checkpoint_uri=f"file://{root}/checkpoints", output_uri=f"file://{root}/output",
                          s3_endpoint=None, s3_region=None, metrics_port=0)
    cfg = render_trainer_config(parsed.job.spec, namespace=namespace, name=name, placement=placement)
    for section, value in config_over.items():
        _merge(cfg, section, value)
    return cfg


def base_config(model_dir: Path, train: Path, **over) -> dict:
    """A small, fast LoRA job on the tiny model, rendered as the operator renders it.

    `over` merges per section: spec sections into the spec (for `checkpoint`, its
    uri/everySteps/keepLast), the trainer-only ones (metrics, watchdog,
    checkpoint upload knobs) into the rendered config. Checkpoints and
    outputs go under the dataset's directory (the test's tmp dir) unless named:
    two runs of one test that leave them unnamed share them.
    """
    spec = {
        "model": {"uri": f"file://{model_dir}"},
        "dataset": {"trainUri": f"file://{train}", "evalSplit": 0.1, "maxSeqLength": 64},
        "method": "lora",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        # Accumulation 1 and no gradient checkpointing (the spec defaults to 4 and
        # true): the tests' step counts and speed were set for these.
        "training": {"maxSteps": 40, "learningRate": 0.003, "batchSize": 8, "logEverySteps": 5, "warmupRatio": 0.0, "seed": 7,
                     "gradientAccumulationSteps": 1, "gradientCheckpointing": False},
        "checkpoint": {"everySteps": 20, "keepLast": 2},
        "resources": {"gpusPerNode": 0},
    }
    config_over: dict = {}
    for section, value in over.items():
        if section == "checkpoint":
            _merge(spec, section, {k: v for k, v in value.items() if k in CHECKPOINT_SPEC_FIELDS})
            config_over[section] = {k: v for k, v in value.items() if k not in CHECKPOINT_SPEC_FIELDS}
        elif section in SPEC_SECTIONS:
            _merge(spec, section, value)
        elif section in CONFIG_SECTIONS:
            config_over[section] = value
        else:
            raise KeyError(f"base_config: unknown section {section!r}")
    return render_config(spec, train.parent, **config_over)


def train_in_process(cfg: dict, root: Path) -> tuple[int, dict]:
    """The trainer's `main` in this process (no pod, no subprocess: the fixture
    of tests that need the trained model's objects, not the process's life),
    working under `root`; its exit code and termination message."""
    from kubetune_trainer.__main__ import main
    from kubetune_trainer.config import parse_config

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUBETUNE_WORKDIR", str(root / "work"))
        mp.setenv("KUBETUNE_TERMINATION_LOG", str(root / "termination.json"))
        code = main(parse_config(cfg))
    return code, json.loads((root / "termination.json").read_text())


def load_script(path: Path, name: str):
    """A script that is not a package (an example's generator) as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def output_dir(cfg: dict) -> Path:
    """The local directory of a file:// output.uri."""
    return Path(cfg["output"]["uri"].removeprefix("file://"))


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@dataclass
class TrainerProcess:
    proc: subprocess.Popen
    log: Path
    termination: Path

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            raise

    def kill(self, sig=signal.SIGKILL) -> None:
        """SIGKILL: every process of the run at once, as a container kill does
        (torchrun's workers run in sessions of their own). Other signals go to
        the launcher only, as the kubelet sends them to PID 1."""
        if sig != signal.SIGKILL:
            os.kill(self.proc.pid, sig)
            return
        for pid in [self.proc.pid, *_descendants(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def result(self) -> dict:
        return json.loads(self.termination.read_text())


def start_trainer(cfg: dict, workdir: Path, *, torchrun: int = 0, env: dict | None = None) -> TrainerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.json"
    config.write_text(json.dumps(cfg))
    termination = workdir / "termination.json"
    termination.unlink(missing_ok=True)
    log = workdir / "trainer.log"
    full_env = {**os.environ, "KUBETUNE_WORKDIR": str(workdir / "work"), "KUBETUNE_TERMINATION_LOG": str(termination),
                "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, "-m", "kubetune_trainer", "--config", str(config)]
    if torchrun:
        full_env["MASTER_PORT"] = str(free_port())
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={torchrun}",
               f"--master-port={full_env['MASTER_PORT']}", "-m", "kubetune_trainer", "--config", str(config)]
    fh = log.open("w")
    proc = subprocess.Popen(cmd, env=full_env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    return TrainerProcess(proc, log, termination)


def wait_for(predicate, timeout: float, what: str, proc: TrainerProcess | None = None, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"trainer exited ({proc.proc.returncode}) before {what}:\n{proc.output()[-3000:]}")
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{proc.output()[-3000:]}" if proc else ""))


def committed_steps(bucket_client, bucket: str, prefix: str) -> list[int]:
    keys = []
    for page in bucket_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(int(k.split("step-")[1].split("/")[0]) for k in keys if k.endswith("/COMMITTED.json"))
