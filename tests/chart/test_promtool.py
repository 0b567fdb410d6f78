"""The alert rules load in Prometheus (`promtool check rules`) and behave as
specified on synthetic series (`promtool test rules`, Prometheus's own rule
evaluator): alerts fire when they should, at the specified delay, and stay
silent otherwise."""

from __future__ import annotations

import pytest

from .chartlib import CHART, run, tool

pytestmark = pytest.mark.chart

HERE = __import__("pathlib").Path(__file__).parent


def test_promtool_check_rules():
    out = run(tool("promtool"), "check", "rules", str(CHART / "files/alerts.yaml"))
    assert "SUCCESS: 7 rules found" in out.stdout, out.stdout


def test_promtool_rule_unit_tests():
    out = run(tool("promtool"), "test", "rules", str(HERE / "promtool/alerts_test.yaml"))
    assert "SUCCESS" in out.stdout + out.stderr


@pytest.mark.parametrize("old, new", [
    ("for: 10m\n    labels:\n      severity: warning\n    annotations:\n      summary: \"FineTuneJob {{ $labels.namespace }}/{{ $labels.job }} has made",
     "for: 5m\n    labels:\n      severity: warning\n    annotations:\n      summary: \"FineTuneJob {{ $labels.namespace }}/{{ $labels.job }} has made"),
    ("> 0.95", "> 0.99"),
    ("kubetune_trainer_loss != kubetune_trainer_loss\n", "kubetune_trainer_loss > 100\n"),
], ids=["no-progress-too-early", "gpu-threshold", "nan-check-removed"])
def test_promtool_unit_tests_catch_a_changed_rule(tmp_path, old, new):
    # The unit tests must fail when a rule's timing or condition changes,
    # or passing them proves nothing.
    rules = (CHART / "files/alerts.yaml").read_text()
    assert old in rules
    (tmp_path / "alerts.yaml").write_text(rules.replace(old, new, 1))
    tests = (HERE / "promtool/alerts_test.yaml").read_text()
    (tmp_path / "t.yaml").write_text(tests.replace("../../../charts/kubetune/files/alerts.yaml", str(tmp_path / "alerts.yaml")))
    proc = run(tool("promtool"), "test", "rules", str(tmp_path / "t.yaml"), check=False)
    assert proc.returncode != 0, proc.stdout
