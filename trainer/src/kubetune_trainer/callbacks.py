"""Trainer callbacks: metrics, checkpoint upload, progress, SIGTERM, loss watchdog, early stopping.

Each does one job and talks to the training loop only through `control`
flags, so the loop itself stays TRL's.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from . import distributed
from .metrics import PREFERENCE_LOGS

log = logging.getLogger("kubetune.train")


class TokenCounter:
    """Counts real (non-padding) tokens, positions and sequences of training forwards.

    A forward pre-hook on the model sees every batch in the form the model
    gets it, whether padded (attention_mask) or padding-free/packed
    (position_ids restarting at 0 per sequence), at no measurable cost.
    """

    def __init__(self):
        self.tokens = 0
        self.positions = 0
        self.sequences = 0
        self._handle = None

    def attach(self, model) -> "TokenCounter":
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def detach(self) -> None:
        if self._handle:
            self._handle.remove()
            self._handle = None

    def _hook(self, module, args, kwargs):
        if not module.training:
            return None
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return None
        positions = ids.numel()
        mask = kwargs.get("attention_mask")
        pos_ids = kwargs.get("position_ids")
        if mask is not None:
            real = int(mask.sum())
            seqs = ids.shape[0]
        else:
            real = positions
            seqs = int((pos_ids == 0).sum()) if pos_ids is not None else ids.shape[0]
        self.tokens += real
        self.positions += positions
        self.sequences += seqs
        return None

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.tokens / self.positions if self.positions else 0.0


class MetricsCallback(TrainerCallback):
    """Feeds the Prometheus gauges from the loop; keeps the last values for the report."""

    def __init__(self, metrics, counter: TokenCounter, world_size: int = 1, window: int = 20):
        self.m = metrics
        self.counter = counter
        self.world = world_size
        self.window: deque[tuple[float, int, int, int]] = deque(maxlen=window)
        self.last: dict = {}
        self._counted = 0
        # (step, tokens/s) at each logged training loss: the report's throughput curve
        self.throughput: list[tuple[int, float]] = []

    def on_train_begin(self, args, state, control, **kw):
        if self.m:
            self.m.up.set(1)
            self.m.total_steps.set(state.max_steps)
            self.m.step.set(state.global_step)
        self.window.append((time.monotonic(), state.global_step, self.counter.tokens, self.counter.sequences))

    def on_step_end(self, args, state, control, **kw):
        now = time.monotonic()
        self.window.append((now, state.global_step, self.counter.tokens, self.counter.sequences))
        t0, s0, tok0, seq0 = self.window[0]
        dt = now - t0
        tps = (self.counter.tokens - tok0) / dt * self.world if dt > 0 else 0.0
        sps = (self.counter.sequences - seq0) / dt * self.world if dt > 0 else 0.0
        per_step = dt / (state.global_step - s0) if state.global_step > s0 else 0.0
        eta = per_step * max(0, state.max_steps - state.global_step)
        self.last.update(tokensPerSecond=tps, samplesPerSecond=sps, etaSeconds=eta, paddingFraction=self.counter.padding_fraction,
                         tokensTotal=self.counter.tokens * self.world)
        if self.m:
            self.m.step.set(state.global_step)
            self.m.epoch.set(state.epoch or 0.0)
            self.m.progress_ratio.set(state.global_step / state.max_steps if state.max_steps else 0.0)
            self.m.eta_seconds.set(eta)
            self.m.tokens_per_second.set(tps)
            self.m.samples_per_second.set(sps)
            self.m.padding_fraction.set(self.counter.padding_fraction)
            self.m.tokens_total.inc((self.counter.tokens - self._counted) * self.world)
        self._counted = self.counter.tokens

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        for key, out in (("loss", "trainLoss"), ("eval_loss", "evalLoss"), ("learning_rate", "learningRate"), ("grad_norm", "gradNorm")):
            if logs.get(key) is not None:
                value = float(logs[key])
                self.last[out] = value
                if self.m:
                    getattr(self.m, key).set(value)
        if logs.get("loss") is not None and "tokensPerSecond" in self.last:
            self.throughput.append((state.global_step, self.last["tokensPerSecond"]))
        if self.m and logs.get("eval_loss") is not None:
            self.m.eval_step.set(state.global_step)
        for key, out, gauge in PREFERENCE_LOGS:
            if logs.get(key) is not None:
                self.last[out] = float(logs[key])
                if self.m:
                    getattr(self.m, gauge).set(float(logs[key]))
        self._grpo_rewards(logs)

    def _grpo_rewards(self, logs: dict) -> None:
        """GRPO's `reward` and `rewards/<name>/mean` (training logs only, not eval_ ones)."""
        if self.m is None:
            return
        for key, value in logs.items():
            if key.startswith("rewards/") and key.endswith("/mean") and value is not None:
                self.m.reward.labels(**self.m.labels, reward=key[len("rewards/"):-len("/mean")]).set(float(value))

    def on_train_end(self, args, state, control, **kw):
        if self.m:
            self.m.step.set(state.global_step)


class ProgressCallback(TrainerCallback):
    """One readable line per log event on rank 0 (replaces the dict printer)."""

    def __init__(self, metrics_cb: MetricsCallback):
        self.mcb = metrics_cb

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs:
            return
        parts = [f"step {state.global_step}/{state.max_steps}"]
        for key, fmt in (("loss", "loss {:.4f}"), ("eval_loss", "eval_loss {:.4f}"), ("learning_rate", "lr {:.2e}"), ("grad_norm", "grad_norm {:.3f}")):
            if logs.get(key) is not None:
                parts.append(fmt.format(logs[key]))
        last = self.mcb.last
        if "tokensPerSecond" in last and "loss" in logs:
            parts.append(f"{last['tokensPerSecond']:.0f} tok/s eta {last['etaSeconds']:.0f}s")
        log.info(" ".join(parts))


class CheckpointCallback(TrainerCallback):
    """After the Trainer writes checkpoint-N locally, each node's local rank 0 hands
    what its node wrote to its uploader (node 0's commits the step).

    What the loop waits here (the barrier and the snapshot; the upload itself
    runs in the background) is kubetune_trainer_checkpoint_blocked_seconds.
    """

    def __init__(self, uploader, is_main: bool, metrics=None, keep_local: int = 2):
        self.uploader = uploader
        self.is_main = is_main
        self.m = metrics
        self.keep_local = keep_local

    def on_save(self, args, state, control, **kw):
        start = time.monotonic()
        # Every rank has written its shards/RNG state before the snapshots.
        distributed.barrier()
        if self.uploader is not None:
            local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self.uploader.submit(local, state.global_step)
            if not self.is_main:
                prune_local(Path(args.output_dir), self.keep_local)
        if self.m:
            self.m.checkpoint_blocked_seconds.observe(time.monotonic() - start)


def prune_local(output_dir: Path, keep: int) -> None:
    """The Trainer rotates local checkpoints (save_total_limit) on global rank 0
    only: other nodes would keep every one they wrote. Their uploader works on a
    hard-linked snapshot, so older local copies can go."""
    import shutil

    found = sorted((p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]))
    for old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


class StopFlag:
    """Set from the SIGTERM handler; read by StopCallback at step boundaries."""

    def __init__(self):
        self.requested = False
        self.training = False


class StopCallback(TrainerCallback):
    """On SIGTERM: save a checkpoint at the current step and stop, on every rank at the same step."""

    def __init__(self, flag: StopFlag, distributed_run: bool):
        self.flag = flag
        self.distributed_run = distributed_run
        self.stopped = False

    def on_train_begin(self, args, state, control, **kw):
        self.flag.training = True

    def on_step_end(self, args, state, control, **kw):
        stop = distributed.any_rank(self.flag.requested) if self.distributed_run else self.flag.requested
        if stop and not self.stopped:
            self.stopped = True
            log.warning("SIGTERM: checkpointing step %d and stopping", state.global_step)
            control.should_save = True
            control.should_training_stop = True
            control.should_evaluate = False


class LossWatchdog(TrainerCallback):
    """Stops on a NaN/inf loss, or one that climbs well above where this run started.

    The reference is the lowest of the first `warmup_logs` logged losses. A loss
    counts as diverged when it exceeds `factor` x the reference AND the
    reference + `margin` nats: ratios alone fire falsely once the loss is near
    zero (0.03 → 0.15 is noise, not divergence).
    """

    def __init__(self, factor: float = 3.0, warmup_logs: int = 3, margin: float = 1.0):
        self.factor = factor
        self.warmup = max(1, warmup_logs)
        self.margin = margin
        self.early: list[float] = []
        self.reason: str | None = None

    @property
    def reference(self) -> float | None:
        return min(self.early) if len(self.early) >= self.warmup else None

    def on_log(self, args, state, control, logs=None, **kw):
        loss = (logs or {}).get("loss")
        if loss is None or self.reason:
            return
        if not math.isfinite(loss):
            self.reason = f"training loss became {loss} at step {state.global_step}"
        elif self.reference is None:
            self.early.append(loss)
        elif loss > self.factor * self.reference and loss > self.reference + self.margin:
            self.reason = (f"training loss {loss:.4g} at step {state.global_step} exceeds {self.factor:g}x "
                           f"the starting loss {self.reference:.4g}")
        if self.reason:
            log.error("loss watchdog: %s", self.reason)
            control.should_training_stop = True
            control.should_save = False  # never checkpoint a diverged state


class EarlyStopping(TrainerCallback):
    """Stops when eval loss has not improved by `threshold` for `patience` evaluations."""

    def __init__(self, patience: int, threshold: float):
        self.patience = patience
        self.threshold = threshold
        self.best = math.inf
        self.bad = 0
        self.stopped_at: int | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        if self.best - loss > self.threshold:
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            self.stopped_at = state.global_step
            log.info("early stopping at step %d: eval loss has not improved for %d evaluations (best %.4f)", state.global_step, self.bad, self.best)
            control.should_training_stop = True
            control.should_save = True


@dataclass
class LoopCallbacks:
    """The callbacks one run hands the Trainer, kept by name so the lifecycle can
    read their outcome (why training stopped, what was measured)."""

    counter: TokenCounter
    metrics: MetricsCallback
    watchdog: LossWatchdog
    stop: StopCallback
    checkpoint: CheckpointCallback
    early: EarlyStopping | None
    best: TrainerCallback | None = None  # best_checkpoint.KeepBest with training.keepBest

    def all(self) -> list[TrainerCallback]:
        chosen = [self.metrics, ProgressCallback(self.metrics), self.watchdog, self.stop, self.checkpoint]
        return chosen + ([self.early] if self.early else []) + ([self.best] if self.best else [])


def loop_callbacks(cfg, *, metrics, flag: StopFlag, uploader, topo, has_eval: bool) -> LoopCallbacks:
    counter = TokenCounter()
    early = cfg.training.early_stopping
    return LoopCallbacks(
        counter=counter,
        metrics=MetricsCallback(metrics, counter, world_size=topo.world_size),
        watchdog=LossWatchdog(cfg.watchdog.factor, cfg.watchdog.warmup_logs, cfg.watchdog.margin),
        stop=StopCallback(flag, topo.distributed),
        checkpoint=CheckpointCallback(uploader, topo.is_main, metrics),
        early=EarlyStopping(early.patience, early.threshold) if early and has_eval else None,
        best=_keep_best(uploader) if cfg.training.keep_best and has_eval else None,
    )


def _keep_best(uploader):
    from .best_checkpoint import KeepBest

    return KeepBest(uploader)
