"""What the lifecycle's steps share (`Session`), and opening one for a run.

Opening a session does what every run needs before its first step: the
process topology, library caches on the writable work dir, the process group,
the SIGTERM handler and the checkpoint store. Each step then fills in what it
makes (the resume point, the built trainer, the saved weights), so the steps
take one argument instead of a long parameter list.

`RunState` is what the termination message needs; `main` reports it at any
point of a failure, with the step and checkpoint reached so far.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune_contract.checkpoints import run_root

from . import distributed
from .config import TrainerConfig
from .errors import Interrupted
from .storage import Store, open_store
from .translate import resolve_precision

if TYPE_CHECKING:  # the callbacks import transformers; a bad config is reported before that
    from .callbacks import LoopCallbacks, StopFlag

log = logging.getLogger("kubetune.run")

WORKDIR_ENV = "KUBETUNE_WORKDIR"
DEFAULT_WORKDIR = "/tmp/kubetune"


@dataclass
class RunState:
    step: int | None = None
    total_steps: int | None = None
    metrics: dict = field(default_factory=dict)
    checkpoint: dict = field(default_factory=lambda: {"uri": None, "step": None})
    # {"<name>Uri": uri} for each output the run produced (kubetune_contract.outputs)
    output: dict = field(default_factory=dict)
    # {name: reason} of each format that could not be exported (the run still succeeds)
    export_failures: dict = field(default_factory=dict)
    resumed_from: int | None = None
    # checkpoint.resumeFrom: {"uri", "step", "differs"} of the other run's checkpoint this one continued
    resumed_from_other: dict | None = None
    summary: dict = field(default_factory=dict)
    # The evaluation's compact summary (evaluation.results.compact): what
    # status.evaluation and the Fit condition are made from.
    evaluation: dict = field(default_factory=dict)
    # training.keepBest: {"uri", "step", "evalLoss"} of the checkpoint the output was made from
    best: dict | None = None
    # tracking: kubetune_contract.tracking.TrackingOutcome as JSON (where the run is, whether it was degraded)
    tracking: dict | None = None
    # dataset.sources: {"sources": [...]} per source, rows read and consumed (kubetune_contract.mixing)
    dataset: dict | None = None
    # [(step, evalLoss)] of every evaluation during training (kubetune_contract.curves)
    eval_curve: list = field(default_factory=list)


@dataclass
class Session:
    cfg: TrainerConfig
    state: RunState
    metrics: Any  # TrainerMetrics | None (None: metrics disabled, or not this pod's local rank 0)
    topo: distributed.Topology
    workdir: Path
    cuda: bool
    bf16_supported: bool
    stop_flag: StopFlag
    checkpoints: Store | None  # this run's checkpoints (run_root); None: the config names no checkpoint location
    shared: Store | None = None  # a sweep's shared work (cfg.shared), None outside a sweep
    # resume: the verified local copy of the newest committed checkpoint
    resume_dir: Path | None = None
    # build
    model_dir: Path | None = None
    tokenizer: Any = None
    data: Any = None  # data.PreparedData
    uploader: Any = None  # checkpointing.Uploader, local rank 0 of each node (node 0's commits)
    loop: LoopCallbacks | None = None
    tracking: Any = None  # tracking.Tracking on rank 0 when the config asks for a tracker
    trainer: Any = None  # the recipe's TRL trainer
    # save: the trained weights (adapter, or the whole model) and the tokenizer
    trained: Path | None = None
    # evaluation: the test rows and training answers (evaluation.runner.Task),
    # the base model's results, the logged curves as training left them, the conclusion
    task: Any = None
    base: dict | None = None
    history: list = field(default_factory=list)
    concluded: Any = None  # evaluation.results.Concluded

    @property
    def precision(self) -> str:
        return resolve_precision(self.cfg, self.cuda, self.bf16_supported)

    @property
    def local_checkpoints(self) -> Path:
        """Where the Trainer writes checkpoint-N before the uploader takes it."""
        return self.workdir / "run" / "checkpoints"

    @cached_property
    def output(self) -> Store:
        """The output store: `output.uri`, or the work dir when the config names none."""
        cfg = self.cfg
        uri = cfg.output.uri or f"file://{self.workdir / 'output'}"
        return open_store(uri, cfg.s3.endpoint, cfg.s3.region, deadline_s=cfg.checkpoint.upload_retry_seconds)


def open_session(cfg: TrainerConfig, state: RunState, metrics=None) -> Session:
    from .callbacks import StopFlag

    topo = distributed.topology()
    wd = workdir()
    setup_caches(wd)
    cuda, bf16_ok = _cuda()
    distributed.init_process_group(topo, cfg.distributed.strategy, cuda)
    flag = StopFlag()
    _install_sigterm(flag)
    state.total_steps = cfg.training.max_steps
    checkpoints = None
    if cfg.checkpoint.uri:  # this run's own prefix: it resumes, writes and deletes nothing else
        checkpoints = open_store(run_root(cfg.checkpoint.uri, cfg.job.uid), cfg.s3.endpoint, cfg.s3.region,
                                 deadline_s=cfg.checkpoint.upload_retry_seconds)
    shared = open_store(cfg.shared.uri, cfg.s3.endpoint, cfg.s3.region) if cfg.shared else None
    return Session(cfg=cfg, state=state, metrics=metrics, topo=topo, workdir=wd, cuda=cuda, bf16_supported=bf16_ok,
                   stop_flag=flag, checkpoints=checkpoints, shared=shared)


def workdir() -> Path:
    return Path(os.environ.get(WORKDIR_ENV, DEFAULT_WORKDIR))


def setup_caches(wd: Path) -> None:
    """Point every library cache at the writable work dir (the pod's root FS is read-only)."""
    for var, sub in (("HF_HOME", "hf"), ("HF_DATASETS_CACHE", "hf/datasets"), ("TRITON_CACHE_DIR", "triton"),
                     ("MPLCONFIGDIR", "mpl"), ("TORCH_EXTENSIONS_DIR", "torch_extensions"),
                     ("WANDB_CONFIG_DIR", "wandb/config"), ("WANDB_CACHE_DIR", "wandb/cache"), ("WANDB_DATA_DIR", "wandb/data")):
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
