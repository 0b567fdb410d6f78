"""How many CPU threads the trainer's torch uses: as many as its container may run.

torch sizes its intra-op pool from the CPUs it sees (the node's, or the
process's affinity), not from the container's CPU limit. A pod limited to
`resources.cpu: 2` on a 32-core node then runs 32 threads in two CPUs' worth
of CFS quota: every parallel region waits for threads the kernel has
throttled, and CPU training (and the tokenizer, the evaluation's generation)
crawls. So the trainer caps the pool at the cgroup's quota, rounded up, and
at its affinity. An `OMP_NUM_THREADS` the user (or torchrun, which sets 1 for
several processes per node) gave is kept as it is.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("kubetune.cpu")

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CpuBudget:
    visible: int  # CPUs this process may be scheduled on
    quota: float | None  # the cgroup's CPU limit in CPUs, None without one

    @property
    def threads(self) -> int:
        return max(1, min(self.visible, math.ceil(self.quota) if self.quota else self.visible))


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The container's CPU limit in CPUs, from cgroup v2 (`cpu.max`) or v1
    (`cpu/cpu.cfs_quota_us` over `cpu.cfs_period_us`); None when unlimited or unreadable."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for v1 in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
            period_us = int((v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    return None


def visible_cpus() -> int:
    """CPUs this process may run on (its affinity; every CPU where the platform has no affinity, as on macOS)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else (os.cpu_count() or 1)


def budget(root: Path = CGROUP_ROOT) -> CpuBudget:
    return CpuBudget(visible=visible_cpus(), quota=cgroup_quota(root))


def size_torch_threads(env: dict[str, str] | None = None, root: Path = CGROUP_ROOT) -> int:
    """Set torch's intra-op threads to the container's CPU budget (unless
    OMP_NUM_THREADS says otherwise) and return the number torch uses."""
    import torch

    env = os.environ if env is None else env
    if env.get("OMP_NUM_THREADS"):
        log.info("CPU threads: %d (OMP_NUM_THREADS=%s)", torch.get_num_threads(), env["OMP_NUM_THREADS"])
        return torch.get_num_threads()
    cpus = budget(root)
    torch.set_num_threads(cpus.threads)
    limit = f"the container's CPU limit {cpus.quota:g}" if cpus.quota else "no CPU limit"
    log.info("CPU threads: %d (%s; %d CPUs visible)", cpus.threads, limit, cpus.visible)
    return cpus.threads
