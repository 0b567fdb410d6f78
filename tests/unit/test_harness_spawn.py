"""procs.spawn: what the harness starts (the cluster's components, the tests'
operators) dies with the process that started it, even with a SIGKILLed pytest,
which runs no teardown. Waits on the process's pidfd (the kernel says when it
exits), never for a duration."""
from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

from tests.harness import procs

REPO = Path(__file__).resolve().parents[2]
# The parent: spawns `sleep`, says its pid, then waits to be killed.
PARENT = """
import sys
from pathlib import Path
from tests.harness import procs
child = procs.spawn(["sleep", "600"], Path(sys.argv[1]), die_with_parent=sys.argv[2] == "1")
print(child.pid, flush=True)
sys.stdin.read()
"""


def _spawn_through_a_parent(tmp_path: Path, die_with_parent: bool) -> tuple[subprocess.Popen, int]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "child.log"), "1" if die_with_parent else "0"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO)
    return parent, int(parent.stdout.readline())


def _exits_within(pid: int, seconds: float) -> bool:
    fd = os.pidfd_open(pid)
    try:
        return bool(select.select([fd], [], [], seconds)[0])
    finally:
        os.close(fd)


def test_a_spawned_process_dies_with_its_sigkilled_parent(tmp_path):
    parent, child = _spawn_through_a_parent(tmp_path, die_with_parent=True)
    assert procs.pid_alive(child)
    parent.kill()
    parent.wait()
    assert _exits_within(child, 30), f"pid {child} outlived the process that spawned it"


def test_without_it_the_child_outlives_its_parent(tmp_path):
    # The contrast that shows the first test can fail: a plain child is orphaned, not killed.
    parent, child = _spawn_through_a_parent(tmp_path, die_with_parent=False)
    fd = os.pidfd_open(child)
    try:
        parent.kill()
        parent.wait()
        assert procs.pid_alive(child)
    finally:
        os.kill(child, 9)
        select.select([fd], [], [], 30)
        os.close(fd)
