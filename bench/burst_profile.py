"""Where a burst's time went, for `bench/operator_bench.py`: the API server's
own histograms (request latency per verb/resource/subresource, priority and
fairness queueing, etcd), the operator's (waiting for its client's QPS budget,
its requests' round trips, due passes waiting for a worker) and each
component's CPU, all as differences between two snapshots (the first apply,
the last Job seen).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

# (family, labels that name a row)
APISERVER_HISTOGRAMS = {
    "apiserver_request_duration_seconds": ("verb", "resource", "subresource"),
    "apiserver_flowcontrol_request_wait_duration_seconds": ("priority_level", "execute"),
    "etcd_request_duration_seconds": ("operation", "type"),
    "apiextensions_apiserver_validation_ratcheting_seconds": (),
}
OPERATOR_HISTOGRAMS = {
    "kubetune_operator_api_request_duration_seconds": ("kind", "verb"),
    "kubetune_operator_queue_wait_seconds": ("urgent",),
}
OPERATOR_COUNTERS = ("kubetune_operator_client_throttle_seconds",)


def histograms(text: str, wanted: dict[str, tuple[str, ...]]) -> dict[tuple, list[float]]:
    """(family, row labels...) -> [sum, count]."""
    out: dict[tuple, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in wanted:
            continue
        names = wanted[family.name]
        for sample in family.samples:
            if sample.name.endswith("_sum") or sample.name.endswith("_count"):
                row = (family.name, *(sample.labels.get(n, "") for n in names))
                slot = out.setdefault(row, [0.0, 0.0])
                slot[0 if sample.name.endswith("_sum") else 1] += sample.value
    return out


def counters(text: str, wanted: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name in wanted:
            out[family.name] = sum(s.value for s in family.samples if s.name.endswith("_total"))
    return out


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """A process and its children that were waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Snapshot:
    apiserver: dict
    operator: dict
    operator_counters: dict
    cpu: dict[str, float]
    wall: float


@dataclass
class BurstProfile:
    """Take `snap()` before the burst and after it; `report()` prints the difference."""

    apiserver_text: callable
    operator_text: callable
    pids: dict[str, int]
    snaps: list[Snapshot] = field(default_factory=list)

    def snap(self, wall: float) -> None:
        api, op = self.apiserver_text(), self.operator_text()
        self.snaps.append(Snapshot(histograms(api, APISERVER_HISTOGRAMS), histograms(op, OPERATOR_HISTOGRAMS),
                                   counters(op, OPERATOR_COUNTERS),
                                   {name: tree_cpu_seconds(pid) for name, pid in self.pids.items()}, wall))

    def report(self, n: int) -> list[str]:
        a, b = self.snaps[0], self.snaps[-1]
        wall = b.wall - a.wall
        lines = [f"  burst window {wall:.2f} s; CPU seconds (share of one core): " + ", ".join(
            f"{name} {b.cpu[name] - a.cpu[name]:.2f} ({(b.cpu[name] - a.cpu[name]) / wall:.0%})" for name in self.pids)]
        lines += _rows(a.apiserver, b.apiserver, "API server", min_count=n / 20)
        if not b.operator_counters and not b.operator:
            return lines
        lines += _rows(a.operator, b.operator, "operator", min_count=1)
        throttle = {k: b.operator_counters.get(k, 0) - a.operator_counters.get(k, 0) for k in OPERATOR_COUNTERS}
        lines.append("  operator client throttle: " + ", ".join(f"{k} {v:.2f} s ({v / n * 1000:.1f} ms/job)" for k, v in throttle.items()))
        return lines


def _rows(before: dict, after: dict, who: str, min_count: float) -> list[str]:
    rows = []
    for key, (total, count) in after.items():
        t0, c0 = before.get(key, (0.0, 0.0))
        count -= c0
        if count >= min_count:
            rows.append((total - t0, count, key))
    rows.sort(reverse=True)
    return [f"  {who} {' '.join(k for k in key if k):<78} n={count:>7.0f} mean {total / count * 1000:>7.1f} ms  total {total:>7.2f} s"
            for total, count, key in rows[:18]]
