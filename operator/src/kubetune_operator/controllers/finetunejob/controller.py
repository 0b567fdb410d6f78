"""What the FineTuneJob controller watches, what each event marks, and one pass.

A spec this process has not reconciled yet (a new uid or generation) is
urgent; a child's event asks for a status sync one window later. What this
process has reconciled is remembered per job (`status.observedGeneration`
tells users)."""

from __future__ import annotations

import time

from ... import metrics
from ...api.status import STOP_ANNOTATION
from ...api.status import ConditionType as C
from ...k8s import ApiError, now_rfc3339
from ...runtime import Key, PermanentError, Runtime, Watch
from ...runtime.scraper import Scraper
from ...runtime.status import StatusWriter
from ...status.progress import read_trainer_metrics
from ...status.conditions import set_condition
from ...status.observed import transition_event
from ..watches import FINETUNEJOBS, POOL_DEPLOYMENTS, POOL_PODS, SERVING_DEPLOYMENTS, SERVING_PODS, TRAINER_PODS, TRAINING_JOBS
from .adapter_source import Dependents
from .observe import Pass, children, members_to_mark
from .reconcile import reconcile
from .scrape import poll_progress
from .secrets import SecretChecker
from .sync import sync

def phase_event(before: str | None, after: str, status: dict, final: bool) -> tuple[str, str, str] | None:
    # A phase the write skipped says why it was entered: the spec was accepted.
    shown = status if final else {"conditions": [c for c in status.get("conditions") or [] if c.get("type") == C.VALID]}
    event = transition_event(before, after, shown)
    if event:
        metrics.PHASE_TRANSITIONS.labels(**{"from": before or "None", "to": after}).inc()
    return event


class FineTuneJobController:
    name = "finetunejob"
    watches = (FINETUNEJOBS, TRAINING_JOBS, TRAINER_PODS, SERVING_DEPLOYMENTS, SERVING_PODS, POOL_DEPLOYMENTS, POOL_PODS)

    def __init__(self, runtime: Runtime):
        self.rt = runtime
        self.cfg, self.kube, self.clock = runtime.cfg, runtime.kube, runtime.queue.clock
        self.phases = metrics.PhaseBook()
        self.status = StatusWriter(runtime.kube, "FineTuneJob", phase_event,
                                   on_phase=lambda key, phase: self.phases.set(*key, phase), on_written=_count_attempts)
        self.secrets = SecretChecker(runtime.kube, runtime.cfg, self.clock)
        self.reconciled: dict[Key, tuple] = {}  # key -> the spec version reconciled (or refused for good)
        self.accepted: dict[Key, tuple] = {}  # key -> a spec version accepted whose Valid=True is not written yet
        self.scraped: dict[Key, float] = {}  # key -> when rank 0's /metrics was last asked for
        cfg = runtime.cfg
        self.scraper = Scraper(read_trainer_metrics, on_done=self.mark, workers=cfg.metrics_scrape_workers,
                               per_namespace=cfg.metrics_scrape_per_namespace, deadline_s=cfg.metrics_scrape_timeout,
                               clock=self.clock)
        self.handled: dict[Key, frozenset[str]] = {}  # key -> pods of failed multi-node attempts acted on
        self.started: dict[Key, dict[str, str]] = {}  # key -> uid -> completion index of trainer pods that started
        self.dependents = Dependents()  # which jobs train on from which job's adapter
        self.workloads_readable = True  # False once the API server refuses to list Kueue Workloads

    # ------------------------------------------------------------------ events (Kopf's loop)

    def on_event(self, watch: Watch, event_type: str, key: Key, body) -> None:
        if watch is FINETUNEJOBS:  # a job that trains on from this one's adapter waits for it
            if event_type != "DELETED":
                self.dependents.seen(key, body)
            for dependent in self.dependents.of(key):
                self.mark(dependent)
        if watch in (POOL_DEPLOYMENTS, POOL_PODS):
            for member in members_to_mark(self, *key):  # key: (namespace, pool)
                self.mark(member)
        elif watch is not FINETUNEJOBS:
            self.mark(key)
        elif event_type == "DELETED":
            # Children go through ownerReferences; checkpoints and outputs in S3 stay.
            self.forget(key)
        elif self.reconciled.get(key) != (body["metadata"].get("uid"), body["metadata"].get("generation")):
            self.mark(key, delay=0, urgent=True)
        elif STOP_ANNOTATION in (body["metadata"].get("annotations") or {}) and (body.get("status") or {}).get("phase") != "Stopped":
            self.mark(key)  # an annotation changes no generation: asked to stop, the job needs a pass

    def mark(self, key: Key, delay: float | None = None, urgent: bool = False) -> None:
        self.rt.mark(self.name, key, delay=delay, urgent=urgent)

    def forget(self, key: Key) -> None:
        for memory in (self.reconciled, self.accepted, self.scraped, self.handled, self.started):
            memory.pop(key, None)
        self.dependents.forget(key)
        self.scraper.forget(key)
        self.status.forget(key)
        self.rt.discard(self.name, key)

    # ------------------------------------------------------------------ a pass (a worker thread)

    def work(self, key: Key) -> float | None:
        """Reconcile a spec not reconciled yet, else sync status from the children;
        scrape progress while it runs. Returns when to come back (None: at the next event)."""
        p = self._load(key)
        if p is None:
            return None
        started = time.perf_counter()
        try:
            again = reconcile(self, p) if self.reconciled.get(key) != p.version else sync(self, p)
            scrape_in = poll_progress(self, p)
        except ApiError as exc:
            if exc.status == 404:
                return None  # deleted meanwhile
            raise
        finally:
            metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
        return min((t for t in (again, scrape_in) if t is not None), default=None)

    def on_permanent(self, key: Key, error: PermanentError) -> None:
        p = self._load(key)
        if p is not None:
            self.refuse(p, "Failed", error.reason, error.message)
            self.reconciled[key] = p.version

    def _load(self, key: Key) -> Pass | None:
        body = self.rt.cache.one(FINETUNEJOBS.kind, key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None  # gone or going: garbage collection removes the children
        return Pass.of(key, body)

    # ------------------------------------------------------------------ shared by the steps

    def children(self, key: Key) -> tuple[dict | None, list[dict], dict | None]:
        """(training Job, trainer pods, serving Deployment) as the cache shows them, ours by UID only."""
        body = self.rt.cache.one(FINETUNEJOBS.kind, key)
        return children(self.rt.cache, key, (body or {}).get("metadata", {}).get("uid"))

    def refuse(self, p: Pass, phase: str, reason: str, message: str) -> None:
        """Record why the job cannot run (Valid=False, and Failed for permanent reasons)."""
        now = now_rfc3339()
        old = self.status.current(p.key, p.body)
        conditions = set_condition(list(old.get("conditions") or []), C.VALID, "False", reason, message, now, p.generation)
        if phase == "Failed":
            conditions = set_condition(conditions, C.FAILED, "True", reason, message, now, p.generation)
        new = dict(old, phase=phase, observedGeneration=p.generation, conditions=conditions)
        self.status.write(p.body, old, new, p.logger)


def _count_attempts(key: Key, status: dict) -> None:
    if status.get("attempts") is not None:
        metrics.JOB_ATTEMPTS.labels(namespace=key[0], job=key[1]).set(status["attempts"])
