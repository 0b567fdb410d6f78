"""The test node's log keeper (tests/harness/node_logs.py): CRI log lines back
to the container's output, and a log that outlives its pod's directory."""
from __future__ import annotations

from tests.harness.node_logs import LogKeeper, parse_cri


def test_cri_lines_become_the_output_partial_lines_joined():
    text = ("2026-12-05T10:00:00.000000001Z stdout F hello\n"
            "2026-12-05T10:00:00.000000002Z stderr P part one, \n"
            "2026-12-05T10:00:00.000000003Z stderr F part two\n"
            "2026-12-05T10:00:00.000000004Z stdout F \n")
    assert parse_cri(text) == "hello\npart one, part two\n\n"


def test_a_kept_log_survives_its_pod_and_sees_later_writes(tmp_path):
    pod_logs, kept = tmp_path / "pod-logs", tmp_path / "kept"
    first = pod_logs / "team_train-0_uid-1" / "trainer" / "0.log"
    first.parent.mkdir(parents=True)
    first.write_text("t stdout F attempt one\n")
    keeper = LogKeeper(pod_logs, kept)
    keeper.sweep()
    with first.open("a") as f:  # written after it was kept: the same file
        f.write("t stdout F stopped at step 40\n")
    restart = first.parent / "1.log"
    restart.write_text("t stdout F restarted\n")
    first.unlink()
    restart.unlink()  # never swept: a pod gone before the keeper looked
    assert keeper.logs("team", "train-0") == "attempt one\nstopped at step 40\n"
    (pod_logs / "team_train-0_uid-1" / "trainer" / "2.log").write_text("t stdout F third start\n")
    assert keeper.logs("team", "train-0", "trainer") == "attempt one\nstopped at step 40\nthird start\n"
    assert keeper.logs("team", "absent") == ""
