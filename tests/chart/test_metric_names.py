"""Every PromQL expression in the dashboards and alerts names only metrics that
the trainer and operator code export (DESIGN.md §3 "Metrics")."""

from __future__ import annotations

import json

import pytest
import yaml

from .chartlib import CHART
from .promql import metric_names, operator_exports, trainer_exports

pytestmark = pytest.mark.chart

# The serving dashboard queries vLLM's own metrics (vllm:*), which no code of
# ours exports: tests/serving/test_dashboard.py checks it against a real vLLM.
DASHBOARDS = sorted(p for p in (CHART / "dashboards").glob("*.json") if p.name != "serving.json")


def dashboard_exprs(path) -> list[tuple[str, str]]:
    """(where, expr) for each panel target and each query variable."""
    dash = json.loads(path.read_text())
    out = []

    def panels(items):
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash["panels"]):
        for t in p.get("targets", []):
            out.append((f"{path.name}: panel {p['title']!r} {t['refId']}", t["expr"]))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            # label_values(<selector>, label): the selector is PromQL.
            inner = q.removeprefix("label_values(").rsplit(",", 1)[0]
            out.append((f"{path.name}: variable {v['name']!r}", inner))
    return out


def alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load((CHART / "files/alerts.yaml").read_text())
    return [(f"alerts.yaml: {r['alert']}", r["expr"]) for g in rules["groups"] for r in g["rules"]]


ALL = [e for d in DASHBOARDS for e in dashboard_exprs(d)] + alert_exprs()


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return trainer_exports() | operator_exports()


def test_there_is_something_to_check():
    assert len(DASHBOARDS) == 2 and len(ALL) > 40


@pytest.mark.parametrize("where, expr", ALL, ids=[w for w, _ in ALL])
def test_expression_names_only_exported_metrics(where, expr, exported):
    names = metric_names(expr)
    assert names, f"{where}: no metric found in {expr!r}"
    unknown = names - exported
    assert not unknown, f"{where} queries {sorted(unknown)}, which the code does not export"


def test_training_dashboard_covers_every_trainer_metric(exported):
    # The reverse direction: a metric nobody can see is a metric nobody reads.
    from kubetune_trainer.metrics import METRIC_NAMES

    used = set().union(*(metric_names(e) for _, e in dashboard_exprs(CHART / "dashboards/training.json")))
    base = {n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for n in used}
    assert set(METRIC_NAMES) - base == set()
    assert "kubetune_operator_job_attempts" in used


def test_training_dashboard_filters_every_query_by_namespace_and_job():
    for where, expr in dashboard_exprs(CHART / "dashboards/training.json"):
        if "variable" in where:
            continue
        assert 'namespace="$namespace"' in expr and 'job="$job"' in expr, where


# The checker itself must be able to fail.
@pytest.mark.parametrize("expr, expected", [
    ('sum(rate(kubetune_trainer_tokens_total{job="$job"}[$__rate_interval]))', {"kubetune_trainer_tokens_total"}),
    ("histogram_quantile(0.9, sum by (le) (rate(a_bucket[5m])))", {"a_bucket"}),
    ("x / on (namespace, job) group_left (rank) y offset 1h30m > bool 0.5", {"x", "y"}),
    ("a != a or abs(b) == +Inf and c unless d", {"a", "b", "c", "d"}),
    ('max by (job) (changes(s{a="x{y}"}[5m])) == 0', {"s"}),
    ('kubetune_trainer_los{job="$job"}', {"kubetune_trainer_los"}),
])
def test_metric_name_extraction(expr, expected):
    assert metric_names(expr) == expected


def test_a_misspelt_metric_is_reported(exported):
    assert metric_names("max(kubetune_trainer_los)") - exported == {"kubetune_trainer_los"}
    assert metric_names("kubetune_operator_jobs_total") - exported == {"kubetune_operator_jobs_total"}
