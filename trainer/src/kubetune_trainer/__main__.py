"""`kubetune-train --config FILE` (also `python -m kubetune_trainer`, also under torchrun).

`parse()` turns argv into a validated `TrainerConfig`; `main(cfg)` runs it and
turns every outcome into an exit code and a termination message:
0 success, 2 bad input (permanent), 3 loss diverged, 143 after a SIGTERM
checkpoint, other non-zero retryable.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .config import TrainerConfig, load_config, redact
from .errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, TrainerError


def parse(argv: list[str] | None = None) -> TrainerConfig:
    ap = argparse.ArgumentParser(prog="kubetune-train", description="kubetune's fine-tuning trainer")
    ap.add_argument("--config", required=True, help="trainer config JSON (the operator mounts /etc/kubetune/config.json)")
    args = ap.parse_args(argv)
    return load_config(args.config)


def _setup_logging(rank: int) -> None:
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s %(levelname)s [rank{rank}] %(name)s: %(message)s", stream=sys.stderr, force=True)
    for noisy in ("transformers", "datasets", "accelerate", "DeepSpeed", "deepspeed", "torch.distributed", "urllib3", "botocore", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING if rank == 0 else logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def _job_identity(cfg: TrainerConfig) -> tuple[str, str]:
    return os.environ.get("KUBETUNE_NAMESPACE") or cfg.job.namespace, os.environ.get("KUBETUNE_JOB") or cfg.job.name


def _not_this_jobs(cfg: TrainerConfig) -> str | None:
    """Why the config is not this pod's job's, if it is not: the operator gives
    the pod its FineTuneJob's UID, and renders the same into the config; a
    config someone else wrote under the job's ConfigMap name cannot know it."""
    uid = os.environ.get("KUBETUNE_JOB_UID")
    if uid and cfg.job.uid != uid:
        return (f"the trainer config is not this job's (its job.uid is {cfg.job.uid!r}, this pod's FineTuneJob is {uid!r}): "
                "it was not rendered by the operator for this job; nothing was run")
    return None


def main(cfg: TrainerConfig | None = None) -> int:
    from .cpu_threads import size_torch_threads
    from .distributed import topology
    from .report import termination_message, write_termination_message
    from .run import RunState

    topo = topology()
    _setup_logging(topo.rank)
    log = logging.getLogger("kubetune")
    state = RunState()
    if cfg is None:
        try:
            cfg = parse()
        except TrainerError as exc:
            print(f"kubetune-train: {exc.reason}: {exc.message}", file=sys.stderr)
            if topo.is_main:
                write_termination_message(termination_message(exc.reason, exc.message))
            return exc.exit_code
    namespace, job = _job_identity(cfg)
    stranger = _not_this_jobs(cfg)
    if stranger:
        print(f"kubetune-train: InvalidConfig: {stranger}", file=sys.stderr)
        if topo.is_main:
            write_termination_message(termination_message("InvalidConfig", stranger))
        return EXIT_BAD_INPUT
    if topo.is_main:
        log.info("config: %s", json.dumps(redact(cfg.to_json()), separators=(",", ":")))
    size_torch_threads()

    metrics = None
    if cfg.metrics.enabled and topo.is_local_main:
        from .metrics import TrainerMetrics

        metrics = TrainerMetrics(namespace, job, topo.rank)
        try:
            metrics.serve(cfg.metrics.port)
        except OSError as exc:
            log.warning("metrics server not started on port %d: %s", cfg.metrics.port, exc)

    reason, message, code = "Completed", "", EXIT_OK
    try:
        from .run import run

        run(cfg, state, metrics)
        message = f"trained {state.step}/{state.total_steps} steps"
    except TrainerError as exc:
        reason, message, code = exc.reason, exc.message, exc.exit_code
        log.error("%s: %s", exc.reason, exc.message)
    except KeyboardInterrupt:
        reason, message, code = "Interrupted", "interrupted", 130
    except Exception as exc:  # noqa: BLE001 - anything else is retryable; keep the traceback in the log
        reason, message, code = _failure(exc, topo, log)
    finally:
        if metrics:
            metrics.up.set(0)
    if topo.is_main:
        checkpoint = {**state.checkpoint, **({"best": state.best} if state.best else {}),
                      **({"resumedFrom": state.resumed_from_other} if state.resumed_from_other else {})}
        text = termination_message(reason, message, step=state.step, total_steps=state.total_steps, metrics=state.metrics,
                                   checkpoint=checkpoint, output=state.output, evaluation=state.evaluation,
                                   export_failures=state.export_failures, tracking=state.tracking,
                                   dataset=state.dataset, eval_curve=state.eval_curve)
        write_termination_message(text)
        print(f"kubetune-train: {reason}: {message}" if message else f"kubetune-train: {reason}", file=sys.stderr)
    if metrics:
        metrics.stop()
    return code


def _failure(exc: Exception, topo, log) -> tuple[str, str, int]:
    """(reason, message, exit code) of an unexpected error. A collective that
    failed because a peer is gone waits to be ended with its attempt (`peers`)."""
    from .peers import lost_peer, wait_to_be_ended

    first = f"{type(exc).__name__}: {str(exc).splitlines()[0][:500] if str(exc) else ''}"
    if topo.distributed and lost_peer(exc):
        log.error("lost a peer: %s", first)
        ended = wait_to_be_ended()
        return "PeerLost", f"another process of this run is gone ({first})", EXIT_INTERRUPTED if ended else EXIT_ERROR
    log.exception("training failed")
    return "Error", first, EXIT_ERROR


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
