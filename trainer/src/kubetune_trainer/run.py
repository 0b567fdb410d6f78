"""The training run, as its steps:

    resume → build → baseline → train → best → save → evaluate → export → report → track → settle

Each step is a short function of the `Session`, which carries what the steps
share. Side effects are limited to storage (checkpoints, outputs) and the
metrics; what is built is delegated to the translators, the recipe for the
objective (`recipes/`), the exporters (`exporters/`) and the evaluation
(`evaluation_steps`, `evaluation/`): the tuned model is evaluated before it is
exported, so the model card carries its results. Every rank runs every
step; what only rank 0 does (uploads, exports, the report) is decided inside.
`RunState` carries what the termination message needs, so `main` can report a
failure at any point with the step and checkpoint reached so far.
"""

from __future__ import annotations

import json
import logging
import shutil
import time

from kubetune_contract.checkpoints import checkpoint_uri, differing_fields, fingerprint, split_step_uri, step_dir
from kubetune_contract.outputs import output_keys
from kubetune_contract.termination import FINAL_METRICS

from . import checkpointing, distributed
from .config import TrainerConfig
from .errors import CheckpointFailed, Interrupted, InvalidConfig, LossDiverged
from .session import RunState, Session, open_session
from .storage import join, put_tree

__all__ = ["RunState", "run"]

log = logging.getLogger("kubetune.run")


def run(cfg: TrainerConfig, state: RunState, metrics=None) -> RunState:
    s = open_session(cfg, state, metrics)
    try:
        resume(s)
        build(s)
        baseline(s)
        train(s)
        best(s)
        save(s)
        evaluate(s)
        exports = export(s)
        report(s, exports)
    except BaseException:
        track(s, ok=False)
        raise
    track(s)
    settle(s)
    return state


# --------------------------------------------------------------------------- resume


def resume(s: Session) -> None:
    """Continue from this run's newest committed, verifiable checkpoint, if there
    is one; else from `checkpoint.resumeFrom`, when the spec asks for it. A
    checkpoint of this run written with other settings is refused, naming them."""
    own = _fetch_resume_point(s, s.checkpoints, own=True)
    if own is not None:
        step, s.resume_dir = own
        s.state.resumed_from = step
        _committed(s, step)
        if s.metrics:
            s.metrics.committed(step, s.state.checkpoint["uri"])
        log.info("resuming from committed checkpoint step %d", step)
    elif s.cfg.checkpoint.resume_from:
        _resume_from_other(s)


def owner(cfg) -> dict:
    """What this run's commits record of it: its job's UID and the fingerprint of its settings."""
    return {"uid": cfg.job.uid, **fingerprint(cfg.to_json())}


def _fetch_resume_point(s: Session, store, own: bool, step: int | None = None):
    """Rank 0 lists the committed checkpoints (one `step`, when given); each
    node's local rank 0 downloads what its node needs of the newest one; when
    any node cannot verify its files, every node falls back to the next older
    one together. `own`: this run's store, whose commits must carry its settings."""
    if store is None:
        return None
    root = s.workdir / "resume"
    candidates = distributed.broadcast_object(checkpointing.list_committed(store) if s.topo.is_main else None)
    candidates = [c for c in candidates if step is None or c.step == step]
    if own and candidates:
        _same_settings(s, store, candidates[-1])
    for chosen in reversed(candidates):
        local = root / step_dir(chosen.step)
        ok = checkpointing.try_download(store, chosen, local, s.topo.node_rank) if s.topo.is_local_main else True
        if not distributed.any_rank(not ok):
            if s.topo.is_local_main and not s.topo.is_main:
                # Other nodes log warnings only; this line says which state the node resumed.
                log.warning("node %d: resuming from committed checkpoint step %d", s.topo.node_rank, chosen.step)
            return chosen.step, local
    return None


def _same_settings(s: Session, store, newest) -> None:
    """This job's own checkpoint, written before its spec changed: continuing it
    would train the old run's state with settings it never had."""
    recorded = (newest.manifest or {}).get("owner")
    if not recorded:
        return  # written before runs recorded themselves: nothing to compare
    differs = differing_fields(owner(s.cfg), recorded)
    if differs:
        raise InvalidConfig(
            f"checkpoint {checkpoint_uri(store.uri, newest.step)} of this job was trained with other settings ({', '.join(differs)} "
            "differ): it cannot be continued with these; restore them, or create a new job with checkpoint.resumeFrom set to "
            "that checkpoint to continue it with the new ones")


def _resume_from_other(s: Session) -> None:
    """checkpoint.resumeFrom: another run's checkpoint (a step's URI, or a run's prefix for its newest)."""
    from .storage import open_store

    cfg = s.cfg
    root, step = split_step_uri(cfg.checkpoint.resume_from)
    store = open_store(root, cfg.s3.endpoint, cfg.s3.region)
    found = _fetch_resume_point(s, store, own=False, step=step)
    if found is None:
        raise InvalidConfig(f"checkpoint.resumeFrom {cfg.checkpoint.resume_from}: no committed checkpoint there that verifies")
    step, s.resume_dir = found
    committed = next(c for c in checkpointing.list_committed(store) if c.step == step) if s.topo.is_main else None
    recorded = ((committed.manifest if committed else {}) or {}).get("owner")
    differs = differing_fields(owner(cfg), recorded) if recorded else ["(not recorded)"]
    s.state.resumed_from = step
    s.state.resumed_from_other = {"uri": checkpoint_uri(root, step), "step": step, "differs": differs}
    log.info("resuming from %s (checkpoint.resumeFrom; settings that differ: %s)", checkpoint_uri(root, step), ", ".join(differs) or "none")


def _committed(s: Session, step: int) -> None:
    """The newest committed checkpoint of this run, as the termination message reports it."""
    s.state.checkpoint = {"uri": checkpoint_uri(s.checkpoints.uri, step), "step": step}


# --------------------------------------------------------------------------- build


def build(s: Session) -> None:
    """Model, tokenizer and data; the uploader and the loop's callbacks; the recipe's trainer."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from .adapter_source import continue_adapter
    from .callbacks import loop_callbacks
    from .model_loading import load_model
    from .recipes import recipe_for
    from .tracking import open_tracking

    cfg, topo = s.cfg, s.topo
    _load_inputs(s)
    if topo.is_local_main:
        shutil.rmtree(s.local_checkpoints, ignore_errors=True)  # stale local state from an earlier attempt
    distributed.barrier()
    model = load_model(s.model_dir, cfg, precision=s.precision, device_map={"": topo.local_rank} if s.cuda else "cpu")
    model = distributed.local_main_first(topo, lambda: continue_adapter(cfg, model, s.workdir / "cache"))
    if s.checkpoints is not None and topo.is_local_main:
        s.uploader = checkpointing.Uploader(s.checkpoints, keep_last=cfg.checkpoint.keep_last, staging=s.workdir / "run" / "staging",
                                            metrics=s.metrics, retry_seconds=cfg.checkpoint.upload_retry_seconds,
                                            background=cfg.checkpoint.background_upload, node=topo.node_rank, nodes=topo.nodes,
                                            owner=owner(cfg))
    s.loop = loop_callbacks(cfg, metrics=s.metrics, flag=s.stop_flag, uploader=s.uploader, topo=topo, has_eval=s.data.eval is not None)
    s.tracking = open_tracking(cfg, s.workdir / "tracking", s.metrics.tracking_degraded if s.metrics else None) if topo.is_main else None
    s.trainer = recipe_for(cfg)(s, model, s.loop.all() + ([s.tracking.callback()] if s.tracking else []))
    for noisy in (PrinterCallback, ProgressCallback):
        s.trainer.remove_callback(noisy)
    s.loop.counter.attach(s.trainer.model)
    s.state.summary.update(job=f"{cfg.job.namespace}/{cfg.job.name}", method=cfg.method, model=cfg.model.uri,
                           world_size=topo.world_size, strategy=cfg.distributed.strategy, precision=s.precision,
                           data=s.data.stats)


def _load_inputs(s: Session) -> None:
    """The base model's directory, its tokenizer and the prepared data (each node's
    local rank 0 downloads first, the others then hit its cache)."""
    from .data import prepare
    from .model_loading import load_tokenizer, resolve_model_dir

    cfg, cache = s.cfg, s.workdir / "cache"
    s.model_dir = distributed.local_main_first(s.topo, lambda: resolve_model_dir(cfg, cache, s.precision))
    s.tokenizer = load_tokenizer(s.model_dir, cfg)
    s.data = distributed.local_main_first(s.topo, lambda: prepare(
        cfg.dataset, s.tokenizer, seed=cfg.training.seed, cache_dir=cache / "data", s3_endpoint=cfg.s3.endpoint,
        s3_region=cfg.s3.region, evaluation=cfg.evaluation, objective=cfg.objective,
        count=cfg.training.max_steps is None, resume_dir=s.resume_dir))
    log.info("data: %s", json.dumps(s.data.stats))


# --------------------------------------------------------------------------- baseline


def baseline(s: Session) -> None:
    """The untouched base (before training, a fresh LoRA adapter is a no-op) on
    the validation and test rows, cached beside the checkpoints so a resume
    reuses it (evaluation_steps)."""
    from . import evaluation_steps

    evaluation_steps.baseline(s)


# --------------------------------------------------------------------------- train


def train(s: Session) -> None:
    """The recipe's trainer loop; stops for a diverged loss or SIGTERM are raised
    once the checkpoints that could be committed are."""
    started = time.monotonic()
    try:
        s.trainer.train(resume_from_checkpoint=str(s.resume_dir) if s.resume_dir else None)
    finally:
        s.loop.counter.detach()
        if s.metrics:
            s.metrics.up.set(0)
    _record_training(s, time.monotonic() - started)
    if s.loop.watchdog.reason:
        _settle_uploads(s, 60)
        raise LossDiverged(s.loop.watchdog.reason)
    if s.loop.stop.stopped:
        _settle_uploads(s, s.cfg.checkpoint.sigterm_budget_seconds)
        step, checkpoint = s.state.step, s.state.checkpoint
        if s.checkpoints is not None and checkpoint.get("step") != step:
            raise CheckpointFailed(f"SIGTERM at step {step}: the checkpoint could not be committed in time")
        raise Interrupted(f"stopped by SIGTERM at step {step}; checkpoint {checkpoint.get('uri')} committed")


def _record_training(s: Session, seconds: float) -> None:
    state, last = s.state, s.loop.metrics.last
    state.step = s.trainer.state.global_step
    state.total_steps = s.trainer.state.max_steps
    state.metrics.update({k: v for k, v in last.items() if k in FINAL_METRICS})
    state.summary["train"] = {"steps": state.step, "totalSteps": state.total_steps, "seconds": round(seconds, 2),
                              "resumedFrom": state.resumed_from, **last}
    if state.resumed_from_other:
        state.summary["train"]["resumedFromCheckpoint"] = state.resumed_from_other
    # The curves as training left them (the evaluations after it are not part of them).
    from .report import history

    s.history = history(s.trainer.state.log_history, s.loop.metrics.throughput)
    state.eval_curve = [(h["step"], h["evalLoss"]) for h in s.history if "evalLoss" in h and (h["step"] or 0) > 0]
    base_loss = ((s.base or {}).get("metrics") or {}).get("evalLoss")
    if base_loss is not None and not any(h["step"] == 0 and "evalLoss" in h for h in s.history):
        s.history.insert(0, {"step": 0, "evalLoss": base_loss})  # the base model: where validation loss started
    if s.loop.early and s.loop.early.stopped_at is not None:
        state.summary["train"]["earlyStoppedAt"] = s.loop.early.stopped_at
    _record_sources(s)


def _record_sources(s: Session) -> None:
    """dataset.sources: each source's rows consumed by the epochs trained (the
    trainer reads the mixed epoch in its planned order, so whole epochs count
    each planned row and a partial one its prefix), for the report and status."""
    from kubetune_contract.mixing import status_sources

    from .data.mixed import record_consumption

    if s.data is None or s.data.mix is None:
        return
    examples = round((s.trainer.state.epoch or 0.0) * s.data.mix.size)
    sources = record_consumption(s.data.stats, s.data.mix, examples)
    s.state.dataset = status_sources(sources)


def _settle_uploads(s: Session, timeout: float | None) -> bool:
    """Wait for this node's checkpoint uploads (rank 0's commits once every node's
    part is there); every rank learns the newest committed step."""
    done = s.uploader.close(timeout) if s.uploader else True
    committed = distributed.broadcast_object(s.uploader.last_committed if s.uploader else None)
    if committed is not None:
        _committed(s, committed)
    return done


def best(s: Session) -> None:
    """training.keepBest: the model becomes the checkpoint with the lowest validation loss."""
    from . import best_checkpoint

    best_checkpoint.restore(s)


# --------------------------------------------------------------------------- save, export


def save(s: Session) -> None:
    """The trained weights (the adapter, or the whole model for method full) and
    the tokenizer, to one local directory the exporters read."""
    s.trained = s.workdir / "trained"
    if s.topo.is_main:
        shutil.rmtree(s.trained, ignore_errors=True)
    distributed.barrier()
    s.trainer.save_model(str(s.trained))  # every rank: collective under DeepSpeed ZeRO-3
    if s.topo.is_main:
        from .adapter_source import drop_reference_adapter

        drop_reference_adapter(s.trainer.model, s.trained)
        s.tokenizer.save_pretrained(str(s.trained))


def export(s: Session) -> dict[str, str]:
    """Rank 0 runs the exporters the config selects; {name: uri} of what they wrote."""
    from .exporters import ExportInputs, export_all

    if not s.topo.is_main:
        return {}
    scratch = s.workdir / "export"
    shutil.rmtree(scratch, ignore_errors=True)
    exports = export_all(ExportInputs(cfg=s.cfg, trained=s.trained, base_model=s.model_dir, tokenizer=s.tokenizer,
                                      precision=s.precision, scratch=scratch, output=s.output,
                                      evaluation=s.state.summary.get("evaluation"), data_stats=s.data.stats if s.data else None),
                         s.state.export_failures)
    log.info("exported %s", ", ".join(f"{name} to {uri}" for name, uri in exports.items()))
    return exports


# --------------------------------------------------------------------------- evaluate, report


def evaluate(s: Session) -> None:
    """The trained model on the same rows as the base, the baselines and the fit diagnosis."""
    from . import evaluation_steps

    evaluation_steps.evaluate(s)


def report(s: Session, exports: dict[str, str]) -> None:
    """Rank 0 writes metrics.json, predictions.jsonl, report.md and report.html
    under output.uri; the run's outputs are then the exports and the report."""
    from .config import redact
    from .report import REPORT_PAGE, write_report

    if not s.topo.is_main:
        return
    local = s.workdir / "report"
    shutil.rmtree(local, ignore_errors=True)
    s.state.summary["output"] = {"uri": s.output.uri, **output_keys(exports)}
    if s.state.export_failures:
        s.state.summary["exportFailures"] = dict(s.state.export_failures)
    if s.tracking:
        s.state.summary["tracking"] = {"backend": s.tracking.backend, "runUrl": s.tracking.run_url}
    predictions = s.concluded.predictions if s.concluded else []
    for path in write_report(local, s.state.summary, s.history, predictions=predictions, config=redact(s.cfg.to_json())):
        put_tree(s.output, path, str(path.relative_to(local)))
    s.state.output = output_keys({**exports, "report": join(s.output.uri, REPORT_PAGE)})
    log.info("outputs written to %s", s.output.uri)


def track(s: Session, ok: bool = True) -> None:
    """Rank 0's trackers get the final metrics and the report, then what time is
    left to catch up; a tracker that could not keep up is reported, never raised.
    A run that failed (or was stopped) marks its tracker run failed, briefly:
    the error it raised is what the run reports."""
    from .tracking import FAILED_CLOSE_DEADLINE_S

    if s.tracking is None:
        return
    tracking, s.tracking = s.tracking, None  # closed once
    try:
        if ok:
            final = {f"final.{k}": v for k, v in (s.state.summary.get("final") or {}).items() if isinstance(v, (int, float))}
            tracking.log(s.state.step or 0, {**final, **s.state.metrics})
            tracking.log_report(s.workdir / "report")
        outcome = tracking.close(s.output) if ok else tracking.close(None, FAILED_CLOSE_DEADLINE_S, ok=False)
    except Exception:  # noqa: BLE001 - tracking never fails (or re-fails) a run
        log.exception("closing the trackers failed")
        return
    s.state.tracking = outcome.model_dump(by_alias=True, exclude_none=True)
    log.info("tracking: %s", s.state.tracking)


def settle(s: Session) -> None:
    """The final checkpoint's upload ran meanwhile; give it what time remains."""
    if not _settle_uploads(s, s.cfg.checkpoint.upload_retry_seconds):
        log.warning("final checkpoint upload still running at exit")
