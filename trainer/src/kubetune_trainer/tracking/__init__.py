"""Experiment tracking that never holds training up.

`open_tracking` starts one `Channel` per tracker the config asks for (W&B or
MLflow, and TensorBoard with tracking.tensorboard), each calling its tracker
on a thread of its own. The loop's callback only queues calls; at the end of
the run `Tracking.close` gives the trackers a deadline to catch up, uploads
the files they wrote locally (TensorBoard's event files, an offline W&B run)
with the outputs and says, in a `TrackingOutcome`, where the run is and
whether tracking was degraded. Only rank 0 tracks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kubetune_contract.tracking import MAX_DEGRADED, TENSORBOARD_DIR, WANDB_DIR, TrackingOutcome

from ..config import redact
from ..storage import Store, put_tree
from .channel import Channel

# What the trackers import (lazily, in their own modules), and the distribution
# that provides each: the trainer image installs and imports every one.
IMPORTS = {
    "mlflow.entities": "mlflow-skinny",
    "mlflow.tracking": "mlflow-skinny",
    "tensorboard": "tensorboard",
    "torch.utils.tensorboard": "tensorboard",  # torch's SummaryWriter needs the tensorboard package
    "wandb": "wandb",
}
# Each HTTP call of a tracker's client; what the end of the run waits for the trackers.
CALL_TIMEOUT_S = 10.0
CLOSE_DEADLINE_S = 20.0
# A failed or stopped run: the pod's grace period is the checkpoint's, not the tracker's.
FAILED_CLOSE_DEADLINE_S = 3.0


@dataclass
class Tracking:
    backend: str
    channels: list[Channel]

    def log(self, step: int, values: dict[str, float]) -> None:
        # NaN and inf are the watchdog's business; trackers refuse or mangle them.
        finite = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if not finite:
            return
        for channel in self.channels:
            channel.submit("log_metrics", step, finite)

    def log_report(self, report_dir: Path) -> None:
        for channel in self.channels:
            if hasattr(channel.tracker, "log_report"):
                channel.submit("log_report", report_dir)

    @property
    def run_url(self) -> str | None:
        url = next((c.tracker.run_url for c in self.channels if c.tracker.run_url), None)
        return redact(url) if url else None

    def close(self, output: Store | None, deadline_s: float = CLOSE_DEADLINE_S, ok: bool = True) -> TrackingOutcome:
        """Each tracker finishes its run (failed unless `ok`) within one deadline,
        all at once; what they wrote locally is uploaded under `output` (None:
        not uploaded, e.g. after a failure, when the store may be what failed)."""
        ends = time.monotonic() + deadline_s
        for channel in self.channels:
            channel.request_close(ok)
        for channel in self.channels:
            channel.wait(max(0.0, ends - time.monotonic()))
        uploaded = {channel.name: uri for channel in self.channels if output is not None and (uri := _upload(channel, output))}
        return TrackingOutcome(backend=self.backend, run_url=self.run_url, files_uri=uploaded.get("wandb"),
                               tensorboard_uri=uploaded.get("tensorboard"), degraded=self.degraded)

    @property
    def degraded(self) -> str | None:
        why = [f"{c.name}: {c.degraded}" + (f" ({c.dropped} calls dropped)" if c.dropped else "")
               for c in self.channels if c.degraded]
        return redact("; ".join(why))[:MAX_DEGRADED] if why else None

    def callback(self):
        from .callback import TrackingCallback

        return TrackingCallback(self)


def _upload(channel: Channel, output: Store) -> str | None:
    """The URI of the files a tracker wrote locally, uploaded under the outputs."""
    local = getattr(channel.tracker, "files_dir", None)
    if local is None or not local.exists():
        return None
    key = f"{WANDB_DIR}/{local.name}" if channel.name == "wandb" else TENSORBOARD_DIR
    try:
        return put_tree(output, local, key)
    except Exception as exc:  # noqa: BLE001 - the run's outputs are written; its tracking files are extra
        channel.degrade(f"uploading {local.name} failed: {type(exc).__name__}: {exc}")
        return None


def open_tracking(cfg, local_dir: Path, on_degrade: Callable[[str], None] | None = None) -> Tracking | None:
    """The trackers `cfg.tracking` asks for, started; None when it asks for none.
    `on_degrade` hears "<tracker>: <why>" as soon as one degrades (the trainer's
    /metrics publishes it, so the operator shows it while training goes on)."""
    config = redact(cfg.to_json())
    trackers = _trackers(cfg, local_dir, config)
    if not trackers:
        return None
    params = flatten(config)
    channels = []
    for tracker in trackers:
        channel = Channel(tracker.name, tracker, on_degrade=on_degrade)
        channel.submit("start")
        channel.submit("log_params", params)
        channels.append(channel)
    return Tracking(backend=cfg.tracking.backend, channels=channels)


def _trackers(cfg, local_dir: Path, config: dict) -> list:
    t, job = cfg.tracking, cfg.job
    project, run_name = t.project or job.namespace, f"{job.namespace}-{job.name}"
    out = []
    if t.backend == "mlflow":
        from .mlflow_tracker import MlflowTracker

        out.append(MlflowTracker(t.uri, project, run_name, {"kubetune.job": f"{job.namespace}/{job.name}", "kubetune.method": cfg.method},
                                 CALL_TIMEOUT_S))
    if t.backend == "wandb":
        from .wandb_tracker import WandbTracker

        out.append(WandbTracker(project=project, run_name=run_name, host=t.uri, offline=t.mode == "offline",
                                local_dir=local_dir / "wandb-run", config=config, timeout_s=CALL_TIMEOUT_S))
    if t.tensorboard:
        from .tensorboard_tracker import TensorboardTracker

        out.append(TensorboardTracker(local_dir / "tensorboard", config))
    return out


def flatten(value, prefix: str = "") -> dict[str, str]:
    """{"training.learningRate": "0.0002", ...}: the resolved config as tracker parameters."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): "null" if value is None else str(value)}
