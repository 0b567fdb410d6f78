"""The trainer's Prometheus metrics, pre-bound to one run's labels.

The names are the contract's (`kubetune_contract.metric_names`): the operator
scrapes rank 0's endpoint for `status.progress`, `status.metrics` and
`status.checkpoint`, and the chart's dashboards and alerts query the same
names (its tests import `METRIC_NAMES`, `EXPOSED_NAMES` and `GPU_METRIC_NAMES`
from here). Labels: namespace, job, rank (GPU metrics add device). A private
registry keeps tests and multiple runs in one process from colliding.
"""

from __future__ import annotations

import logging
import math
import os

from kubetune_contract import metric_names as names
from kubetune_contract.metric_names import EXPOSED_NAMES, GPU_METRIC_NAMES, METRIC_NAMES
from kubetune_contract.tracking import MAX_DEGRADED
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("kubetune.metrics")

__all__ = ["EXPOSED_NAMES", "GPU_METRIC_NAMES", "METRIC_NAMES", "TrainerMetrics"]

LABELS = ("namespace", "job", "rank")
GPU_LABELS = (*LABELS, "device")

DEFAULT_PORT = 9400


class _GpuCollector:
    """NVML readings taken at scrape time (no polling thread); absent without a GPU."""

    def __init__(self, labels: dict[str, str]):
        self.labels = labels
        self.nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
        except Exception:  # noqa: BLE001 - no driver / no package: no GPU metrics
            self.nvml = None

    def collect(self):
        if self.nvml is None:
            return []
        nv = self.nvml
        fams = {
            names.GPU_UTILIZATION_RATIO: GaugeMetricFamily(names.GPU_UTILIZATION_RATIO, "GPU utilisation (0-1)", labels=GPU_LABELS),
            names.GPU_MEMORY_USED_BYTES: GaugeMetricFamily(names.GPU_MEMORY_USED_BYTES, "GPU memory used", labels=GPU_LABELS),
            names.GPU_MEMORY_TOTAL_BYTES: GaugeMetricFamily(names.GPU_MEMORY_TOTAL_BYTES, "GPU memory total", labels=GPU_LABELS),
            names.GPU_POWER_WATTS: GaugeMetricFamily(names.GPU_POWER_WATTS, "GPU power draw", labels=GPU_LABELS),
        }
        base = [self.labels[k] for k in LABELS]
        try:
            for i in range(nv.nvmlDeviceGetCount()):
                h = nv.nvmlDeviceGetHandleByIndex(i)
                values = base + [str(i)]
                fams[names.GPU_UTILIZATION_RATIO].add_metric(values, nv.nvmlDeviceGetUtilizationRates(h).gpu / 100.0)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                fams[names.GPU_MEMORY_USED_BYTES].add_metric(values, float(mem.used))
                fams[names.GPU_MEMORY_TOTAL_BYTES].add_metric(values, float(mem.total))
                fams[names.GPU_POWER_WATTS].add_metric(values, nv.nvmlDeviceGetPowerUsage(h) / 1000.0)
        except Exception as exc:  # noqa: BLE001 - a flaky driver must not break the scrape
            log.debug("NVML read failed: %s", exc)
        return list(fams.values())


class _UntilFirstValue:
    """A labelled gauge that exports nothing until its first value.

    A pre-bound gauge reads 0 from the first scrape, and a loss of 0 on the
    dashboard before the first logging step is a lie a user acts on."""

    def __init__(self, parent: Gauge, labels: dict[str, str]):
        self._parent, self._labels = parent, labels

    def set(self, value: float) -> None:
        self._parent.labels(**self._labels).set(value)


# TRL's preference trainers' log keys -> the summary's name and the gauge
# (kubetune_contract.metric_names.PREFERENCE_METRIC_NAMES).
PREFERENCE_LOGS = (("rewards/chosen", "rewardsChosen", "rewards_chosen"), ("rewards/rejected", "rewardsRejected", "rewards_rejected"),
                   ("rewards/margins", "rewardMargin", "reward_margin"), ("rewards/accuracies", "rewardAccuracy", "preference_accuracy"),
                   ("reward", "rewardMean", "reward_mean"))  # GRPO's mean weighted reward


class TrainerMetrics:
    """The metric objects for one run, pre-bound to its labels."""

    def __init__(self, namespace: str, job: str, rank: int, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.labels = {"namespace": namespace, "job": job, "rank": str(rank)}
        r = self.registry

        def g(name, doc):
            return Gauge(name, doc, LABELS, registry=r).labels(**self.labels)

        def logged(name, doc):  # values known only from the trainer's first log event on
            return _UntilFirstValue(Gauge(name, doc, LABELS, registry=r), self.labels)

        self.loss = logged(names.LOSS, "Training loss (last logged)")
        self.eval_loss = logged(names.EVAL_LOSS, "Evaluation loss (last evaluation)")
        self.eval_step = logged(names.EVAL_STEP, "Step of the last evaluation")
        self.learning_rate = logged(names.LEARNING_RATE, "Learning rate")
        self.grad_norm = logged(names.GRAD_NORM, "Gradient norm before clipping")
        self.tokens_per_second = g(names.TOKENS_PER_SECOND, "Non-padding training tokens per second (this process)")
        self.samples_per_second = g(names.SAMPLES_PER_SECOND, "Training sequences per second (this process)")
        self.step = g(names.STEP, "Optimizer steps completed")
        self.total_steps = g(names.TOTAL_STEPS, "Optimizer steps planned")
        self.epoch = g(names.EPOCH, "Fractional epoch")
        self.progress_ratio = g(names.PROGRESS_RATIO, "step / total steps")
        self.eta_seconds = g(names.ETA_SECONDS, "Estimated seconds to finish training")
        self.tokens_total = Counter(names.TOKENS_TOTAL.removesuffix("_total"), "Non-padding training tokens seen", LABELS, registry=r).labels(**self.labels)
        self.padding_fraction = g(names.PADDING_FRACTION, "Fraction of positions in training batches that are padding")
        self.checkpoint_upload_seconds = Histogram(
            names.CHECKPOINT_UPLOAD_SECONDS, "Time to upload and commit one checkpoint", LABELS, registry=r,
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
        ).labels(**self.labels)
        # Small buckets: with background uploads the loop pays only for hard
        # links; a synchronous upload lands in the large ones.
        self.checkpoint_blocked_seconds = Histogram(
            names.CHECKPOINT_BLOCKED_SECONDS, "Time the training loop waited per checkpoint (barrier and snapshot)", LABELS, registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        ).labels(**self.labels)
        self.checkpoint_upload_failures = Counter(
            names.CHECKPOINT_UPLOAD_FAILURES_TOTAL.removesuffix("_total"), "Checkpoint upload attempts that failed (retried or given up)", LABELS, registry=r,
        ).labels(**self.labels)
        self.last_committed_step = g(names.LAST_COMMITTED_STEP, "Newest checkpoint step committed to storage")
        self.last_committed_checkpoint = Info(
            names.LAST_COMMITTED_CHECKPOINT, "The newest committed checkpoint; its uri label is where it was written", LABELS, registry=r,
        ).labels(**self.labels)
        self.up = g(names.UP, "1 while training runs")
        # Not bound ahead: no series until a tracker degrades.
        self._tracking_degraded = Info(names.TRACKING_DEGRADED, "A tracker degraded; its reason label says which and why", LABELS,
                                       registry=r)
        self.rewards_chosen = logged(names.REWARDS_CHOSEN, "Preference objectives: mean implicit reward of the chosen answers (last logged)")
        self.rewards_rejected = logged(names.REWARDS_REJECTED, "Preference objectives: mean implicit reward of the rejected answers (last logged)")
        self.reward_margin = logged(names.REWARD_MARGIN, "Preference objectives: mean chosen-minus-rejected reward (last logged)")
        self.reward_mean = logged(names.REWARD_MEAN, "GRPO: mean weighted reward of the last logged batch")
        self.reward = Gauge(names.REWARD, "GRPO: each reward's mean over the last logged batch", (*LABELS, "reward"), registry=r)
        self.preference_accuracy = logged(names.PREFERENCE_ACCURACY, "Preference objectives: share of the batch's pairs whose chosen reward is higher (last logged)")
        self.eval_score = Gauge(names.EVAL_SCORE, "Held-out evaluation: a metric's value for the base model, the tuned model or a baseline",
                                (*LABELS, *names.EVAL_LABELS), registry=r)
        self.eval_parse_rate = Gauge(names.EVAL_PARSE_RATE, "Share of numeric test answers with a parsable number", (*LABELS, "model"),
                                     registry=r)
        r.register(_GpuCollector(self.labels))
        self._server = None

    def committed(self, step: int, uri: str) -> None:
        """Publish the newest committed checkpoint: its step, and its URI exactly as
        written, which the operator reports instead of rebuilding one."""
        self.last_committed_step.set(step)
        self.last_committed_checkpoint.info({"uri": uri})

    def tracking_degraded(self, reason: str) -> None:
        """Publish that tracking degraded (the first tracker's reason, redacted by the tracker's channel)."""
        self._tracking_degraded.labels(**self.labels).info({"reason": reason[:MAX_DEGRADED]})

    def evaluated(self, model: str, metrics: dict, parse_rate: float | None = None) -> None:
        """Publish one model's (or baseline's) evaluation; non-finite values are left out."""
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.eval_score.labels(**self.labels, metric=name, model=model).set(value)
        if parse_rate is not None:
            self.eval_parse_rate.labels(**self.labels, model=model).set(parse_rate)

    def serve(self, port: int = DEFAULT_PORT, addr: str | None = None) -> int:
        """Start the /metrics HTTP server; returns the bound port."""
        addr = addr or os.environ.get("POD_IP") or "0.0.0.0"
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = (server, thread)
        bound = server.server_address[1]
        log.info("metrics on http://%s:%d/metrics", addr, bound)
        return bound

    def stop(self) -> None:
        if self._server:
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._server = None
