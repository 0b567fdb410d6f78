"""`training.keepBest`: the output is the checkpoint with the lowest validation
loss, not the last one.

The HF Trainer tracks the best validation loss (`metric_for_best_model`
eval_loss, set by `translate.training_arguments`) and keeps that checkpoint
when it rotates its local copies; `KeepBest` makes sure every new best is
checkpointed at the step it was measured (not only on the checkpoint
schedule) and that retention in the store never deletes it. After training,
`restore` loads it (HF's own loader, as `load_best_model_at_end` would: adapter
weights, full weights or DeepSpeed shards) so the save, evaluate and export
steps all see the best model. After a resume the local copy is gone: the
committed checkpoint is fetched from the store.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from transformers import TrainerCallback

from kubetune_contract.checkpoints import checkpoint_uri, step_dir

from . import checkpointing, distributed

log = logging.getLogger("kubetune.best")


class KeepBest(TrainerCallback):
    def __init__(self, uploader):
        self.uploader = uploader
        self.training = False

    def on_train_begin(self, args, state, control, **kw):
        self.training = True
        if state.best_global_step and self.uploader is not None:
            self.uploader.protect(state.best_global_step)  # resumed: the best so far stays

    def on_train_end(self, args, state, control, **kw):
        self.training = False

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        loss = (metrics or {}).get("eval_loss")
        if not self.training or loss is None or not math.isfinite(loss):
            return  # the evaluations before and after training choose nothing
        if state.best_metric is None or loss < state.best_metric:
            control.should_save = True
            if self.uploader is not None:
                self.uploader.protect(state.global_step)


def _local_copy(s, step: int) -> Path:
    """The best checkpoint's directory on this node: the Trainer's local copy, or the committed one fetched."""
    local = Path(s.trainer.args.output_dir) / f"checkpoint-{step}"
    if local.is_dir():
        return local
    fetched = s.workdir / "best" / step_dir(step)
    if s.topo.is_local_main:
        committed = next((c for c in checkpointing.list_committed(s.checkpoints) if c.step == step), None)
        if committed is None:
            raise FileNotFoundError(f"the best checkpoint (step {step}) is neither local nor committed to {s.checkpoints.uri}")
        checkpointing.download(s.checkpoints, committed, fetched)
    distributed.barrier()
    return fetched


def restore(s) -> None:
    """Make the trainer's model the best checkpoint's; record which it is."""
    state = s.trainer.state
    step = state.best_global_step
    if not s.cfg.training.keep_best or not step or state.best_metric is None:
        return
    s.state.best = {"uri": checkpoint_uri(s.checkpoints.uri, step) if s.checkpoints is not None else None,
                    "step": step, "evalLoss": float(state.best_metric)}
    s.state.summary.setdefault("train", {})["best"] = s.state.best
    if step == state.global_step:
        log.info("keepBest: the last step %d is the best (validation loss %.4g)", step, state.best_metric)
        return
    state.best_model_checkpoint = str(_local_copy(s, step))
    s.trainer._load_best_model()  # the Trainer's own loader, which load_best_model_at_end calls
    log.info("keepBest: output is step %d (validation loss %.4g), not the last step %d", step, state.best_metric, state.global_step)
