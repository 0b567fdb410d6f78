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
from collections.abc import Mapping
from pathlib import Path

from .api import load_manifests
from .render.trainer_config import RenderDefaults, render_trainer_config

TRAINER_PYTHON_ENV = "KUBETUNE_TRAINER_PYTHON"


def build_local_config(job, workdir: Path) -> dict:
    spec = job.spec
    ns = job.metadata.namespace or "default"
    return render_trainer_config(
        spec, namespace=ns, name=job.metadata.name,
        defaults=RenderDefaults(
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
    job = parsed[0].job
    workdir = Path(workdir or ".kubetune") / job.metadata.name
    workdir.mkdir(parents=True, exist_ok=True)
    config = build_local_config(job, workdir)
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
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
        return 1
    # Ctrl-C / SIGTERM reach the trainer as SIGTERM: it checkpoints, then exits 143.
    previous = {s: signal.signal(s, lambda signum, _f: child.send_signal(signal.SIGTERM)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if termination.is_file():
        try:
            result = json.loads(termination.read_text())
            print(f"kubetune run: {result.get('reason')}: {result.get('message')}; outputs: {json.dumps(result.get('output'))}", file=sys.stderr)
        except json.JSONDecodeError:
            pass
    return code
