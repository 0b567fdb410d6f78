"""What the FineTuneSweep controller watches, what each event marks, and one pass.

A sweep is due at once when its spec is new to this process, and a window
after any of its trials changed (their status moves as they train: each move
is a chance to prune, to start the next trial, to name a new best)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ... import metrics
from ...api import GROUP, PLURAL, VERSION
from ...api.errors import Problem
from ...api.manifest import parse_sweep
from ...api.status import ConditionType as C
from ...api.status import Reason as R
from ...api.sweep import SWEEP_PLURAL, FineTuneSweep
from ...builders.meta import LABEL_MANAGED_BY, LABEL_SWEEP, MANAGED_BY
from ...k8s import now_rfc3339
from ...runtime import Key, PermanentError, Runtime, Watch
from ...runtime.status import StatusWriter
from ...runtime.watches import whole
from ...status.conditions import set_condition
from ...sweeps import trials as st
from ...api.search_space import shown
from . import act, progress
from .observe import INVALID, observe

SWEEPS = Watch("finetunesweeps", GROUP, VERSION, SWEEP_PLURAL, keep=whole)
TRIALS = Watch("sweep-trials", GROUP, VERSION, PLURAL, {LABEL_MANAGED_BY: MANAGED_BY}, owner_label=LABEL_SWEEP)
log = logging.getLogger("kubetune.sweep")


class SweepLog(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return f"[{self.extra['namespace']}/{self.extra['name']}] {msg}", kwargs


@dataclass
class SweepPass:
    key: Key
    body: dict
    sweep: FineTuneSweep | None
    problems: list[Problem] = field(default_factory=list)
    refused: dict[int, dict] = field(default_factory=dict)  # trials refused this pass: number -> their status row

    @classmethod
    def of(cls, key: Key, body: dict) -> "SweepPass":
        meta = body["metadata"]
        parsed = parse_sweep({"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "spec": body.get("spec"),
                              "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "generation", "labels", "annotations") if k in meta}})
        return cls(key, body, parsed.sweep, parsed.problems)

    @property
    def generation(self) -> int | None:
        return self.body["metadata"].get("generation")

    @property
    def logger(self) -> SweepLog:
        return SweepLog(log, {"namespace": self.key[0], "name": self.key[1]})


def phase_event(before: str | None, after: str, status: dict, final: bool) -> tuple[str, str, str] | None:
    if before == after:
        return None
    best = status.get("best") or {}
    detail = f"; best trial {best['name']} ({best['objective']:.4g})" if best else ""
    return ("Warning" if after == "Failed" else "Normal", f"Sweep{after}", f"{before or 'New'} -> {after} ({status.get('summary')} trials){detail}")


class FineTuneSweepController:
    name = "finetunesweep"
    watches = (SWEEPS, TRIALS)

    def __init__(self, runtime: Runtime):
        self.rt, self.kube = runtime, runtime.kube
        self.status = StatusWriter(runtime.kube, "FineTuneSweep", phase_event, on_written=metrics.record_sweep)
        self.seen: dict[Key, tuple] = {}  # key -> the (uid, generation) this process has worked on

    def on_event(self, watch: Watch, event_type: str, key: Key, body) -> None:
        if watch is TRIALS:
            # A trial that just ended frees a slot: the next trial is new work, like a new spec.
            ended = (body.get("status") or {}).get("phase") in ("Succeeded", "Serving", "Failed", "Stopped")
            self.rt.mark(self.name, key, delay=0 if ended else None, urgent=ended)
        elif event_type == "DELETED":
            self.seen.pop(key, None)
            self.status.forget(key)
            self.rt.discard(self.name, key)
            metrics.forget_sweep(*key)
        else:
            new = self.seen.get(key) != (body["metadata"].get("uid"), body["metadata"].get("generation"))
            self.rt.mark(self.name, key, delay=0 if new else None, urgent=new)

    def work(self, key: Key) -> float | None:
        body = self.rt.cache.one(SWEEPS.kind, key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None  # its trials go with it (owner references)
        p = SweepPass.of(key, body)
        self.seen[key] = (body["metadata"].get("uid"), p.generation)
        if p.sweep is None:
            raise PermanentError(R.INVALID_SPEC, "; ".join(problem.render() for problem in p.problems))
        return self._pass(p)

    def _pass(self, p: SweepPass) -> float | None:
        spec, old = p.sweep.spec, self.status.current(p.key, p.body)
        trials, bodies = observe(spec.optimize.metric, old, self.rt.cache.all(TRIALS.kind, p.key))
        act.stop_worse_trials(self, p, trials, bodies)
        act.carry_suspend(self, p, bodies)
        again = act.start_trials(self, p, trials)
        new = self._derive(p, old, trials, bodies)
        self._report_changes(p, old, new)
        self.status.write(p.body, old, new, p.logger)
        return again

    def _derive(self, p: SweepPass, old: dict, trials: list[st.Trial], bodies: dict[int, dict]) -> dict:
        spec, now = p.sweep.spec, now_rfc3339()
        best = progress.best_row(spec, trials, bodies)
        phase = progress.phase(spec, trials)
        new = dict(old, phase=phase, observedGeneration=p.generation, sampler=st.describe_sampler(spec), pruner=st.describe_pruner(spec),
                   trials=progress.trial_rows(trials, bodies, {"trials": [*(old.get("trials") or []), *p.refused.values()]}), counts=progress.counts(trials), best=best,
                   summary=progress.summary(spec, trials), startTime=old.get("startTime") or now)
        conditions = set_condition(list(old.get("conditions") or []), C.VALID, "True", R.ACCEPTED, "spec accepted", now, p.generation)
        if phase in ("Succeeded", "Failed"):
            new["completionTime"] = old.get("completionTime") or now
            promoted = act.promote(self, p, best, bodies) if phase == "Succeeded" else None
            if promoted:
                conditions = set_condition(conditions, "Promoted", "True", "BestTrialServed", f"serving {promoted}", now, p.generation)
        new["conditions"] = conditions
        return new

    def _report_changes(self, p: SweepPass, old: dict, new: dict) -> None:
        """Events for trials that ended and for a new best."""
        before = {t["number"]: t.get("phase") for t in old.get("trials") or []}
        for row in new["trials"]:
            if row["phase"] in ("Succeeded", "Failed", "Stopped") and before.get(row["number"]) != row["phase"]:
                self.event(p, "Warning" if row["phase"] == "Failed" else "Normal", f"Trial{row['phase']}",
                           f"trial {row['number']} ({row['name']}) {row['phase'].lower()}" + (f": {row.get('reason')}" if row.get("reason") else ""))
        best, was = new.get("best"), old.get("best") or {}
        if best and best["number"] != was.get("number"):
            self.event(p, "Normal", "NewBest", f"trial {best['number']} ({best['name']}): {p.sweep.spec.optimize.metric} {best['objective']:.4g}, {best['parameters']}")

    # ------------------------------------------------------------------ used by act

    def event(self, p: SweepPass, type_: str, reason: str, message: str) -> None:
        self.kube.event(p.body, type_, reason, message)

    def invalid(self, p: SweepPass, number: int, doc: dict, values: dict, problems: list[Problem]) -> None:
        reason = "; ".join(x.render() for x in problems)
        p.logger.warning("trial %d refused before it was created: %s", number, reason)
        self.event(p, "Warning", "TrialInvalid", f"trial {number}: {reason}"[:1000])
        p.refused[number] = {"number": number, "name": doc["metadata"]["name"], "parameters": shown(values), "phase": INVALID,
                             "pruned": False, "reason": "InvalidSpec", "curve": {}}

    def on_permanent(self, key: Key, error: PermanentError) -> None:
        body = self.rt.cache.one(SWEEPS.kind, key)
        if body is None:
            return
        old, now, generation = self.status.current(key, body), now_rfc3339(), body["metadata"].get("generation")
        conditions = set_condition(list(old.get("conditions") or []), C.VALID, "False", error.reason, error.message, now, generation)
        self.status.write(body, old, dict(old, phase="Failed", observedGeneration=generation, conditions=conditions), log)


__all__ = ["INVALID", "FineTuneSweepController"]
