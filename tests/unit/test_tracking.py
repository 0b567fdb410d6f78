"""Tracking without a tracker: the channel that keeps calls off the training
loop, what the trainer reports, and how the operator shows it (status.tracking,
the Tracking condition). The real trackers (an MLflow server, W&B offline,
TensorBoard) are in tests/trainer/test_tracking.py."""

from __future__ import annotations

import json
import threading

import pytest

from kubetune_contract.tracking import TrackingOutcome
from kubetune_operator.api.status import FineTuneJobStatus, Reason
from kubetune_operator.status.observed import Observation, next_status
from kubetune_trainer.report import termination_message
from kubetune_trainer.storage import open_store
from kubetune_trainer.tracking import Tracking, flatten
from kubetune_trainer.tracking.channel import Channel

from .test_status_logic import NOW, REPORT_OK, job, pod


class Recorder:
    """A tracker that records its calls; `gate` (when given) holds every call until set."""

    name = "recorder"
    run_url = None
    files_dir = None

    def __init__(self, fail_on: str | None = None, gate: threading.Event | None = None):
        self.calls: list[tuple] = []
        self.fail_on = fail_on
        self.gate = gate
        self.done = threading.Event()

    def _call(self, method, *args):
        if self.gate is not None:
            self.gate.wait()
        if method == self.fail_on:
            raise ConnectionError(f"{method}: http://user:hunter2@tracker:5000 refused")
        self.calls.append((method, *args))
        if method == "finish":
            self.done.set()

    def start(self):
        self._call("start")

    def log_metrics(self, step, values):
        self._call("log_metrics", step, values)

    def finish(self, ok=True):
        self._call("finish", *([] if ok else [False]))


def test_only_finite_numbers_reach_the_trackers():
    tracker = Recorder()
    tracking = Tracking(backend="mlflow", channels=[Channel("recorder", tracker)])
    tracking.log(5, {"trainLoss": float("nan"), "gradNorm": float("inf"), "evalLoss": 1.5, "note": "x"})
    tracking.log(6, {"trainLoss": float("nan")})  # nothing left: no call at all
    tracking.channels[0].close(timeout=30)
    assert tracker.calls == [("log_metrics", 5, {"evalLoss": 1.5}), ("finish",)]


def test_calls_run_in_order_off_the_caller_and_finish_last():
    tracker = Recorder()
    channel = Channel("recorder", tracker)
    channel.submit("start")
    for step in (5, 10):
        channel.submit("log_metrics", step, {"trainLoss": 1.0 / step})
    assert channel.close(timeout=30) is True
    assert tracker.calls == [("start",), ("log_metrics", 5, {"trainLoss": 0.2}), ("log_metrics", 10, {"trainLoss": 0.1}), ("finish",)]
    assert channel.degraded is None and channel.dropped == 0


def test_a_stuck_tracker_never_blocks_the_caller_and_degrades_at_close():
    gate = threading.Event()  # never set before close: the tracker "does not answer"
    tracker = Recorder(gate=gate)
    channel = Channel("recorder", tracker, capacity=4)
    for step in range(10):  # more than the queue holds: the surplus is dropped, not waited for
        channel.submit("log_metrics", step, {"trainLoss": 1.0})
    assert channel.dropped >= 5
    assert channel.wait(0) is False  # close with no time left: the thread is still in its first call
    assert channel.degraded == "did not answer within 0s"
    gate.set()  # let the daemon thread finish so it does not outlive the test


def test_the_first_failure_degrades_and_later_calls_are_dropped_not_retried(caplog):
    tracker = Recorder(fail_on="start")
    channel = Channel("recorder", tracker)
    channel.submit("start")
    channel.submit("log_metrics", 5, {"trainLoss": 1.0})
    assert channel.close(timeout=30) is True
    assert tracker.calls == []  # neither the metrics nor finish reached a tracker that failed
    assert channel.degraded.startswith("start failed: ConnectionError: start:")
    assert channel.dropped == 2
    outcome = Tracking(backend="mlflow", channels=[channel]).degraded
    # The reason names the tracker, how much was dropped, and never a URL's password.
    assert outcome.startswith("recorder: start failed") and "(2 calls dropped)" in outcome
    assert "hunter2" not in outcome and "http://***@tracker:5000" in outcome
    assert "hunter2" not in channel.degraded and "hunter2" not in caplog.text and "tracker:5000" in caplog.text


def test_close_reports_where_the_run_is_and_uploads_the_trackers_files(tmp_path):
    files = tmp_path / "tb"
    files.mkdir()
    (files / "events.out.tfevents.1").write_bytes(b"x")

    class WithFiles(Recorder):
        name = "tensorboard"
        files_dir = files
        run_url = "http://user:secret@mlflow:5000/#/experiments/1/runs/abc"

    tracking = Tracking(backend="none", channels=[Channel("tensorboard", WithFiles())])
    outcome = tracking.close(open_store(f"file://{tmp_path}/out", None, None, deadline_s=5), deadline_s=30)
    assert outcome == TrackingOutcome(backend="none", run_url="http://***@mlflow:5000/#/experiments/1/runs/abc",
                                      tensorboard_uri=f"file://{tmp_path}/out/tracking/tensorboard")
    assert (tmp_path / "out/tracking/tensorboard/events.out.tfevents.1").read_bytes() == b"x"


def test_a_failed_run_finishes_its_tracker_run_as_failed_and_uploads_nothing(tmp_path):
    files = tmp_path / "tb"
    files.mkdir()
    (files / "events.out.tfevents.1").write_bytes(b"x")
    tracker = Recorder()
    tracker.files_dir = files
    outcome = Tracking(backend="mlflow", channels=[Channel("tensorboard", tracker)]).close(None, deadline_s=30, ok=False)
    assert tracker.calls == [("finish", False)]
    assert outcome == TrackingOutcome(backend="mlflow")


def test_the_resolved_config_becomes_flat_parameters():
    assert flatten({"method": "lora", "training": {"learningRate": 0.0002, "earlyStopping": None}, "lora": {"targetModules": ["q", "v"]}}) == {
        "method": "lora", "training.learningRate": "0.0002", "training.earlyStopping": "null", "lora.targetModules": "['q', 'v']"}


def _finished(report: dict) -> dict:
    done = job(("Complete", "", ""), completionTime=NOW)
    return next_status({"phase": "Running"}, Observation(job=done, pods=[pod("Succeeded", exit_code=0, message=json.dumps(report))]),
                       now=NOW, generation=1)


def test_the_operator_shows_the_run_and_a_logged_condition():
    tracking = {"backend": "mlflow", "runUrl": "http://mlflow:5000/#/experiments/3/runs/r1", "tensorboardUri": "s3://b/o/tracking/tensorboard"}
    status = _finished({**REPORT_OK, "tracking": tracking})
    assert status["tracking"] == tracking
    cond = {c["type"]: c for c in status["conditions"]}["Tracking"]
    assert (cond["status"], cond["reason"]) == ("True", Reason.TRACKING_LOGGED)
    assert cond["message"] == ("logged to mlflow; run http://mlflow:5000/#/experiments/3/runs/r1; "
                               "TensorBoard event files at s3://b/o/tracking/tensorboard")
    FineTuneJobStatus.model_validate(status, by_alias=True)


def test_a_degraded_tracker_is_a_condition_not_a_failure():
    status = _finished({**REPORT_OK, "tracking": {"backend": "mlflow", "degraded": "mlflow: start failed: Read timed out"}})
    assert status["phase"] == "Succeeded"
    cond = {c["type"]: c for c in status["conditions"]}["Tracking"]
    assert (cond["status"], cond["reason"]) == ("False", Reason.TRACKING_DEGRADED)
    assert cond["message"] == "tracking degraded; training went on without it: mlflow: start failed: Read timed out"
    assert status["tracking"]["degraded"] == "mlflow: start failed: Read timed out"


def test_a_degraded_tracker_shows_in_status_while_the_job_still_trains():
    """The first failure reaches the trainer's /metrics at once; the operator's
    scrape turns it into Tracking=False while the job runs; the final report's
    outcome replaces it when the job ends."""
    from prometheus_client import generate_latest

    from kubetune_operator.status.progress import read_trainer_metrics
    from kubetune_operator.status.observed import set_condition
    from kubetune_operator.status.tracking import degraded_while_running
    from kubetune_trainer.metrics import TrainerMetrics

    metrics = TrainerMetrics("ns", "job", 0)
    assert read_trainer_metrics(generate_latest(metrics.registry).decode()).tracking_degraded is None  # no series before
    heard = []
    channel = Channel("mlflow", Recorder(fail_on="start"), on_degrade=lambda why: (heard.append(why), metrics.tracking_degraded(why)))
    channel.submit("start")
    channel.submit("log_metrics", 1, {"trainLoss": 1.0})
    assert channel.close(timeout=30) is True
    assert len(heard) == 1 and heard[0].startswith("mlflow: start failed: ConnectionError") and "hunter2" not in heard[0]
    reading = read_trainer_metrics(generate_latest(metrics.registry).decode())
    assert reading.tracking_degraded == heard[0]
    running = {"phase": "Running", "conditions": set_condition([], *degraded_while_running(reading.tracking_degraded), NOW, 1)}
    cond = {c["type"]: c for c in running["conditions"]}["Tracking"]
    assert (cond["status"], cond["reason"]) == ("False", Reason.TRACKING_DEGRADED)
    assert cond["message"] == f"tracking degraded; training goes on without it: {heard[0]}"
    # A status sync while the job still runs keeps it (the operator owns no other source for it yet).
    still = next_status(running, Observation(job=job(), pods=[pod("Running", running=True)]), now=NOW, generation=1)
    assert {c["type"]: c for c in still["conditions"]}["Tracking"]["reason"] == Reason.TRACKING_DEGRADED
    ended = next_status(still, Observation(job=job(("Complete", "", ""), completionTime=NOW),
                                           pods=[pod("Succeeded", exit_code=0, message=json.dumps({**REPORT_OK, "tracking": {
                                               "backend": "mlflow", "degraded": heard[0]}}))]), now=NOW, generation=1)
    final = {c["type"]: c for c in ended["conditions"]}["Tracking"]
    assert final["message"] == f"tracking degraded; training went on without it: {heard[0]}" and ended["phase"] == "Succeeded"


@pytest.mark.parametrize("bad", ["not an object", {"backend": "mlflow", "runUrl": 7}, {"backend": "mlflow", "surprise": 1}])
def test_a_tracking_report_the_operator_cannot_read_is_left_out(bad):
    status = _finished({**REPORT_OK, "tracking": bad})
    assert "tracking" not in status and "Tracking" not in {c["type"] for c in status["conditions"]}
    assert status["phase"] == "Succeeded"


def test_no_tracker_no_tracking_condition():
    status = _finished(REPORT_OK)
    assert "tracking" not in status and "Tracking" not in {c["type"] for c in status["conditions"]}


def test_the_termination_message_carries_the_tracking_outcome():
    outcome = {"backend": "wandb", "filesUri": "s3://b/o/tracking/wandb/offline-run-1", "degraded": "x" * 600}
    body = json.loads(termination_message("Completed", "ok", step=3, total_steps=3, tracking=outcome))
    assert body["tracking"] == outcome
    assert "tracking" not in json.loads(termination_message("Completed", "ok"))
