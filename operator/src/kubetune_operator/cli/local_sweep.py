"""`kubetune sweep sweep.yaml`: the same sweep without a cluster, one trial after
another, each a `kubetune run` of the trial's FineTuneJob.

The study, the trial specs and the pruner are the operator's own
(`sweeps.study`, `builders.trial`); while a trial runs, its trainer's /metrics
is read every second for its evaluations, and a trial the median pruner stops
gets SIGTERM (it checkpoints, as in a pod). At the end the trials table is
printed and the sweep report is written beside the trials."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from kubetune_contract import curves

from ..api.manifest import load_manifests, parse_job, parse_sweep
from ..builders.trial import build_trial
from .local_run import run_job
from ..runtime.scraper import ScrapeError, fetch
from ..status.progress import read_trainer_metrics
from ..sweeps import study as st
from ..sweeps.report import write_report
from ..api.search_space import shown


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Watch:
    """Reads a running trial's evaluations; SIGTERM when the pruner says so."""

    def __init__(self, spec, trials: list[st.Trial], trial: st.Trial, port: int):
        self.spec, self.trials, self.trial, self.port = spec, trials, trial, port
        self.pruned = False

    def __call__(self, child) -> None:
        try:
            values = read_trainer_metrics(fetch("127.0.0.1", self.port, "/metrics", 2.0)).values
        except (ScrapeError, ValueError):
            return  # not serving yet, or a page caught mid-write
        if "eval_loss" in values and values.get("eval_step"):
            self.trial.curve[int(values["eval_step"])] = values["eval_loss"]
        if not self.pruned and self.trial.number in st.to_prune(self.spec, self.trials):
            step, value = max(self.trial.curve.items())
            print(f"kubetune sweep: pruning trial {self.trial.number}: {self.spec.optimize.metric} {value:.4g} at step {step} "
                  "is worse than the median of earlier trials at that step", file=sys.stderr, flush=True)
            self.pruned = True
            child.terminate()


def _run_trial(sweep, trials: list[st.Trial], workdir: Path) -> None:
    spec, number = sweep.spec, len(trials)
    values, attrs = st.suggest(st.rebuild(spec, trials, number), spec)
    trial = st.Trial(number, values, attrs, "running")
    trials.append(trial)
    parsed = parse_job(build_trial(sweep, number, values, attrs))
    if parsed.job is None:
        trial.state = "failed"
        print(f"kubetune sweep: trial {number} refused: {'; '.join(p.render() for p in parsed.problems)}", file=sys.stderr)
        return
    port = _free_port()
    watch = _Watch(spec, trials, trial, port)
    code, result = run_job(parsed.job, workdir, {"KUBETUNE_METRICS_PORT": str(port), "POD_IP": "127.0.0.1"}, watch)
    objective = ((result or {}).get("metrics") or {}).get(spec.optimize.metric)
    if spec.optimize.metric == "evalLoss":
        trial.curve.update(curves.parse((result or {}).get(curves.KEY)))  # every evaluation, not only those read while it ran
    if code == 0 and objective is not None:
        trial.state, trial.objective = "complete", float(objective)
    else:
        trial.state = "pruned" if watch.pruned else "failed"


def table(spec, trials: list[st.Trial]) -> str:
    paths = [p.path for p in spec.parameters]
    rows = [["trial", *paths, "state", spec.optimize.metric]]
    for t in trials:
        values = shown(t.values)
        rows.append([str(t.number), *(values.get(p, "") for p in paths), t.state,
                     "" if t.objective is None else f"{t.objective:.4g}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def run_sweep(manifest_path: str | Path, workdir: str | Path | None) -> int:
    """Returns 0 when a best trial was found, 1 when none completed, 2 on a bad manifest."""
    parsed = load_manifests(manifest_path, parse_sweep)
    if len(parsed) != 1 or parsed[0].sweep is None:
        for p in parsed:
            for problem in p.problems:
                print(problem.render(p.source), file=sys.stderr)
        if len(parsed) != 1:
            print(f"{manifest_path}: holds {len(parsed)} documents; kubetune sweep takes exactly one FineTuneSweep", file=sys.stderr)
        return 2
    sweep = parsed[0].sweep
    root = Path(workdir or ".kubetune") / sweep.metadata.name
    trials: list[st.Trial] = []
    while len(trials) < sweep.spec.max_trials and sum(t.state == "failed" for t in trials) <= sweep.spec.max_failed_trials:
        _run_trial(sweep, trials, root)
    print(table(sweep.spec, trials))
    best = st.best(sweep.spec, trials)
    report = write_report(root, sweep.metadata.name, sweep.spec, trials)
    print(f"best trial: {best.number if best else 'none'}; report: file://{report.resolve()}")
    return 0 if best else 1
