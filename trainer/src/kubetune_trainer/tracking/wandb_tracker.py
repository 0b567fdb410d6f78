"""Weights & Biases: online with WANDB_API_KEY (from the job's tracking Secret),
or offline: the run files are written locally and uploaded with the outputs,
to be synced later with `wandb sync`."""

from __future__ import annotations

from pathlib import Path


class WandbTracker:
    name = "wandb"

    def __init__(self, *, project: str, run_name: str, host: str | None, offline: bool, local_dir: Path, config: dict,
                 timeout_s: float):
        self.project = project
        self.run_name = run_name
        self.host = host
        self.offline = offline
        self.local_dir = local_dir
        self.config = config
        self.timeout_s = timeout_s
        self.run_url: str | None = None
        self._run = None
        self._run_dir: Path | None = None

    @property
    def files_dir(self) -> Path | None:
        """What to upload with the outputs: an offline run's directory (`offline-run-<time>-<id>`,
        the name `wandb sync` expects); an online run's files are on the server."""
        return self._run_dir if self.offline else None

    def start(self) -> None:
        import wandb

        self.local_dir.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(init_timeout=max(self.timeout_s, 30.0), console="off", x_disable_stats=True,
                                  silent=True, **({"base_url": self.host} if self.host else {}))
        self._run = wandb.init(project=self.project, name=self.run_name, config=self.config, dir=str(self.local_dir),
                               mode="offline" if self.offline else "online", settings=settings)
        self._run_dir = Path(self._run.dir).parent  # run.dir is the run's files/ folder
        if not self.offline:
            self.run_url = self._run.url

    def log_params(self, params: dict[str, str]) -> None:
        pass  # wandb.init took the config

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        self._run.log(values, step=step)

    def finish(self, ok: bool = True) -> None:
        import wandb

        if self._run is not None:
            self._run.finish(exit_code=0 if ok else 1)
            # finish() returns once W&B's service has the run's last record, not
            # once its writer has flushed the run file (seen truncated on a loaded
            # machine); teardown waits for the service itself to end.
            wandb.teardown(exit_code=0 if ok else 1)
