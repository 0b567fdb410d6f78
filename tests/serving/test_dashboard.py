"""The serving dashboard against the real vLLM: Prometheus scrapes its /metrics
while requests go to the base and to several adapters at once, and every
dashboard query returns data (the latency quantiles a number, not NaN)."""
from __future__ import annotations

import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.chart.chartlib import CHART
from tests.chart.test_metric_names import dashboard_exprs
from tests.cluster.serving_helpers import complete
from tests.harness.prometheus import Prometheus
from tests.harness.vllm import wait_until_metrics

from .conftest import task_prompts

pytestmark = [pytest.mark.slow]

DASHBOARD = CHART / "dashboards/serving.json"


def dashboard_promql(rate_interval: str) -> list[tuple[str, str]]:
    return [(where, expr.replace("$model_name", ".*").replace("$__rate_interval", rate_interval))
            for where, expr in dashboard_exprs(DASHBOARD)]


def test_every_serving_dashboard_query_returns_data_from_real_vllm(vllm_server, tmp_path):
    address = vllm_server.url.removeprefix("http://")
    wait_until_metrics(vllm_server.url)
    prom = Prometheus([address], run_dir=tmp_path / "prometheus").start()
    stop = threading.Event()
    prompts = [p for task in task_prompts().values() for p, _ in task]

    answered, failed = [], []

    def traffic():  # four clients at once, across the base and the adapters
        names = ["base", "words", "numbers", "cat"]
        try:
            with ThreadPoolExecutor(4) as pool:
                i = 0
                while not stop.is_set():
                    answered.extend(pool.map(lambda n: complete(address, names[n], prompts[(i + n) % len(prompts)], max_tokens=8), range(4)))
                    i += 4
        except Exception as exc:  # noqa: BLE001 - reported by the test below, not lost with the thread
            failed.append(f"{type(exc).__name__}: {exc}")

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        for where, promql in dashboard_promql("20s"):
            result = _wait_for_data(prom, promql, 90)
            assert result, f"no data for {where}: {promql}"
            if "histogram_quantile" in promql:
                values = [float(r["value"][1]) for r in result]
                assert any(math.isfinite(v) and v > 0 for v in values), (where, values)
        adapters = {r["metric"]["running_lora_adapters"] for r in prom.query(
            'sum by (running_lora_adapters) (changes(vllm:lora_requests_info{running_lora_adapters!=""}[1m]))')}
        assert any(name in ",".join(adapters) for name in ("words", "numbers", "cat")), adapters
    finally:
        stop.set()
        sender.join(60)
        prom.stop()
    # The data came from traffic that ran throughout: no request failed, and it did not stop early.
    assert not failed, failed
    assert not sender.is_alive() and len(answered) >= 4, len(answered)


def _wait_for_data(prom: Prometheus, promql: str, timeout: float) -> list[dict]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = prom.query(promql)
        finite = [r for r in result if math.isfinite(float(r["value"][1]))]
        if finite:
            return finite
        time.sleep(1)
    return []


def test_the_dashboard_queries_only_metrics_the_real_vllm_exports(vllm_server):
    import urllib.request

    from tests.chart.promql import metric_names

    with urllib.request.urlopen(f"{vllm_server.url}/metrics", timeout=10) as response:
        exposed = {line.split("{")[0].split(" ")[0] for line in response.read().decode().splitlines() if line and not line.startswith("#")}
    used = set().union(*(metric_names(expr) for _, expr in dashboard_exprs(DASHBOARD)))
    assert used and used <= exposed, sorted(used - exposed)
    assert json.loads(DASHBOARD.read_text())["uid"] == "kubetune-serving"
