"""Read a trainer's Prometheus endpoint into `status.progress` and
`status.metrics`: the operator shows the same numbers Grafana does."""

from __future__ import annotations

import math
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

PREFIX = "kubetune_trainer_"
WANTED = ("step", "total_steps", "epoch", "progress_ratio", "eta_seconds", "loss", "eval_loss", "tokens_per_second", "last_committed_step", "up")


def parse_trainer_metrics(text: str, rank: str = "0") -> dict[str, float]:
    """{short name: value} for the trainer gauges of one rank (non-finite values dropped)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith(PREFIX):
                continue
            short = sample.name[len(PREFIX):]
            if short not in WANTED:
                continue
            if sample.labels.get("rank", rank) != rank:
                continue
            if math.isfinite(sample.value):
                values[short] = sample.value
    return values


def format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def progress_patch(values: dict[str, float], checkpoint_uri: str) -> dict:
    """The status fields these numbers fill (camelCase, ready to merge into status)."""
    out: dict = {}
    progress: dict = {}
    if "step" in values:
        progress["step"] = int(values["step"])
    if values.get("total_steps"):
        progress["totalSteps"] = int(values["total_steps"])
    if "epoch" in values:
        progress["epoch"] = round(values["epoch"], 3)
    if "progress_ratio" in values:
        percent = min(max(values["progress_ratio"], 0.0), 1.0) * 100
    elif progress.get("totalSteps") and "step" in progress:
        percent = min(100.0, 100.0 * progress["step"] / progress["totalSteps"])
    else:
        percent = None
    if percent is not None:
        progress["percent"] = round(percent, 1)
    if "eta_seconds" in values:
        progress["eta"] = format_eta(values["eta_seconds"])
    if "step" in progress and "totalSteps" in progress:
        summary = f"{progress['step']}/{progress['totalSteps']}"
        if "percent" in progress:
            summary += f" ({progress['percent']:.0f}%)"
        progress["summary"] = summary
    if progress:
        out["progress"] = progress
    metrics = {}
    for short, key in (("loss", "trainLoss"), ("eval_loss", "evalLoss"), ("tokens_per_second", "tokensPerSecond")):
        if short in values:
            metrics[key] = round(values[short], 6)
    if metrics:
        out["metrics"] = metrics
    committed = int(values.get("last_committed_step", 0))
    if committed > 0:
        out["checkpoint"] = {"uri": f"{checkpoint_uri.rstrip('/')}/step-{committed}/", "step": committed}
    return out


def scrape(url: str, timeout: float) -> str:
    """GET a /metrics page (plain HTTP inside the cluster network)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed scheme
        return response.read(2_000_000).decode("utf-8", "replace")
