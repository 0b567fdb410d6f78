"""The trainer's Prometheus metric names. The trainer exports them, the operator
scrapes rank 0's endpoint for status, and the chart's dashboards and alerts
query them (a test checks each query against this list).

Labels: namespace, job, rank (GPU metrics add device)."""

from __future__ import annotations

PREFIX = "kubetune_trainer_"

LOSS = "kubetune_trainer_loss"
EVAL_LOSS = "kubetune_trainer_eval_loss"
# The step of the evaluation eval_loss comes from (a sweep compares trials at the same step).
EVAL_STEP = "kubetune_trainer_eval_step"
LEARNING_RATE = "kubetune_trainer_learning_rate"
GRAD_NORM = "kubetune_trainer_grad_norm"
TOKENS_PER_SECOND = "kubetune_trainer_tokens_per_second"
SAMPLES_PER_SECOND = "kubetune_trainer_samples_per_second"
STEP = "kubetune_trainer_step"
TOTAL_STEPS = "kubetune_trainer_total_steps"
EPOCH = "kubetune_trainer_epoch"
PROGRESS_RATIO = "kubetune_trainer_progress_ratio"
ETA_SECONDS = "kubetune_trainer_eta_seconds"
TOKENS_TOTAL = "kubetune_trainer_tokens_total"
PADDING_FRACTION = "kubetune_trainer_padding_fraction"
CHECKPOINT_UPLOAD_SECONDS = "kubetune_trainer_checkpoint_upload_seconds"
CHECKPOINT_BLOCKED_SECONDS = "kubetune_trainer_checkpoint_blocked_seconds"
CHECKPOINT_UPLOAD_FAILURES_TOTAL = "kubetune_trainer_checkpoint_upload_failures_total"
LAST_COMMITTED_STEP = "kubetune_trainer_last_committed_step"
# An info metric: its `uri` label is the newest committed checkpoint's URI, as the
# trainer wrote it. The operator reports that URI; it never rebuilds one.
LAST_COMMITTED_CHECKPOINT = "kubetune_trainer_last_committed_checkpoint"
LAST_COMMITTED_CHECKPOINT_INFO = f"{LAST_COMMITTED_CHECKPOINT}_info"
GPU_UTILIZATION_RATIO = "kubetune_trainer_gpu_utilization_ratio"
GPU_MEMORY_USED_BYTES = "kubetune_trainer_gpu_memory_used_bytes"
GPU_MEMORY_TOTAL_BYTES = "kubetune_trainer_gpu_memory_total_bytes"
GPU_POWER_WATTS = "kubetune_trainer_gpu_power_watts"
UP = "kubetune_trainer_up"
# An info metric, exported once a tracker degrades: its `reason` label says which
# and why (redacted), so the operator shows it while the job still trains.
TRACKING_DEGRADED = "kubetune_trainer_tracking_degraded"
TRACKING_DEGRADED_INFO = f"{TRACKING_DEGRADED}_info"
# Held-out evaluation (spec.evaluation): one series per metric (a name of
# kubetune_contract.evaluation_metrics) and model (base, tuned, or a baseline:
# mean, linear, randomForest); and the share of numeric answers that parsed.
EVAL_SCORE = "kubetune_trainer_eval_score"
EVAL_PARSE_RATE = "kubetune_trainer_eval_parse_rate"
EVAL_LABELS = ("metric", "model")
# Preference objectives (dpo, orpo, kto), from TRL's own training logs: the mean
# implicit rewards of the chosen and the rejected answers (beta times the
# policy-to-reference log-ratio; ORPO: of the policy alone), their margin, and the
# share of the batch's pairs whose chosen reward is the higher (not logged by KTO).
REWARDS_CHOSEN = "kubetune_trainer_rewards_chosen"
REWARDS_REJECTED = "kubetune_trainer_rewards_rejected"
REWARD_MARGIN = "kubetune_trainer_reward_margin"
PREFERENCE_ACCURACY = "kubetune_trainer_preference_accuracy"
PREFERENCE_METRIC_NAMES = (REWARDS_CHOSEN, REWARDS_REJECTED, REWARD_MARGIN, PREFERENCE_ACCURACY)
# GRPO: the mean weighted reward of the last logged batch, and each reward's mean
# (label `reward`: its name, spec.grpo.rewards' type, numbered when listed twice).
REWARD_MEAN = "kubetune_trainer_reward_mean"
REWARD = "kubetune_trainer_reward"
GRPO_METRIC_NAMES = (REWARD_MEAN, REWARD)

GPU_METRIC_NAMES = (GPU_UTILIZATION_RATIO, GPU_MEMORY_USED_BYTES, GPU_MEMORY_TOTAL_BYTES, GPU_POWER_WATTS)
HISTOGRAMS = (CHECKPOINT_UPLOAD_SECONDS, CHECKPOINT_BLOCKED_SECONDS)
METRIC_NAMES = (
    LOSS, EVAL_LOSS, EVAL_STEP, LEARNING_RATE, GRAD_NORM, TOKENS_PER_SECOND, SAMPLES_PER_SECOND, STEP, TOTAL_STEPS, EPOCH,
    PROGRESS_RATIO, ETA_SECONDS, TOKENS_TOTAL, PADDING_FRACTION, CHECKPOINT_UPLOAD_SECONDS, CHECKPOINT_BLOCKED_SECONDS,
    CHECKPOINT_UPLOAD_FAILURES_TOTAL, LAST_COMMITTED_STEP, LAST_COMMITTED_CHECKPOINT_INFO, *GPU_METRIC_NAMES, UP, TRACKING_DEGRADED_INFO,
    EVAL_SCORE, EVAL_PARSE_RATE, *PREFERENCE_METRIC_NAMES, *GRPO_METRIC_NAMES,
)
# What Prometheus exposes for each (histograms as _bucket/_sum/_count).
EXPOSED_NAMES = tuple(
    n for name in METRIC_NAMES
    for n in ((f"{name}_bucket", f"{name}_sum", f"{name}_count") if name in HISTOGRAMS else (name,))
)
