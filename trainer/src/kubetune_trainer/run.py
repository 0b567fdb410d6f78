"""The training run, top to bottom: resume → build → train → save.

Side effects are limited to storage (checkpoints, outputs) and the metrics
server; everything else is delegated to the translators and callbacks.
`RunState` carries what the termination message needs, so `main` can report
a failure at any point with the step and checkpoint reached so far.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import checkpointing, distributed
from .config import TrainerConfig
from .errors import CheckpointFailed, Interrupted, LossDiverged
from .storage import join, open_store

log = logging.getLogger("kubetune.run")

WORKDIR_ENV = "KUBETUNE_WORKDIR"
DEFAULT_WORKDIR = "/tmp/kubetune"


@dataclass
class RunState:
    step: int | None = None
    total_steps: int | None = None
    metrics: dict = field(default_factory=dict)
    checkpoint: dict = field(default_factory=lambda: {"uri": None, "step": None})
    output: dict = field(default_factory=lambda: {"adapterUri": None, "mergedUri": None, "reportUri": None})
    resumed_from: int | None = None
    summary: dict = field(default_factory=dict)
    checkpoint_blocked_seconds: list = field(default_factory=list)


def workdir() -> Path:
    return Path(os.environ.get(WORKDIR_ENV, DEFAULT_WORKDIR))


def setup_caches(wd: Path) -> None:
    """Point every library cache at the writable work dir (the pod's root FS is read-only)."""
    for var, sub in (("HF_HOME", "hf"), ("HF_DATASETS_CACHE", "hf/datasets"), ("TRITON_CACHE_DIR", "triton"),
                     ("MPLCONFIGDIR", "mpl"), ("TORCH_EXTENSIONS_DIR", "torch_extensions")):
        os.environ.setdefault(var, str(wd / "cache" / sub))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _install_sigterm(flag) -> None:
    def handler(signum, frame):
        flag.requested = True
        if not flag.training:
            # Nothing to checkpoint yet: leave at once.
            raise Interrupted("SIGTERM before training started")
        log.warning("SIGTERM received: finishing the current step, then checkpointing")

    signal.signal(signal.SIGTERM, handler)


def _cuda() -> tuple[bool, bool]:
    import torch

    cuda = torch.cuda.is_available()
    return cuda, cuda and torch.cuda.is_bf16_supported()


def _resume(cfg: TrainerConfig, topo, store, wd: Path) -> tuple[int, Path] | None:
    """Rank 0 picks the newest committed, verifiable checkpoint; each node's local rank 0 downloads it."""
    if store is None:
        return None
    root = wd / "resume"
    chosen = None
    if topo.is_main:
        found = checkpointing.fetch_latest(store, root)
        if found:
            step, _ = found
            chosen = next(c for c in checkpointing.list_committed(store) if c.step == step)
    chosen = distributed.broadcast_object(chosen)
    if chosen is None:
        return None
    local = root / checkpointing.step_dir(chosen.step)
    if topo.is_local_main and not topo.is_main:
        checkpointing.download(store, chosen, local)
    distributed.barrier()
    return chosen.step, local


def _local_first(topo, fn):
    """Run fn on local rank 0 first (it downloads), then on the others (cache hits)."""
    result = fn() if topo.is_local_main else None
    distributed.barrier()
    if not topo.is_local_main:
        result = fn()
    return result


def _eval_summary(metrics: dict | None) -> dict:
    if not metrics or "eval_loss" not in metrics:
        return {}
    import math

    loss = float(metrics["eval_loss"])
    return {"evalLoss": loss, "perplexity": math.exp(loss) if loss < 50 else float("inf")}


def run(cfg: TrainerConfig, state: RunState, metrics=None) -> RunState:
    import torch
    from trl import SFTTrainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback as HFProgress

    from . import callbacks as cb
    from .data import prepare
    from .evaluate import task_metrics
    from .model_loading import load_model, load_tokenizer, resolve_model_dir
    from .translate import resolve_precision, to_lora_config, to_sft_config

    topo = distributed.topology()
    wd = workdir()
    setup_caches(wd)
    cuda, bf16_ok = _cuda()
    if topo.distributed and not torch.distributed.is_initialized():
        # Early, so downloads can be coordinated; the Trainer adopts this group.
        if cuda:
            torch.cuda.set_device(topo.local_rank)
        if cfg.distributed.strategy == "deepspeed":
            # DeepSpeed keeps its own view of the group (ZeRO-3's zero.Init
            # during from_pretrained reads it); it initialises torch's too.
            import deepspeed

            deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
        else:
            torch.distributed.init_process_group("nccl" if cuda else "gloo")
    flag = cb.StopFlag()
    _install_sigterm(flag)
    state.total_steps = cfg.training.max_steps

    # ---- resume -------------------------------------------------------------------------
    ckpt_store = open_store(cfg.checkpoint.uri, cfg.s3.endpoint, cfg.s3.region, deadline_s=cfg.checkpoint.upload_retry_seconds) if cfg.checkpoint.uri else None
    resume = _resume(cfg, topo, ckpt_store, wd)
    if resume:
        state.resumed_from = resume[0]
        state.checkpoint = {"uri": join(cfg.checkpoint.uri, checkpointing.step_dir(resume[0])), "step": resume[0]}
        if metrics:
            metrics.last_committed_step.set(resume[0])
        log.info("resuming from committed checkpoint step %d", resume[0])

    # ---- build --------------------------------------------------------------------------
    cache = wd / "cache"
    model_dir = _local_first(topo, lambda: resolve_model_dir(cfg, cache))
    tokenizer = load_tokenizer(model_dir, cfg)
    data = _local_first(topo, lambda: prepare(cfg.data, tokenizer, seed=cfg.training.seed, cache_dir=cache / "data",
                                               s3_endpoint=cfg.s3.endpoint, s3_region=cfg.s3.region,
                                               generate_samples=cfg.evaluation.generate_samples))
    log.info("data: %s", json.dumps(data.stats))
    if cfg.tracking.backend == "wandb" and cfg.tracking.project:
        os.environ.setdefault("WANDB_PROJECT", cfg.tracking.project)
    if cfg.tracking.backend == "mlflow":
        if cfg.tracking.uri:
            os.environ.setdefault("MLFLOW_TRACKING_URI", cfg.tracking.uri)
        if cfg.tracking.project:
            os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", cfg.tracking.project)

    local_ckpts = wd / "run" / "checkpoints"
    if topo.is_local_main:
        shutil.rmtree(local_ckpts, ignore_errors=True)  # stale local state from an earlier attempt
    distributed.barrier()
    args = to_sft_config(cfg, output_dir=local_ckpts, has_eval=data.eval is not None, cuda=cuda, bf16_supported=bf16_ok,
                         completion_only_loss=data.completion_only_loss if data.shape == "prompt_completion" else None,
                         assistant_only_loss=data.assistant_only_loss)
    precision = resolve_precision(cfg, cuda, bf16_ok)
    device_map = {"": topo.local_rank} if cuda else "cpu"
    model = load_model(model_dir, cfg, precision=precision, device_map=device_map)

    uploader = None
    if ckpt_store is not None and topo.is_main:
        uploader = checkpointing.Uploader(ckpt_store, keep_last=cfg.checkpoint.keep_last, staging=wd / "run" / "staging",
                                          metrics=metrics, retry_seconds=cfg.checkpoint.upload_retry_seconds,
                                          background=cfg.checkpoint.background_upload)
    counter = cb.TokenCounter()
    mcb = cb.MetricsCallback(metrics, counter, world_size=topo.world_size)
    watchdog = cb.LossWatchdog(cfg.watchdog.factor, cfg.watchdog.warmup_logs, cfg.watchdog.margin)
    stop = cb.StopCallback(flag, topo.distributed)
    ckpt_cb = cb.CheckpointCallback(uploader, topo.is_main)
    callbacks = [mcb, cb.ProgressCallback(mcb), watchdog, stop, ckpt_cb]
    early = None
    if cfg.training.early_stopping and data.eval is not None:
        early = cb.EarlyStopping(cfg.training.early_stopping.patience, cfg.training.early_stopping.threshold)
        callbacks.append(early)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                         processing_class=tokenizer, peft_config=to_lora_config(cfg), callbacks=callbacks)
    for noisy in (PrinterCallback, HFProgress):
        trainer.remove_callback(noisy)
    counter.attach(trainer.model)

    summary = state.summary
    summary.update(job=f"{cfg.job.namespace}/{cfg.job.name}", method=cfg.method, model=cfg.model.uri,
                   world_size=topo.world_size, strategy=cfg.distributed.strategy, precision=precision,
                   data=data.stats)
    # The untouched base on the same eval set (a fresh LoRA adapter is a no-op,
    # so this is the base model), stored beside the checkpoints for resumes.
    base = {}
    if data.eval is not None and cfg.evaluation.compare_base:
        raw = ckpt_store.get_bytes("base-eval.json") if (resume and ckpt_store) else None
        if raw:
            base = json.loads(raw)
        else:
            base = _eval_summary(trainer.evaluate(metric_key_prefix="eval"))
            if data.eval_pairs:
                base["task"] = task_metrics(trainer.model, tokenizer, data.eval_pairs, max_new_tokens=cfg.evaluation.max_new_tokens, numeric_top_k=cfg.evaluation.numeric_top_k)
            if ckpt_store and topo.is_main:
                ckpt_store.put_bytes("base-eval.json", json.dumps(base).encode())
        summary["base"] = base
        log.info("base model: %s", json.dumps(base))

    # ---- train --------------------------------------------------------------------------
    started = time.monotonic()
    try:
        trainer.train(resume_from_checkpoint=str(resume[1]) if resume else None)
    finally:
        counter.detach()
        if metrics:
            metrics.up.set(0)
    state.step = trainer.state.global_step
    state.total_steps = trainer.state.max_steps
    state.metrics.update({k: v for k, v in mcb.last.items() if k in ("trainLoss", "evalLoss", "tokensPerSecond")})
    state.checkpoint_blocked_seconds = ckpt_cb.blocked
    summary["train"] = {"steps": state.step, "totalSteps": state.total_steps, "seconds": round(time.monotonic() - started, 2),
                        "resumedFrom": state.resumed_from, **{k: v for k, v in mcb.last.items()}}

    def settle(timeout: float | None) -> bool:
        """Wait for uploads; record the newest committed checkpoint."""
        ok = uploader.close(timeout) if uploader else True
        committed = distributed.broadcast_object(uploader.last_committed if uploader else None)
        if committed is not None:
            state.checkpoint = {"uri": join(cfg.checkpoint.uri, checkpointing.step_dir(committed)), "step": committed}
        return ok

    if watchdog.reason:
        settle(60)
        raise LossDiverged(watchdog.reason)
    if stop.stopped:
        settle(cfg.checkpoint.sigterm_budget_seconds)
        if ckpt_store is not None and state.checkpoint.get("step") != state.step:
            raise CheckpointFailed(f"SIGTERM at step {state.step}: the checkpoint could not be committed in time")
        raise Interrupted(f"stopped by SIGTERM at step {state.step}; checkpoint {state.checkpoint.get('uri')} committed")

    # ---- evaluate & save ----------------------------------------------------------------
    final = {}
    if data.eval is not None:
        final = _eval_summary(trainer.evaluate(metric_key_prefix="eval"))
        if data.eval_pairs:
            final["task"] = task_metrics(trainer.model, tokenizer, data.eval_pairs, max_new_tokens=cfg.evaluation.max_new_tokens, numeric_top_k=cfg.evaluation.numeric_top_k)
        if "evalLoss" in final:
            state.metrics["evalLoss"] = final["evalLoss"]
            if metrics:
                metrics.eval_loss.set(final["evalLoss"])
        summary["final"] = final
        if base.get("evalLoss") is not None and final.get("evalLoss") is not None:
            summary["improvement"] = {"evalLossDelta": final["evalLoss"] - base["evalLoss"]}
    if early and early.stopped_at is not None:
        summary["train"]["earlyStoppedAt"] = early.stopped_at
    _save_outputs(cfg, trainer, tokenizer, model_dir, precision, topo, wd, state)
    if not settle(cfg.checkpoint.upload_retry_seconds):
        log.warning("final checkpoint upload still running at exit")
    return state


def _save_outputs(cfg: TrainerConfig, trainer, tokenizer, model_dir: Path, precision: str, topo, wd: Path, state: RunState) -> None:
    """adapter/ (or the full model as merged/), optional merged/, metrics.json and the report."""
    from .report import write_report

    out_local = wd / "output"
    is_full = cfg.method == "full"
    primary = out_local / ("merged" if is_full else "adapter")
    if topo.is_main:
        shutil.rmtree(out_local, ignore_errors=True)
    distributed.barrier()
    trainer.save_model(str(primary))  # collective under DeepSpeed ZeRO-3
    if not topo.is_main:
        return
    tokenizer.save_pretrained(str(primary))
    merged = None
    if cfg.output.merge and not is_full:
        merged = _merge(cfg, model_dir, primary, out_local / "merged", precision)
        tokenizer.save_pretrained(str(merged))
    out_uri = cfg.output.uri or f"file://{out_local}"
    state.summary["output"] = {"uri": out_uri}
    write_report(out_local, state.summary, _history(trainer))
    if cfg.output.uri:
        store = open_store(cfg.output.uri, cfg.s3.endpoint, cfg.s3.region, deadline_s=cfg.checkpoint.upload_retry_seconds)
        for p in sorted(out_local.rglob("*")):
            if p.is_file():
                store.put_file(str(p.relative_to(out_local)), p)
    state.output = {
        "adapterUri": None if is_full else join(out_uri, "adapter"),
        "mergedUri": join(out_uri, "merged") if (is_full or merged) else None,
        "reportUri": join(out_uri, "report.html"),
    }
    log.info("outputs written to %s", out_uri)


def _history(trainer) -> list[dict]:
    out = []
    for e in trainer.state.log_history:
        row = {"step": e.get("step")}
        for k, name in (("loss", "trainLoss"), ("eval_loss", "evalLoss"), ("learning_rate", "learningRate"), ("grad_norm", "gradNorm")):
            if e.get(k) is not None:
                row[name] = float(e[k])
        if len(row) > 1:
            out.append(row)
    return out


def _merge(cfg: TrainerConfig, model_dir: Path, adapter: Path, dst: Path, precision: str) -> Path:
    """The base in full precision (never the 4-bit one) + the adapter, merged, as safetensors shards."""
    from peft import PeftModel

    from .model_loading import load_model

    base = load_model(model_dir, cfg, precision="fp32" if precision == "fp32" else precision, device_map="cpu", quantize=False)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(str(dst), safe_serialization=True, max_shard_size="5GB")
    return dst
