"""The trainer sizes torch's CPU threads to its container's CPU limit (cgroup v1 and v2 trees written here)."""

from __future__ import annotations

import pytest
import torch

from kubetune_trainer.cpu_threads import CpuBudget, cgroup_quota, size_torch_threads


def _v2(root, text):
    (root / "cpu.max").write_text(text)
    return root


def _v1(root, quota_us, period_us=100000, controller="cpu"):
    d = root / controller
    d.mkdir()
    (d / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
    (d / "cpu.cfs_period_us").write_text(f"{period_us}\n")
    return root


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_cgroup_v2_limit_in_cpus(tmp_path):
    assert cgroup_quota(_v2(tmp_path, "150000 100000\n")) == 1.5


def test_cgroup_v2_without_limit(tmp_path):
    assert cgroup_quota(_v2(tmp_path, "max 100000\n")) is None


def test_cgroup_v1_limit_in_cpus(tmp_path):
    assert cgroup_quota(_v1(tmp_path, 250000)) == 2.5


def test_cgroup_v1_combined_controller_directory(tmp_path):
    assert cgroup_quota(_v1(tmp_path, 50000, controller="cpu,cpuacct")) == 0.5


def test_cgroup_v1_without_limit(tmp_path):
    assert cgroup_quota(_v1(tmp_path, -1)) is None


def test_no_cgroup_files_means_no_limit(tmp_path):
    assert cgroup_quota(tmp_path) is None


@pytest.mark.parametrize("visible, quota, threads", [
    (32, 2.0, 2),     # a 2-CPU pod on a big node: 2, not 32
    (32, 1.5, 2),     # a fractional limit rounds up
    (32, 0.25, 1),    # never below one
    (4, 16.0, 4),     # affinity narrower than the quota wins
    (8, None, 8),     # no limit: every visible CPU
])
def test_threads_are_the_smaller_of_affinity_and_quota(visible, quota, threads):
    assert CpuBudget(visible=visible, quota=quota).threads == threads


def test_torch_gets_the_containers_budget(tmp_path, torch_threads):
    torch.set_num_threads(2)
    assert size_torch_threads(env={}, root=_v2(tmp_path, "100000 100000")) == 1
    assert torch.get_num_threads() == 1


def test_omp_num_threads_given_is_kept(tmp_path, torch_threads):
    torch.set_num_threads(2)
    assert size_torch_threads(env={"OMP_NUM_THREADS": "2"}, root=_v2(tmp_path, "100000 100000")) == 2
    assert torch.get_num_threads() == 2


def test_without_affinity_every_cpu_is_visible(monkeypatch):
    import kubetune_trainer.cpu_threads as cpu_threads

    monkeypatch.delattr(cpu_threads.os, "sched_getaffinity")
    monkeypatch.setattr(cpu_threads.os, "cpu_count", lambda: 6)
    assert cpu_threads.visible_cpus() == 6
