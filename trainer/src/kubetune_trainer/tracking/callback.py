"""The loop's side of tracking: each logged value, queued for the trackers."""

from __future__ import annotations

from transformers import TrainerCallback

# The Trainer's log keys, by the names the report and the trackers use.
LOGGED = (("loss", "trainLoss"), ("eval_loss", "evalLoss"), ("learning_rate", "learningRate"), ("grad_norm", "gradNorm"))


class TrackingCallback(TrainerCallback):
    def __init__(self, tracking):
        self.tracking = tracking

    def on_log(self, args, state, control, logs=None, **kw):
        values = {name: float(logs[key]) for key, name in LOGGED if (logs or {}).get(key) is not None}
        if values:
            self.tracking.log(state.global_step, values)
