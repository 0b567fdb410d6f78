"""The trainer's /metrics text into status.progress / status.metrics / status.checkpoint.
The checkpoint URI is the one the trainer published, never one rebuilt from the step."""

from __future__ import annotations

from kubetune_operator.status.progress import TrainerReading, format_eta, progress_patch, read_trainer_metrics

TEXT = """\
# HELP kubetune_trainer_step Optimizer steps done.
# TYPE kubetune_trainer_step gauge
kubetune_trainer_step{job="q",namespace="ns",rank="0"} 20.0
kubetune_trainer_step{job="q",namespace="ns",rank="1"} 19.0
# TYPE kubetune_trainer_total_steps gauge
kubetune_trainer_total_steps{job="q",namespace="ns",rank="0"} 60.0
# TYPE kubetune_trainer_epoch gauge
kubetune_trainer_epoch{job="q",namespace="ns",rank="0"} 0.6666666
# TYPE kubetune_trainer_progress_ratio gauge
kubetune_trainer_progress_ratio{job="q",namespace="ns",rank="0"} 0.3333333
# TYPE kubetune_trainer_eta_seconds gauge
kubetune_trainer_eta_seconds{job="q",namespace="ns",rank="0"} 754.2
# TYPE kubetune_trainer_loss gauge
kubetune_trainer_loss{job="q",namespace="ns",rank="0"} 2.4567891
# TYPE kubetune_trainer_eval_loss gauge
kubetune_trainer_eval_loss{job="q",namespace="ns",rank="0"} NaN
# TYPE kubetune_trainer_tokens_per_second gauge
kubetune_trainer_tokens_per_second{job="q",namespace="ns",rank="0"} 1234.5
# TYPE kubetune_trainer_last_committed_step gauge
kubetune_trainer_last_committed_step{job="q",namespace="ns",rank="0"} 20.0
# TYPE kubetune_trainer_last_committed_checkpoint_info gauge
kubetune_trainer_last_committed_checkpoint_info{job="q",namespace="ns",rank="0",uri="s3://b/ns/q/checkpoints/step-00000020"} 1.0
# TYPE kubetune_trainer_up gauge
kubetune_trainer_up{job="q",namespace="ns",rank="0"} 1.0
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.0
"""


def test_parse_rank_zero_only_and_drop_nan():
    reading = read_trainer_metrics(TEXT)
    assert reading.values["step"] == 20.0
    assert "eval_loss" not in reading.values
    assert reading.values["up"] == 1.0
    assert reading.checkpoint_uri == "s3://b/ns/q/checkpoints/step-00000020"
    assert read_trainer_metrics(TEXT, rank="1") == TrainerReading({"step": 19.0}, None)


def test_progress_patch_golden():
    patch = progress_patch(read_trainer_metrics(TEXT))
    assert patch == {
        "progress": {"step": 20, "totalSteps": 60, "epoch": 0.667, "percent": 33.3, "eta": "12m34s", "summary": "20/60 (33%)"},
        "metrics": {"trainLoss": 2.456789, "tokensPerSecond": 1234.5},
        "checkpoint": {"uri": "s3://b/ns/q/checkpoints/step-00000020", "step": 20},
    }


def test_before_the_first_step_and_checkpoint():
    patch = progress_patch(TrainerReading({"step": 0.0, "total_steps": 60.0, "last_committed_step": 0.0}))
    assert patch == {"progress": {"step": 0, "totalSteps": 60, "percent": 0.0, "summary": "0/60 (0%)"}}
    assert progress_patch(TrainerReading()) == {}


def test_a_committed_step_without_a_published_uri_reports_no_checkpoint():
    # An older trainer published only the step: the operator does not guess the path.
    assert "checkpoint" not in progress_patch(TrainerReading({"step": 40.0, "last_committed_step": 40.0}))


def test_eta_format():
    assert [format_eta(s) for s in (0, 59.9, 61, 3600 * 5 + 61)] == ["0s", "59s", "1m01s", "5h01m"]


def test_a_preference_jobs_rewards_reach_status_metrics():
    """The trainer's own gauges for a dpo job, as its endpoint renders them, into status.metrics."""
    from prometheus_client import generate_latest

    from kubetune_trainer.metrics import TrainerMetrics

    m = TrainerMetrics(namespace="ns", job="q", rank=0)
    m.loss.set(0.41)
    m.rewards_chosen.set(0.25), m.rewards_rejected.set(-0.5), m.reward_margin.set(0.75), m.preference_accuracy.set(0.875)
    patch = progress_patch(read_trainer_metrics(generate_latest(m.registry).decode()))
    assert patch["metrics"] == {"trainLoss": 0.41, "tokensPerSecond": 0.0, "rewardMargin": 0.75, "rewardAccuracy": 0.875}


def test_the_loss_column_rounds_alike_while_running_and_once_succeeded():
    """kubectl's LOSS column prints status.metrics.trainLoss as stored: the number
    read from /metrics while the job ran and the one of the termination message
    once it succeeded are stored with the same digits."""
    from kubetune_operator.status.report import apply_report

    loss = 0.00805659294128418
    running = progress_patch(TrainerReading(values={"loss": loss, "eval_loss": 1234.5678901, "tokens_per_second": 98765.4321}))
    finished: dict = {}
    apply_report(finished, {"metrics": {"trainLoss": loss, "evalLoss": 1234.5678901, "tokensPerSecond": 98765.4321}})
    assert running["metrics"] == finished["metrics"] == {"trainLoss": 0.008056593, "evalLoss": 1234.568, "tokensPerSecond": 98765.43}
