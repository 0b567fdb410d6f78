"""Read a trainer's Prometheus endpoint into `status.progress`, `status.metrics`
and `status.checkpoint`: the operator shows the same numbers Grafana does, and
the checkpoint URI the trainer published (never one rebuilt here)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kubetune_contract import metric_names as m
from prometheus_client.parser import text_string_to_metric_families

# status.metrics as a user reads them (kubectl's LOSS column prints the number as
# stored): this many significant digits, whether the number came from /metrics
# while the job ran or from the termination message once it finished.
SIGNIFICANT_DIGITS = 7

# Gauges read for status, by their short names (without the prefix).
WANTED = {name.removeprefix(m.PREFIX) for name in (
    m.STEP, m.TOTAL_STEPS, m.EPOCH, m.PROGRESS_RATIO, m.ETA_SECONDS, m.LOSS, m.EVAL_LOSS, m.EVAL_STEP, m.TOKENS_PER_SECOND,
    m.LAST_COMMITTED_STEP, m.UP, m.REWARD_MARGIN, m.PREFERENCE_ACCURACY, m.REWARD_MEAN)}


@dataclass
class TrainerReading:
    """One scrape of one rank: finite gauge values by short name, and the URI of
    the newest committed checkpoint as the trainer published it."""

    values: dict[str, float] = field(default_factory=dict)
    checkpoint_uri: str | None = None
    tracking_degraded: str | None = None  # which tracker degraded and why, once one has


def status_number(value: float) -> float:
    """A metric as `status.metrics` keeps it (SIGNIFICANT_DIGITS)."""
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def read_trainer_metrics(text: str, rank: str = "0") -> TrainerReading:
    reading = TrainerReading()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith(m.PREFIX) or sample.labels.get("rank", rank) != rank:
                continue
            if sample.name == m.LAST_COMMITTED_CHECKPOINT_INFO:
                reading.checkpoint_uri = sample.labels.get("uri") or None
                continue
            if sample.name == m.TRACKING_DEGRADED_INFO:
                reading.tracking_degraded = sample.labels.get("reason") or None
                continue
            short = sample.name.removeprefix(m.PREFIX)
            if short in WANTED and math.isfinite(sample.value):
                reading.values[short] = sample.value
    return reading


def format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _progress(values: dict[str, float]) -> dict:
    progress: dict = {}
    if "step" in values:
        progress["step"] = int(values["step"])
    if values.get("total_steps"):
        progress["totalSteps"] = int(values["total_steps"])
    if "epoch" in values:
        progress["epoch"] = round(values["epoch"], 3)
    if "progress_ratio" in values:
        progress["percent"] = round(min(max(values["progress_ratio"], 0.0), 1.0) * 100, 1)
    elif progress.get("totalSteps") and "step" in progress:
        progress["percent"] = round(min(100.0, 100.0 * progress["step"] / progress["totalSteps"]), 1)
    if "eta_seconds" in values:
        progress["eta"] = format_eta(values["eta_seconds"])
    if "step" in progress and "totalSteps" in progress:
        summary = f"{progress['step']}/{progress['totalSteps']}"
        if "percent" in progress:
            summary += f" ({progress['percent']:.0f}%)"
        progress["summary"] = summary
    return progress


def progress_patch(reading: TrainerReading) -> dict:
    """The status fields these numbers fill (camelCase, ready to merge into status)."""
    out: dict = {}
    progress = _progress(reading.values)
    if progress:
        out["progress"] = progress
    metrics = {key: status_number(reading.values[short]) for short, key in
               (("loss", "trainLoss"), ("eval_loss", "evalLoss"), ("tokens_per_second", "tokensPerSecond"),
                ("reward_margin", "rewardMargin"), ("preference_accuracy", "rewardAccuracy"), ("reward_mean", "rewardMean"))
               if short in reading.values}
    if "eval_loss" in reading.values and reading.values.get("eval_step"):
        metrics["evalStep"] = int(reading.values["eval_step"])
    if metrics:
        out["metrics"] = metrics
    committed = int(reading.values.get("last_committed_step", 0))
    if committed > 0 and reading.checkpoint_uri:
        out["checkpoint"] = {"uri": reading.checkpoint_uri, "step": committed}
    return out
