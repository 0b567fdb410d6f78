"""The trainer's Prometheus metrics: every exported name lives here.

The chart's dashboard test imports `METRIC_NAMES` to check that each PromQL
query names a metric the trainer exports; the operator polls the same endpoint
for `status.progress` and `status.metrics`. Labels: namespace, job, rank (GPU
metrics add device). A private registry keeps tests and multiple runs in one
process from colliding.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("kubetune.metrics")

LABELS = ("namespace", "job", "rank")
GPU_LABELS = (*LABELS, "device")

LOSS = "kubetune_trainer_loss"
EVAL_LOSS = "kubetune_trainer_eval_loss"
LEARNING_RATE = "kubetune_trainer_learning_rate"
GRAD_NORM = "kubetune_trainer_grad_norm"
TOKENS_PER_SECOND = "kubetune_trainer_tokens_per_second"
SAMPLES_PER_SECOND = "kubetune_trainer_samples_per_second"
STEP = "kubetune_trainer_step"
TOTAL_STEPS = "kubetune_trainer_total_steps"
EPOCH = "kubetune_trainer_epoch"
PROGRESS_RATIO = "kubetune_trainer_progress_ratio"
ETA_SECONDS = "kubetune_trainer_eta_seconds"
TOKENS_TOTAL = "kubetune_trainer_tokens_total"
PADDING_FRACTION = "kubetune_trainer_padding_fraction"
CHECKPOINT_UPLOAD_SECONDS = "kubetune_trainer_checkpoint_upload_seconds"
CHECKPOINT_UPLOAD_FAILURES_TOTAL = "kubetune_trainer_checkpoint_upload_failures_total"
LAST_COMMITTED_STEP = "kubetune_trainer_last_committed_step"
GPU_UTILIZATION_RATIO = "kubetune_trainer_gpu_utilization_ratio"
GPU_MEMORY_USED_BYTES = "kubetune_trainer_gpu_memory_used_bytes"
GPU_MEMORY_TOTAL_BYTES = "kubetune_trainer_gpu_memory_total_bytes"
GPU_POWER_WATTS = "kubetune_trainer_gpu_power_watts"
UP = "kubetune_trainer_up"

GPU_METRIC_NAMES = (GPU_UTILIZATION_RATIO, GPU_MEMORY_USED_BYTES, GPU_MEMORY_TOTAL_BYTES, GPU_POWER_WATTS)
METRIC_NAMES = (
    LOSS, EVAL_LOSS, LEARNING_RATE, GRAD_NORM, TOKENS_PER_SECOND, SAMPLES_PER_SECOND, STEP, TOTAL_STEPS, EPOCH,
    PROGRESS_RATIO, ETA_SECONDS, TOKENS_TOTAL, PADDING_FRACTION, CHECKPOINT_UPLOAD_SECONDS,
    CHECKPOINT_UPLOAD_FAILURES_TOTAL, LAST_COMMITTED_STEP, *GPU_METRIC_NAMES, UP,
)
# What Prometheus exposes for each (counters get _total, histograms _bucket/_sum/_count).
EXPOSED_NAMES = tuple(
    n for name in METRIC_NAMES
    for n in ((f"{name}_bucket", f"{name}_sum", f"{name}_count") if name == CHECKPOINT_UPLOAD_SECONDS else (name,))
)

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
            GPU_UTILIZATION_RATIO: GaugeMetricFamily(GPU_UTILIZATION_RATIO, "GPU utilisation (0-1)", labels=GPU_LABELS),
            GPU_MEMORY_USED_BYTES: GaugeMetricFamily(GPU_MEMORY_USED_BYTES, "GPU memory used", labels=GPU_LABELS),
            GPU_MEMORY_TOTAL_BYTES: GaugeMetricFamily(GPU_MEMORY_TOTAL_BYTES, "GPU memory total", labels=GPU_LABELS),
            GPU_POWER_WATTS: GaugeMetricFamily(GPU_POWER_WATTS, "GPU power draw", labels=GPU_LABELS),
        }
        base = [self.labels[k] for k in LABELS]
        try:
            for i in range(nv.nvmlDeviceGetCount()):
                h = nv.nvmlDeviceGetHandleByIndex(i)
                values = base + [str(i)]
                fams[GPU_UTILIZATION_RATIO].add_metric(values, nv.nvmlDeviceGetUtilizationRates(h).gpu / 100.0)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                fams[GPU_MEMORY_USED_BYTES].add_metric(values, float(mem.used))
                fams[GPU_MEMORY_TOTAL_BYTES].add_metric(values, float(mem.total))
                fams[GPU_POWER_WATTS].add_metric(values, nv.nvmlDeviceGetPowerUsage(h) / 1000.0)
        except Exception as exc:  # noqa: BLE001 - a flaky driver must not break the scrape
            log.debug("NVML read failed: %s", exc)
        return list(fams.values())


class TrainerMetrics:
    """The metric objects for one run, pre-bound to its labels."""

    def __init__(self, namespace: str, job: str, rank: int, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.labels = {"namespace": namespace, "job": job, "rank": str(rank)}
        r = self.registry

        def g(name, doc):
            return Gauge(name, doc, LABELS, registry=r).labels(**self.labels)

        self.loss = g(LOSS, "Training loss (last logged)")
        self.eval_loss = g(EVAL_LOSS, "Evaluation loss (last evaluation)")
        self.learning_rate = g(LEARNING_RATE, "Learning rate")
        self.grad_norm = g(GRAD_NORM, "Gradient norm before clipping")
        self.tokens_per_second = g(TOKENS_PER_SECOND, "Non-padding training tokens per second (this process)")
        self.samples_per_second = g(SAMPLES_PER_SECOND, "Training sequences per second (this process)")
        self.step = g(STEP, "Optimizer steps completed")
        self.total_steps = g(TOTAL_STEPS, "Optimizer steps planned")
        self.epoch = g(EPOCH, "Fractional epoch")
        self.progress_ratio = g(PROGRESS_RATIO, "step / total steps")
        self.eta_seconds = g(ETA_SECONDS, "Estimated seconds to finish training")
        self.tokens_total = Counter(TOKENS_TOTAL.removesuffix("_total"), "Non-padding training tokens seen", LABELS, registry=r).labels(**self.labels)
        self.padding_fraction = g(PADDING_FRACTION, "Fraction of positions in training batches that are padding")
        self.checkpoint_upload_seconds = Histogram(
            CHECKPOINT_UPLOAD_SECONDS, "Time to upload and commit one checkpoint", LABELS, registry=r,
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
        ).labels(**self.labels)
        self.checkpoint_upload_failures = Counter(
            CHECKPOINT_UPLOAD_FAILURES_TOTAL.removesuffix("_total"), "Checkpoint upload attempts that failed (retried or given up)", LABELS, registry=r,
        ).labels(**self.labels)
        self.last_committed_step = g(LAST_COMMITTED_STEP, "Newest checkpoint step committed to storage")
        self.up = g(UP, "1 while training runs")
        r.register(_GpuCollector(self.labels))
        self._server = None

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


