"""Cold vs warm time to the first training step of a real tiny sweep trial.

Two trials of one sweep on the tiny model, one after the other, as the
operator renders them (the sweep's shared prefix in `shared`): the first
measures the base model (the sweep's cold trial), the second reuses that
measurement (a warm trial). The time is from starting the trainer process to
its first `step 1/` line (imports, model and data load, the base evaluation,
the first optimizer step). Used by bench/sweep_bench.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIRST_STEP = re.compile(r"step 1/\d+")


def _config(root: Path, model: Path, data: Path, trial: str) -> dict:
    from kubetune_operator.api import parse_job
    from kubetune_operator.render.trainer_config import Placement, render_trainer_config

    spec = {"model": {"uri": f"file://{model}"}, "dataset": {"trainUri": f"file://{data}", "evalSplit": 0.1, "maxSeqLength": 64},
            "method": "lora", "resources": {"gpusPerNode": 0},
            "training": {"maxSteps": 2, "logEverySteps": 1, "batchSize": 8, "gradientAccumulationSteps": 1, "gradientCheckpointing": False},
            "evaluation": {"testSplit": 0.1, "metrics": ["exactMatch", "tokenF1"], "maxSamples": 48}}
    job = parse_job({"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": trial}, "spec": spec}).job
    placement = Placement(checkpoint_uri=f"file://{root}/{trial}/checkpoints", output_uri=f"file://{root}/{trial}/output",
                          s3_endpoint=None, s3_region=None, metrics_port=0, shared_uri=f"file://{root}/shared")
    return render_trainer_config(job.spec, namespace="bench", name=trial, placement=placement)


def _time_to_first_step(root: Path, cfg: dict, trial: str) -> float:
    path = root / f"{trial}.json"
    path.write_text(json.dumps(cfg))
    env = {**os.environ, "KUBETUNE_WORKDIR": str(root / trial / "work"), "KUBETUNE_TERMINATION_LOG": str(root / trial / "termination"),
           "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "kubetune_trainer", "--config", str(path)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first, lines = None, []
    for line in proc.stdout:
        lines.append(line)
        if first is None and FIRST_STEP.search(line):
            first = time.monotonic() - started
    if proc.wait() != 0 or first is None:
        raise SystemExit(f"trial {trial} failed (exit {proc.returncode}):\n" + "".join(lines[-30:]))
    return first


def _pair(root: Path, model: Path, data: Path, sweep: str) -> dict:
    """One sweep's first two trials: (cold, warm) seconds to the first step, and the base evaluation's own seconds."""
    here = root / sweep
    here.mkdir()
    times = [_time_to_first_step(here, _config(here, model, data, trial), trial) for trial in ("t000", "t001")]
    summaries = [json.loads((here / trial / "output/metrics.json").read_text()).get("baseEvaluation", {}) for trial in ("t000", "t001")]
    return {"cold_s": times[0], "warm_s": times[1], "base_eval_s": summaries[0].get("seconds"),
            "reused": (summaries[0].get("reused"), summaries[1].get("reused"))}


def cold_vs_warm(pairs: int = 2) -> dict:
    """The median over `pairs` sweeps (each with its own shared prefix) of cold and warm."""
    from statistics import median

    from kubetune_trainer.testing.tiny_model import make_tiny_dataset, make_tiny_model

    with tempfile.TemporaryDirectory(prefix="kt-first-step-") as tmp:
        root = Path(tmp)
        model = make_tiny_model(root / "model")
        data = make_tiny_dataset(root / "train.jsonl", n=192)
        runs = [_pair(root, model, data, f"sweep{i}") for i in range(pairs)]
    if any(r["reused"] != (False, True) for r in runs):
        raise SystemExit(f"expected the second trial of each sweep to reuse the first one's base evaluation: {runs}")
    return {"cold_s": median(r["cold_s"] for r in runs), "warm_s": median(r["warm_s"] for r in runs),
            "base_eval_s": median(r["base_eval_s"] for r in runs), "runs": runs}
