"""The lifecycle's evaluation steps (`run.baseline`, `run.evaluate`): where the
evaluation package meets storage, the metrics endpoint and the run's state.

- before training, the base model on the test rows (and the validation
  loss), stored beside the checkpoints (`kubetune_contract.checkpoints.
  BASE_EVALUATION`) with a fingerprint of what it measured, so a resumed or
  retried run reuses it instead of redoing it; a sweep's trial keeps it in the
  sweep's shared prefix instead (`SHARED_BASE_EVALUATION`, one per
  fingerprint, with a checksum), so the sweep measures the base once;
- after training, the tuned model on the same rows, the baselines, the fit
  diagnosis, and the results: `RunState.evaluation` (compact, for the
  termination message), the summary (metrics.json, the report), the
  `kubetune_trainer_eval_*` gauges.
"""

from __future__ import annotations

import hashlib
import json
import logging

from kubetune_contract.checkpoints import BASE_EVALUATION, SHARED_BASE_EVALUATION

from . import distributed
from .evaluation.diagnosis import Schedule
from .evaluation.results import conclude
from .evaluation.runner import measure, task_of

log = logging.getLogger("kubetune.evaluate")


def fingerprint(cfg) -> str:
    """What a cached base evaluation depends on: change any of it and it is redone."""
    what = {"model": cfg.model.model_dump(mode="json"),
            "dataset": cfg.dataset.model_dump(mode="json"), "evaluation": cfg.evaluation.model_dump(mode="json"),
            "seed": cfg.training.seed, "method": cfg.method,
            "quantization": cfg.quantization.model_dump(mode="json") if cfg.quantization else None}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _cache(s):
    """(store, key) of this run's base evaluation: the sweep's shared prefix, else beside the checkpoints."""
    if s.shared is not None:
        return s.shared, SHARED_BASE_EVALUATION.format(fingerprint=fingerprint(s.cfg))
    return s.checkpoints, BASE_EVALUATION


def _checksum(base: dict) -> str:
    return hashlib.sha256(json.dumps(base, sort_keys=True).encode()).hexdigest()


def _read_cached(store, key: str, wanted: str) -> dict | None:
    raw = store.get_bytes(key)
    try:
        cached = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        cached = None
    if not (isinstance(cached, dict) and cached.get("fingerprint") == wanted and isinstance(cached.get("base"), dict)):
        return None
    if cached.get("sha256") not in (None, _checksum(cached["base"])):  # None: written before checksums
        log.warning("ignoring the cached base evaluation at %s: its checksum does not match; measuring again", key)
        return None
    return cached["base"]


def _cached_base(s) -> dict | None:
    """Rank 0 reads the cache; every rank learns whether to measure (all must, or none)."""
    found = None
    store, key = _cache(s)
    if s.topo.is_main and store is not None:
        found = _read_cached(store, key, fingerprint(s.cfg))
    return distributed.broadcast_object(found)


def baseline(s) -> None:
    s.task = task_of(s.data, s.tokenizer, s.cfg.evaluation)
    if not (s.task.wanted and s.cfg.evaluation.compare_base):
        return
    base = _cached_base(s)
    store, key = _cache(s)
    reused = base is not None
    if reused:
        log.info("base model evaluation reused from %s", key)
    else:
        base = measure(s.trainer, s.tokenizer, s.task, s.cfg)
        _release_inference_engine(s.trainer)
        if store is not None and s.topo.is_main:
            body = {"fingerprint": fingerprint(s.cfg), "base": base, "sha256": _checksum(base)}
            store.put_bytes(key, json.dumps(body).encode())
    # metrics.json says whether this run measured the base or reused a measurement (a sweep's trials share one).
    s.state.summary["baseEvaluation"] = {"reused": reused, "key": key, "seconds": None if reused else base.get("seconds")}
    s.base = base
    s.state.summary["base"] = base["metrics"]
    _publish(s, "base", base)
    log.info("base model: %s", json.dumps(base["metrics"]))


def _release_inference_engine(trainer) -> None:
    """Under DeepSpeed, evaluate() before train() wraps the model in an inference
    engine, and train() then takes the model as already wrapped and never builds
    its training engine (backward fails). Release it, as accelerate's
    free_memory() is meant for between two uses, so train() starts clean."""
    if not getattr(trainer, "is_deepspeed_enabled", False) or trainer.model_wrapped is trainer.model:
        return
    trainer.accelerator.free_memory()
    trainer.model_wrapped = trainer.model
    trainer.deepspeed = None


def _schedule(s) -> Schedule:
    state = s.trainer.state
    epochs = s.cfg.training.epochs
    per_epoch = state.max_steps / epochs if epochs else None
    return Schedule(steps_per_epoch=per_epoch, by_epochs=s.cfg.training.max_steps is None)


def evaluate(s) -> None:
    """The tuned model on the same rows, then the conclusion (every run gets a fit diagnosis)."""
    tuned = measure(s.trainer, s.tokenizer, s.task, s.cfg, validation=True) if s.task.wanted else None
    concluded = conclude(s.task, s.base, tuned, s.history, _schedule(s), s.cfg.training.seed)
    s.concluded = concluded
    s.state.evaluation = concluded.compact
    s.state.summary["evaluation"] = concluded.full
    if tuned:
        s.state.summary["final"] = tuned["metrics"]
        if tuned["metrics"].get("evalLoss") is not None:
            s.state.metrics["evalLoss"] = tuned["metrics"]["evalLoss"]
            if s.metrics:
                s.metrics.eval_loss.set(tuned["metrics"]["evalLoss"])
        _publish(s, "tuned", tuned)
    for name, scores in concluded.full["baselines"].items():
        _publish(s, name, {"metrics": scores})
    log.info("evaluation: %s", concluded.full["verdict"])


def _publish(s, model: str, measured: dict) -> None:
    if s.metrics:
        s.metrics.evaluated(model, measured["metrics"], measured.get("parseRate"))
