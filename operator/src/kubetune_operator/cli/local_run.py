"""`kubetune run job.yaml`: train locally from a FineTuneJob manifest, no cluster.

The trainer config is rendered by the same `render_trainer_config` the operator
uses; only the defaults for unset locations differ (local directories instead
of the operator's bucket). The trainer runs as a child process
(`python -m kubetune_trainer`, or torchrun for gpusPerNode > 1) with its logs
streamed through, and its exit code is returned.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from ..api import load_manifests
from ..render.trainer_config import Placement, render_trainer_config

TRAINER_PYTHON_ENV = "KUBETUNE_TRAINER_PYTHON"


def build_local_config(job, workdir: Path) -> dict:
    spec = job.spec
    ns = job.metadata.namespace or "default"
    return render_trainer_config(
        spec, namespace=ns, name=job.metadata.name,
        placement=Placement(
            checkpoint_uri=f"file://{(workdir / 'checkpoints').resolve()}",
            output_uri=f"file://{(workdir / 'output').resolve()}",
            s3_endpoint=os.environ.get("AWS_ENDPOINT_URL"),
            s3_region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
            metrics_port=int(os.environ.get("KUBETUNE_METRICS_PORT", "9400")),
        ),
    )


def trainer_command(job, config_path: Path, python: str) -> list[str]:
    procs = job.spec.resources.gpus_per_node if job.spec.distributed.nodes == 1 else 1
    if procs > 1 and job.spec.resolved_strategy != "none":
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}",
                "-m", "kubetune_trainer", "--config", str(config_path)]
    return [python, "-m", "kubetune_trainer", "--config", str(config_path)]


def run_local(manifest_path: str | Path, workdir: str | Path | None, extra_env: Mapping[str, str] | None = None) -> int:
    """Render, run the trainer, stream its output; returns the trainer's exit code (2 on a bad manifest)."""
    parsed = load_manifests(manifest_path)
    bad = [p for p in parsed if p.problems]
    for p in bad:
        for problem in p.problems:
            print(problem.render(p.source), file=sys.stderr)
    if bad:
        return 2
    if len(parsed) != 1:
        print(f"{manifest_path}: holds {len(parsed)} FineTuneJobs; kubetune run takes exactly one", file=sys.stderr)
        return 2
    code, _ = run_job(parsed[0].job, Path(workdir or ".kubetune"), extra_env)
    return code


def run_job(job, workdir: Path, extra_env: Mapping[str, str] | None = None,
            watch: Callable[[subprocess.Popen], None] | None = None) -> tuple[int, dict | None]:
    """Run one job's trainer under `workdir/<name>`: (its exit code, its termination
    report or None). `watch(child)` is called about every second while it runs."""
    workdir = workdir / job.metadata.name
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(build_local_config(job, workdir), indent=2, sort_keys=True) + "\n")
    termination = workdir / "termination-log.json"
    termination.unlink(missing_ok=True)
    env = {
        **os.environ,
        "KUBETUNE_NAMESPACE": job.metadata.namespace or "default",
        "KUBETUNE_JOB": job.metadata.name,
        "KUBETUNE_WORKDIR": str((workdir / "work").resolve()),
        "KUBETUNE_TERMINATION_LOG": str(termination.resolve()),
        **(extra_env or {}),
    }
    python = os.environ.get(TRAINER_PYTHON_ENV, sys.executable)
    cmd = trainer_command(job, config_path, python)
    print(f"kubetune run: {' '.join(cmd)} (workdir {workdir})", file=sys.stderr, flush=True)
    try:
        child = subprocess.Popen(cmd, env=env)
    except OSError as exc:
        print(f"kubetune run: cannot start the trainer ({python}): {exc.strerror}", file=sys.stderr)
        return 1, None
    code = _wait(child, watch)
    return code, _report(termination)


def _wait(child: subprocess.Popen, watch) -> int:
    # Ctrl-C / SIGTERM reach the trainer as SIGTERM: it checkpoints, then exits 143.
    previous = {s: signal.signal(s, lambda signum, _f: child.send_signal(signal.SIGTERM)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while watch is not None and child.poll() is None:
            watch(child)
            try:
                child.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
        return child.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _report(termination: Path) -> dict | None:
    try:
        result = json.loads(termination.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    print(f"kubetune run: {result.get('reason')}: {result.get('message')}; outputs: {json.dumps(result.get('output'))}", file=sys.stderr)
    return result
