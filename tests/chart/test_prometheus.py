"""A real Prometheus (the harness's binary) scraping the trainer's and the
operator's own metric classes, with the chart's alert rules loaded:

* every query of the training dashboard returns data for the job;
* KubetuneJobNoProgress stays silent while steps advance and fires once the
  trainer stalls.

test_dashboard_queries_return_data_for_a_live_training_run is the real thing:
the operator runs a FineTuneJob whose trainer pod (the real trainer, tiny model,
CPU) Prometheus scrapes at the pod's own IP, beside the operator's /metrics.

The alert test stands in for a trainer: kubetune_trainer.metrics.TrainerMetrics
and kubetune_operator.metrics.REGISTRY served by prometheus_client in this
process, fed by the test: it takes a step each time Prometheus has scraped the
last one (so steps advance while Prometheus looks, however slow the machine)
and stalls when the test says so; the stall rule's window
and `for:` are shortened by a test override (5m -> 4s, 10m -> 3s) so it fires
in seconds; tests/chart/promtool/alerts_test.yaml checks the real 15-minute
timing. GPU panels need NVML, which this machine lacks: they are the only
exception in both.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml
from prometheus_client import start_http_server

from tests.harness import procs
from tests.harness.prometheus import _get

from tests.cluster.operator_helpers import FTJ, create, pods, quickstart, status

from .chartlib import CHART, one, render, tool
from .test_metric_names import dashboard_exprs

pytestmark = [pytest.mark.chart, pytest.mark.slow]

NS, JOB = "ml", "stalled"


def _rules_with_test_override() -> dict:
    # The chart's own rendering, with its documented `for:` override value...
    rule = one(render({"monitoring.prometheusRule.enabled": "true",
                       "monitoring.prometheusRule.forOverrides.KubetuneJobNoProgress": "3s"}, monitoring_api=True),
               "PrometheusRule")
    groups = rule["spec"]["groups"]
    # ...and the one test-only change: the 5-minute changes() window.
    for g in groups:
        for r in g["rules"]:
            if r["alert"] == "KubetuneJobNoProgress":
                assert "changes(kubetune_trainer_step[5m])" in r["expr"]
                r["expr"] = r["expr"].replace("changes(kubetune_trainer_step[5m])", "changes(kubetune_trainer_step[4s])")
    return {"groups": groups}


def _snake(key: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in key)


def trainer_scrape_config(pods: list[tuple[str, str, str]]) -> dict:
    """The scrape config the Prometheus Operator makes of the chart's trainer
    PodMonitor, for `pods` as (address, namespace, the pod's kubetune.io/job
    label): the pod's namespace as the `namespace` target label (the operator's
    own relabelling), then the PodMonitor's relabelings and metricRelabelings."""
    monitor = next(d for d in render({"monitoring.podMonitor.enabled": "true"}, monitoring_api=True)
                   if d["kind"] == "PodMonitor" and d["metadata"]["name"].endswith("-trainer"))
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    translate = lambda rules: [{_snake(k): v for k, v in r.items()} for r in rules]  # noqa: E731
    return {
        "job_name": "kubetune-trainer", "honor_labels": endpoint["honorLabels"], "scrape_timeout": "1s",
        "static_configs": [{"targets": [address], "labels": {"__meta_kubernetes_namespace": namespace,
                                                             "__meta_kubernetes_pod_label_kubetune_io_job": job}}
                           for address, namespace, job in pods],
        "relabel_configs": [{"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                            *translate(endpoint.get("relabelings", []))],
        "metric_relabel_configs": translate(endpoint.get("metricRelabelings", [])),
    }


@pytest.fixture
def prom(tmp_path):
    """Prometheus scraping the operator at `targets` with honor_labels (as the
    chart's ServiceMonitor does), trainer `pods` as the chart's PodMonitor has
    them scraped, and the chart's rules; 1 s scrape and evaluation."""
    started = []

    def start(targets, pods=()):
        (tmp_path / "rules.yaml").write_text(yaml.safe_dump(_rules_with_test_override()))
        scrape = [{"job_name": "kubetune-operator", "honor_labels": True, "scrape_timeout": "1s",
                   "static_configs": [{"targets": targets}]}] if targets else []
        if pods:
            scrape.append(trainer_scrape_config(list(pods)))
        (tmp_path / "prometheus.yml").write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "rules.yaml")],
            "scrape_configs": scrape,
        }))
        port = procs.free_port()
        proc = procs.spawn([tool("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
                            f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                            "--log.level=warn"], tmp_path / "prometheus.log", die_with_parent=True)
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        procs.wait_until(lambda: _get(url + "/-/ready").startswith("Prometheus"), 60, "prometheus", proc,
                         tmp_path / "prometheus.log")
        return url

    yield start
    for proc in started:
        procs.stop_group(proc.pid)
        proc.wait()


def query(url: str, promql: str) -> list[dict]:
    import urllib.parse

    body = json.loads(_get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})))
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_dashboard_queries_return_data_and_no_progress_alert_fires(prom):
    from kubetune_operator import metrics as om
    from kubetune_trainer.metrics import TrainerMetrics

    m = TrainerMetrics(namespace=NS, job=JOB, rank=0)
    trainer_port = m.serve(port=0, addr="127.0.0.1")
    op_server, _ = start_http_server(0, addr="127.0.0.1", registry=om.REGISTRY)
    om.JOB_ATTEMPTS.labels(namespace=NS, job=JOB).set(1)
    om.PHASE_TRANSITIONS.labels(**{"from": "Pending", "to": "Running"}).inc()
    om.RECONCILE_DURATION.observe(0.02)
    om.API_ERRORS.inc(0)
    om.record_sweep((NS, "sweep"), {"counts": {"running": 2, "succeeded": 3, "failed": 1, "pruned": 1}, "best": {"objective": 0.42}})
    m.up.set(1)
    m.total_steps.set(100_000)  # never reached: the stand-in steps until the test stalls it
    m.loss.set(2.0), m.eval_loss.set(2.1), m.eval_step.set(4), m.learning_rate.set(3e-4), m.grad_norm.set(1.2)
    m.tokens_per_second.set(900), m.samples_per_second.set(7), m.epoch.set(0.1), m.padding_fraction.set(0.05)
    m.eta_seconds.set(600), m.last_committed_step.set(0)
    m.rewards_chosen.set(0.4), m.rewards_rejected.set(-0.3), m.reward_margin.set(0.7), m.preference_accuracy.set(0.8)  # a dpo job's
    m.reward_mean.set(-3.5), m.reward.labels(**m.labels, reward="numericCloseness").set(-3.5)  # a grpo job's
    m.evaluated("base", {"evalLoss": 2.4, "mae": 146.0}, parse_rate=0.25)  # the base is evaluated before training
    m.tracking_degraded("mlflow: start failed: ConnectionError: refused")  # a job whose tracker is down
    stall = threading.Event()
    step_series = f'kubetune_trainer_step{{namespace="{NS}", job="{JOB}"}}'

    def train(url: str):  # a step once Prometheus has seen the last one, a checkpoint every 4 steps, until the stall
        step = 0
        while not stall.is_set():
            step += 1
            m.step.set(step), m.progress_ratio.set(step / 100_000), m.tokens_total.inc(512)
            m.loss.set(2.0 - step * 0.001)
            if step % 4 == 0:
                m.checkpoint_blocked_seconds.observe(0.004)
                m.checkpoint_upload_seconds.observe(0.3)
                m.committed(step, f"s3://bucket/{NS}/{JOB}/checkpoints/step-{step:08d}")
            while not stall.is_set() and not query(url, f"{step_series} == {step}"):
                stall.wait(0.2)

    try:
        url = prom([f"127.0.0.1:{op_server.server_address[1]}"], pods=[(f"127.0.0.1:{trainer_port}", NS, JOB)])
        trainer = threading.Thread(target=train, args=(url,), daemon=True)
        trainer.start()
        alert = f'ALERTS{{alertname="KubetuneJobNoProgress", namespace="{NS}", job="{JOB}"}}'
        # While steps advance: the series carry the job's own labels, and once the
        # (shortened) window has seen steps change the alert is not even pending.
        # (At start-up it may be pending for a moment: a brand-new series has
        # no changes yet; `for:` is what keeps that from firing.)
        wait(lambda: query(url, f"{step_series} > 4"), 30, "steps")
        wait(lambda: query(url, alert) == [] or None, 10, "no alert while steps advance")

        # Every dashboard query returns data for this job (variables substituted).
        for where, promql in _dashboard_promql(NS, JOB, "10s"):
            wait(lambda: query(url, promql), 20, f"data for {where}: {promql}")  # raises if empty
        # ...and the operator dashboard's sweep row, for a sweep.
        for where, promql in dashboard_exprs(CHART / "dashboards/operator.json"):
            if "sweep" in promql:
                wait(lambda: query(url, promql), 20, f"data for {where}: {promql}")

        # The trainer stalls: the alert goes pending, then fires.
        stall.set()
        trainer.join(timeout=30)
        firing = wait(lambda: [a for a in query(url, alert) if a["metric"]["alertstate"] == "firing"], 60, "the alert to fire")
        assert firing[0]["metric"]["severity"] == "warning"
        # The finished-job guard: at 100% the same stall is not an alert.
        m.progress_ratio.set(1.0)
        wait(lambda: query(url, alert) == [] or None, 30, "the alert to clear at 100%")
    finally:
        stall.set()
        m.stop()
        op_server.shutdown()


def test_a_trainer_pod_cannot_write_another_namespace_s_series(prom):
    """A pod in team-a whose metrics claim namespace victim and another job: its
    series are team-a's and its own job's, whatever it says."""
    from kubetune_trainer.metrics import TrainerMetrics

    forged = TrainerMetrics(namespace="victim", job="victim-job", rank=0)
    port = forged.serve(port=0, addr="127.0.0.1")
    try:
        forged.step.set(7)
        url = prom([], pods=[(f"127.0.0.1:{port}", "team-a", "own-job")])
        (series,) = wait(lambda: query(url, "kubetune_trainer_step"), 30, "the pod's series")
        assert series["metric"]["namespace"] == "team-a" and series["metric"]["job"] == "own-job"
        assert not {"exported_namespace", "exported_job"} & set(series["metric"])
        assert query(url, 'kubetune_trainer_step{namespace="victim"}') == []
    finally:
        forged.stop()


def _dashboard_promql(namespace: str, job: str, rate_interval: str, objective: str = "dpo") -> list[tuple[str, str]]:
    from kubetune_contract.metric_names import GRPO_METRIC_NAMES, PREFERENCE_METRIC_NAMES, TRACKING_DEGRADED_INFO
    from kubetune_trainer.metrics import GPU_METRIC_NAMES

    # NVML-only series: no GPU here; an sft run exports no preference series, and
    # a run whose tracking works no degraded one (the synthetic run has both).
    skipped = GPU_METRIC_NAMES + ((*PREFERENCE_METRIC_NAMES, *GRPO_METRIC_NAMES, TRACKING_DEGRADED_INFO) if objective == "sft" else ())
    out = []
    for where, expr in dashboard_exprs(CHART / "dashboards/training.json"):
        promql = expr.replace("$namespace", namespace).replace("$job", job).replace("$__rate_interval", rate_interval)
        if not any(name in promql for name in skipped):
            out.append((where, promql))
    return out


@pytest.mark.cluster
def test_dashboard_queries_return_data_for_a_live_training_run(kube, namespace, operator_factory, s3_env,
                                                                bucket_with_assets, prom):
    op = operator_factory(**s3_env)
    doc = quickstart(bucket_with_assets, "watched")
    # Long enough to query while it runs (a finished pod's series go stale);
    # frequent evaluations and checkpoints so their panels have data early.
    doc["spec"]["training"].update(maxSteps=5000, learningRate=0.0003, evalEverySteps=10)
    doc["spec"]["checkpoint"] = {"everySteps": 10, "keepLast": 2}
    create(kube, namespace, doc)

    def trainer_ip():
        running = [p for p in pods(kube, namespace) if (p.get("status") or {}).get("phase") == "Running"]
        return running and running[0]["status"].get("podIP")
    ip = wait(trainer_ip, 120, "a running trainer pod")
    url = prom([f"127.0.0.1:{op.metrics_port}"], pods=[(f"{ip}:9400", namespace, "watched")])
    # A committed checkpoint first: the upload panels need one.
    wait(lambda: (status(kube, namespace, "watched").get("checkpoint") or {}).get("step"), 180, "a committed checkpoint")
    for where, promql in _dashboard_promql(namespace, "watched", "1m", objective="sft"):
        wait(lambda: query(url, promql), 60, f"data for {where}: {promql}")
    assert status(kube, namespace, "watched")["phase"] == "Running", "the queries ran against a live trainer"
    loss = query(url, f'kubetune_trainer_loss{{namespace="{namespace}", job="watched"}}')
    assert float(loss[0]["value"][1]) > 0 and loss[0]["metric"]["rank"] == "0"
    # Stop the run before the bucket is emptied: a trainer still uploading
    # checkpoints would refill it.
    kube.raw.request("DELETE", f"{FTJ.format(ns=namespace)}/watched")
    wait(lambda: not pods(kube, namespace) or None, 90, "the trainer pod gone")
