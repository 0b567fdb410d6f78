"""The trainer's /metrics text into status.progress / status.metrics / status.checkpoint."""

from __future__ import annotations

from kubetune_operator.progress import format_eta, parse_trainer_metrics, progress_patch

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
# TYPE kubetune_trainer_up gauge
kubetune_trainer_up{job="q",namespace="ns",rank="0"} 1.0
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.0
"""


def test_parse_rank_zero_only_and_drop_nan():
    values = parse_trainer_metrics(TEXT)
    assert values["step"] == 20.0
    assert "eval_loss" not in values
    assert values["up"] == 1.0
    assert parse_trainer_metrics(TEXT, rank="1") == {"step": 19.0}


def test_progress_patch_golden():
    patch = progress_patch(parse_trainer_metrics(TEXT), "s3://b/ns/q/checkpoints/")
    assert patch == {
        "progress": {"step": 20, "totalSteps": 60, "epoch": 0.667, "percent": 33.3, "eta": "12m34s", "summary": "20/60 (33%)"},
        "metrics": {"trainLoss": 2.456789, "tokensPerSecond": 1234.5},
        "checkpoint": {"uri": "s3://b/ns/q/checkpoints/step-20/", "step": 20},
    }


def test_before_the_first_step_and_checkpoint():
    patch = progress_patch({"step": 0.0, "total_steps": 60.0, "last_committed_step": 0.0}, "s3://b/c")
    assert patch == {"progress": {"step": 0, "totalSteps": 60, "percent": 0.0, "summary": "0/60 (0%)"}}
    assert progress_patch({}, "s3://b/c") == {}


def test_eta_format():
    assert [format_eta(s) for s in (0, 59.9, 61, 3600 * 5 + 61)] == ["0s", "59s", "1m01s", "5h01m"]
