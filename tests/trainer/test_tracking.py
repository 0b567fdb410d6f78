"""Experiment tracking on the tiny model: a real `mlflow server` (shared by the
session), W&B offline run files, W&B online against a stand-in for its server
(no W&B server runs here), TensorBoard event files read back with
TensorBoard's own reader, and a tracker that does not answer.

In-process (main(cfg)), like test_train.py: the tracking threads are the
trainer's own, the servers are real processes.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from .helpers import base_config, output_dir
from .test_train import train

pytestmark = pytest.mark.trainer


def _history(out: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of one curve as the trainer's report (metrics.json) has it."""
    summary = json.loads((out / "metrics.json").read_text())
    return [(h["step"], h[key]) for h in summary["history"] if key in h]


def test_mlflow_run_and_tensorboard_files_hold_what_the_trainer_reports(tiny_model, dataset, tmp_path, monkeypatch, mlflow_server):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    experiment = f"kt-{uuid.uuid4().hex[:8]}"
    cfg = base_config(tiny_model, dataset("completion"),
                      tracking={"backend": "mlflow", "uri": mlflow_server.url, "project": experiment, "tensorboard": True})
    code, result, _ = train(cfg, tmp_path, monkeypatch)
    assert code == 0, result
    out = output_dir(cfg)
    tracking = result["tracking"]
    assert "degraded" not in tracking, tracking

    client = mlflow_server.client()
    found = client.get_experiment_by_name(experiment)
    (run,) = client.search_runs([found.experiment_id])
    assert tracking["runUrl"] == f"{mlflow_server.url}/#/experiments/{found.experiment_id}/runs/{run.info.run_id}"
    assert run.info.status == "FINISHED" and run.info.run_name == "test-tiny"
    # The run's latest metrics are the trainer's final ones; its curve is the report's.
    for key in ("trainLoss", "evalLoss", "tokensPerSecond"):
        assert run.data.metrics[key] == pytest.approx(result["metrics"][key], rel=1e-6), key
    logged = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "trainLoss") if m.step < result["step"]]
    assert logged == [(s, pytest.approx(v, rel=1e-6)) for s, v in _history(out, "trainLoss") if s < result["step"]]
    assert [step for step, _ in logged] == [1, 5, 10, 15, 20, 25, 30, 35]  # the first step, then every 5 (40 checked above)
    assert run.data.params["training.learningRate"] == "0.003" and run.data.params["method"] == "lora"
    assert run.data.params["tracking.uri"] == mlflow_server.url
    reported = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/metrics.json", "report/report.html", "report/report.md"} <= reported, reported
    downloaded = Path(client.download_artifacts(run.info.run_id, "report/metrics.json", str(tmp_path / "dl")))
    assert json.loads(downloaded.read_text())["train"]["steps"] == 40

    # TensorBoard: the event files uploaded with the outputs hold the same loss curve.
    assert tracking["tensorboardUri"] == f"file://{out}/tracking/tensorboard"
    events = EventAccumulator(str(out / "tracking" / "tensorboard"))
    events.Reload()
    curve = [(e.step, e.value) for e in events.Scalars("trainLoss")]
    reported = _history(out, "trainLoss")
    assert len(reported) == 9 and curve[:9] == [(s, pytest.approx(v, rel=1e-5)) for s, v in reported]
    assert curve[-1][1] > 0 and curve[-1][1] < curve[0][1], curve  # the loss fell
    evaluated = {(e.step, round(e.value, 5)) for e in events.Scalars("evalLoss")}
    # The base model's (step 0, the baseline step), then during and after training.
    assert evaluated == {(s, round(v, 5)) for s, v in _history(out, "evalLoss")} and len(evaluated) == 3, evaluated


def test_a_failed_run_marks_its_tracker_run_failed_and_reports_it(tiny_model, dataset, tmp_path, monkeypatch, mlflow_server):
    experiment = f"kt-{uuid.uuid4().hex[:8]}"
    cfg = base_config(tiny_model, dataset("completion"), tracking={"backend": "mlflow", "uri": mlflow_server.url, "project": experiment},
                      method="full", lora=None, training={"learningRate": 1.0, "maxGradNorm": 0.0, "logEverySteps": 1})  # diverges within steps
    code, result, _ = train(cfg, tmp_path, monkeypatch)
    assert code == 3 and result["reason"] == "LossDiverged", result
    client = mlflow_server.client()
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FAILED"
    assert result["tracking"]["runUrl"].endswith(f"/runs/{run.info.run_id}") and "degraded" not in result["tracking"]
    assert 0 < len(client.get_metric_history(run.info.run_id, "trainLoss")) <= result["step"]


def test_wandb_offline_writes_the_run_files_with_the_outputs(tiny_model, dataset, tmp_path, monkeypatch):
    from .wandb_records import history

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = base_config(tiny_model, dataset("completion"), tracking={"backend": "wandb", "mode": "offline", "project": "kt"},
                      training={"maxSteps": 20})
    code, result, _ = train(cfg, tmp_path, monkeypatch)
    assert code == 0, result
    out = output_dir(cfg)
    tracking = result["tracking"]
    assert "degraded" not in tracking and "runUrl" not in tracking, tracking  # offline: no server, no URL yet
    uploaded = Path(tracking["filesUri"].removeprefix("file://"))
    assert uploaded.parent == out / "tracking" / "wandb" and uploaded.name.startswith("offline-run-")
    (run_file,) = uploaded.glob("run-*.wandb")
    rows = [r for r in history(run_file) if "trainLoss" in r]
    assert rows, (run_file.stat().st_size, history(run_file))
    assert [(r["_step"], r["trainLoss"]) for r in rows if r["_step"] < 20] == [
        (s, pytest.approx(v, rel=1e-6)) for s, v in _history(out, "trainLoss") if s < 20]
    assert rows[-1]["trainLoss"] == pytest.approx(result["metrics"]["trainLoss"], rel=1e-6)


def test_wandb_online_logs_the_run_to_the_server(tiny_model, dataset, tmp_path, monkeypatch):
    """Against a stand-in for the W&B server (tests/trainer/wandb_standin.py: no W&B
    server runs here), through W&B's own client: the run, its config, its curve."""
    from .wandb_standin import ENTITY, WandbStandIn

    key = "k" * 40  # the Secret's value, as the pod's env has it
    monkeypatch.setenv("WANDB_API_KEY", key)
    server = WandbStandIn()
    try:
        cfg = base_config(tiny_model, dataset("completion"), tracking={"backend": "wandb", "project": "kt", "uri": server.url},
                          credentials={"tracking": {"name": "tracker", "key": "WANDB_API_KEY"}}, training={"maxSteps": 20})
        code, result, _ = train(cfg, tmp_path, monkeypatch)
    finally:
        server.close()
    assert code == 0, result
    tracking = result["tracking"]
    assert "degraded" not in tracking and "filesUri" not in tracking, tracking  # online: the files are on the server
    (run_id,) = server.runs
    assert tracking["runUrl"] == f"{server.url}/{ENTITY}/kt/runs/{run_id}", tracking
    run = server.runs[run_id]
    assert run["project"] == "kt" and run["displayName"] == "test-tiny", run
    assert json.loads(run["config"])["training"]["value"]["learningRate"] == 0.003
    rows = [r for r in server.history if "trainLoss" in r]
    out = output_dir(cfg)
    assert [(r["_step"], r["trainLoss"]) for r in rows if r["_step"] < 20] == [
        (s, pytest.approx(v, rel=1e-6)) for s, v in _history(out, "trainLoss") if s < 20]
    assert rows[-1]["trainLoss"] == pytest.approx(result["metrics"]["trainLoss"], rel=1e-6)
    assert {f"{run_id}/config.yaml", f"{run_id}/wandb-summary.json"} <= set(server.uploaded), sorted(server.uploaded)
    assert server.api_keys == {key}


def test_a_tracker_that_does_not_answer_degrades_while_training_finishes(tiny_model, dataset, tmp_path, monkeypatch, silent_server):
    from kubetune_trainer.tracking import CALL_TIMEOUT_S

    data = dataset("completion")
    runs = {}
    for name, over in (("plain", {}), ("tracked", {"tracking": {"backend": "mlflow", "uri": silent_server.url}})):
        cfg = base_config(tiny_model, data, output={"uri": f"file://{tmp_path}/{name}/output"},
                          checkpoint={"uri": f"file://{tmp_path}/{name}/checkpoints"}, **over)
        code, runs[name], _ = train(cfg, tmp_path, monkeypatch, name=name)
        assert code == 0, runs[name]
    without, with_ = runs["plain"], runs["tracked"]
    assert with_["step"] == without["step"] == 40 and with_["reason"] == "Completed"
    assert with_["metrics"]["trainLoss"] == pytest.approx(without["metrics"]["trainLoss"], rel=1e-6)  # the same training
    # One call, never answered, never retried: the client gave up after its own timeout (the
    # reason says so; had the end of the run waited out its close deadline instead, the reason
    # would be "did not answer within ..."), and every later call was dropped, not sent.
    degraded = with_["tracking"]["degraded"]
    assert degraded.startswith("mlflow: start failed") and "Read timed out" in degraded, with_["tracking"]
    assert f"read timeout={int(CALL_TIMEOUT_S)}" in degraded, degraded
    assert silent_server.requests == ["GET /api/2.0/mlflow/experiments/get-by-name?experiment_name=test HTTP/1.1"], silent_server.requests
    assert "runUrl" not in with_["tracking"]
