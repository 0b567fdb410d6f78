"""Kopf handlers: FineTuneJob -> ConfigMap + Job (+ Service) -> status -> serving.

Run with `kopf run -m kubetune_operator.handlers --all-namespaces --peering=kubetune`
(or `kubetune operator`). Handlers stay thin: parse, build, apply, patch status.
The decisions live in pure modules (builders, status_logic, progress); every API
call goes through `k8s.Kube`.

Kopf watches (with peering, so one replica works and the other stands by) and
keeps indexes: in-memory views of the FineTuneJobs and their children fed by
the watch streams, so a status sync costs no reads. Every watch event only
marks its FineTuneJob due in the work queue (`SyncQueue`); its worker threads
then reconcile a new spec generation (create what is missing, converge
suspend), sync status from the children, and scrape a running trainer's
progress. Kopf's on.create/on.update and timers are not used: they cost each
job a Kopf bookkeeping PATCH (its last-handled-configuration annotation, and a
finalizer while a timer runs), the watch events those PATCHes cause, and a
deep copy of every watched body, which under a burst of new jobs delayed their
Jobs by seconds (make bench-operator). What this process has reconciled is
kept in `Context.reconciled`; `status.observedGeneration` tells users.
"""

from __future__ import annotations

import gc
import logging
import random
import time
from dataclasses import dataclass, field

import kopf

from . import metrics
from .admission import disallowed_images
from .api import GROUP, PLURAL, VERSION, parse_job
from .api.status import ConditionType as C
from .api.status import FineTuneJobStatus
from .api.status import Reason as R
from .builders import build_serving_objects, build_training_objects, serving_endpoint
from .builders import locations
from .builders.meta import LABEL_JOB, LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY, SERVING_APP, TRAINER_APP
from .builders.pod import s3_secret_name
from .builders.training import METRICS_PORT
from .k8s import ApiError, Kube, now_rfc3339
from .progress import parse_trainer_metrics, progress_patch, scrape
from .settings import Settings, load_settings
from .status_logic import Observation, apply_patch, next_status, set_condition, status_patch, transition_event
from .sync_queue import SyncQueue

FINALIZER = "kubetune.io/finalizer"
TRAINER_LABELS = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_NAME: TRAINER_APP}
SERVING_LABELS = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_NAME: SERVING_APP}
# The children's watches, and the labels the API server filters them by.
CHILD_WATCHES = {("batch", "v1", "jobs"): TRAINER_LABELS, ("", "v1", "pods"): TRAINER_LABELS,
                 ("apps", "v1", "deployments"): SERVING_LABELS}
SECRET_RETRY_SECONDS = 10
SECRET_CACHE_SECONDS = 30
API_RETRY_SECONDS = 5
# Python's cyclic garbage collector runs after this many container allocations
# (default 700). Every watch event decodes a body into hundreds of dicts and
# lists that reference counting frees anyway, so under a burst of 500 jobs the
# default had the collector running (every thread paused) for about an eighth
# of the burst's wall time, up to 0.2 s at once; with this, the operator's CPU
# per job in the burst fell by about a tenth (make bench-operator).
GC_ALLOCATIONS = 50_000
# Child events within this window cost one status write: a trainer pod's way from
# Pending to Running emits several, and each write is a watch event Kopf processes.
STATUS_SYNC_WINDOW = 0.5

Key = tuple[str, str]
log = logging.getLogger("kubetune.operator")


class _JobLog(logging.LoggerAdapter):
    """Names the job, as Kopf's per-object loggers do, in logs written outside Kopf's handlers."""

    def process(self, msg, kwargs):
        return f"[{self.extra['namespace']}/{self.extra['name']}] {msg}", kwargs


@dataclass
class Context:
    """Everything handlers share, kept in Kopf's memo (no module globals)."""

    cfg: Settings
    kube: Kube
    phases: metrics.PhaseBook = field(default_factory=metrics.PhaseBook)
    # The status we last wrote per job (uid, status): the watch may lag our own writes.
    written: dict[Key, tuple[str, dict]] = field(default_factory=dict)
    secrets_seen: dict[Key, float] = field(default_factory=dict)  # (namespace, name) -> when seen
    # False once the API server answers 403: the chart grants no Secret access,
    # so a missing Secret is then learned from the trainer pod instead.
    may_read_secrets: bool = True
    work: SyncQueue | None = None  # jobs due a pass (started at startup)
    # (uid, generation) of each job's spec this process has reconciled (or refused for good).
    reconciled: dict[Key, tuple[str, int]] = field(default_factory=dict)
    # (uid, generation) of specs accepted whose acceptance (Valid=True) is not written yet.
    accepted: dict[Key, tuple[str, int]] = field(default_factory=dict)
    scraped: dict[Key, float] = field(default_factory=dict)  # when rank 0's /metrics was last read

    def forget(self, key: Key) -> None:
        self.written.pop(key, None)
        self.reconciled.pop(key, None)
        self.accepted.pop(key, None)
        self.scraped.pop(key, None)
        self.phases.set(*key, None)
        if self.work is not None:
            self.work.discard(key)


# --------------------------------------------------------------------------- startup


class _NoDiffBase(kopf.DiffBaseStorage):
    """No handler here asks Kopf what changed in an object (no on.create/on.update),
    so Kopf need not deep-copy every Job and pod body it sees to find out, nor
    keep a copy of each FineTuneJob in an annotation."""

    def build(self, *, body, extra_fields=None):
        return kopf.BodyEssence()

    def fetch(self, *, body):
        return None

    def store(self, *, body, patch, essence) -> None:
        pass


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger,
              finetunejobs, training_jobs, trainer_pods, serving_deployments, **_) -> None:
    cfg = load_settings()
    # No handler needs a finalizer (deletion is never blocked by the operator);
    # one left by an older version is removed by Kopf under this name.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.diffbase_storage = _NoDiffBase()
    # The status subresource is structural: whatever Kopf keeps, it keeps in our
    # annotations, never in status.kopf.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubetune.io")
    # We post our own Events on phase changes; Kopf posts only its warnings/errors.
    settings.posting.level = logging.WARNING
    # Two replicas with the same priority would both pause: pick one at random
    # unless the deployment pins it. The higher one works, the other stands by.
    settings.peering.name = settings.peering.name if settings.peering.mandatory else cfg.peering_name
    settings.peering.priority = cfg.peering_priority if cfg.peering_priority is not None else random.randint(1, 1_000_000)
    _watch_only_ours(settings)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    _tune_gc()
    memo.ctx = ctx = Context(cfg=cfg, kube=Kube.from_environment(cfg.client_qps, cfg.client_burst, cfg.max_workers))
    # Kopf's indexes are live views: the workers read them as they are then.
    views = (finetunejobs, training_jobs, trainer_pods, serving_deployments)
    ctx.work = SyncQueue(lambda key: _work(ctx, key, *views), window=STATUS_SYNC_WINDOW, calm_after=STATUS_SYNC_WINDOW,
                         retry_delay=API_RETRY_SECONDS, workers=cfg.max_workers).start()
    if cfg.metrics_port:
        metrics.serve(cfg.metrics_port)
    logger.info("kubetune operator: peering %s priority %s, metrics on :%s", settings.peering.name, settings.peering.priority, cfg.metrics_port)


def _watch_only_ours(settings: kopf.OperatorSettings) -> None:
    """Have the API server filter the children's watches by our labels. The
    handlers' `labels=` filters are applied by Kopf after each event arrives: without
    this, every pod, Job and Deployment event in the watched namespaces (the whole
    cluster, by default) would be sent here, decoded and indexed, only to be dropped."""
    for resource, labels in CHILD_WATCHES.items():
        settings.watching.label_selectors[resource] = ",".join(f"{k}={v}" for k, v in labels.items())


def _tune_gc() -> None:
    """What is loaded by now (Kopf, the clients, pydantic models) lives as long as the
    process: freezing it keeps every later full collection from walking it again."""
    gc.collect()
    gc.freeze()
    _, younger, older = gc.get_threshold()
    gc.set_threshold(GC_ALLOCATIONS, younger, older)


# --------------------------------------------------------------------------- indexes


# The indexers are async only to run on Kopf's event loop: a sync one is sent to
# a thread for every watch event, which cost more than the indexing itself.


def _slim(body) -> dict:
    """What status derivation needs of a child; keeps the indexes small."""
    meta = body["metadata"]
    return {
        "metadata": {k: meta.get(k) for k in ("name", "uid", "annotations", "creationTimestamp") if meta.get(k) is not None},
        "spec": {k: body.get("spec", {}).get(k) for k in ("suspend", "replicas") if k in body.get("spec", {})},
        "status": dict(body.get("status") or {}),
    }


@kopf.index("batch", "v1", "jobs", labels=TRAINER_LABELS)
async def training_jobs(namespace, labels, body, **_):
    return {(namespace, labels.get(LABEL_JOB)): _slim(body)}


@kopf.index("", "v1", "pods", labels=TRAINER_LABELS)
async def trainer_pods(namespace, labels, body, **_):
    return {(namespace, labels.get(LABEL_JOB)): _slim(body)}


@kopf.index("apps", "v1", "deployments", labels=SERVING_LABELS)
async def serving_deployments(namespace, labels, body, **_):
    return {(namespace, labels.get(LABEL_JOB)): _slim(body)}


@kopf.index(GROUP, VERSION, PLURAL)
async def finetunejobs(namespace, name, body, **_):
    return {(namespace, name): {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec", "status")}}


def _values(index, key) -> list:
    """A copy of one key's values. Kopf updates indexes on its event loop while
    handlers read them from worker threads: a read that races an update is
    simply repeated."""
    for _ in range(100):
        try:
            return list(index.get(key, ()))
        except RuntimeError:  # "changed size during iteration"
            time.sleep(0.001)
    return list(index.get(key, ()))


def _one(index, key):
    values = _values(index, key)
    return values[0] if values else None


# --------------------------------------------------------------------------- status writing


def _parse(body: dict):
    """The typed job (spec + metadata), or the problems. Status is not parsed:
    it is ours, and an old operator's fields must not block reconciling."""
    meta = body["metadata"]
    doc = {
        "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "generation", "labels", "annotations") if k in meta},
        "spec": body.get("spec"),
    }
    return parse_job(doc)


def _current_status(ctx: Context, key: Key, body: dict) -> dict:
    uid = body["metadata"].get("uid")
    written = ctx.written.get(key)
    if written and written[0] == uid:
        return written[1]
    return dict(body.get("status") or {})


def _write(ctx: Context, body: dict, old: dict, new: dict, logger, via: str | None = None) -> dict:
    """Patch status with what changed; an Event and metrics on a phase change.
    `via`: a phase the job went through that this one write skips (its Event is
    still posted, so the job's history stays whole)."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    patch = status_patch(old, new)
    if not patch:
        ctx.phases.set(*key, old.get("phase"))
        return old
    ctx.kube.patch_status(*key, patch)
    stored = apply_patch(old, patch)
    ctx.written[key] = (meta.get("uid"), stored)
    ctx.phases.set(*key, stored.get("phase"))
    if stored.get("attempts") is not None:
        metrics.JOB_ATTEMPTS.labels(namespace=key[0], job=key[1]).set(stored["attempts"])
    steps = [old.get("phase"), stored.get("phase", "")]
    if via and via not in steps:
        steps.insert(1, via)
    accepted_only = {"conditions": [c for c in stored.get("conditions") or [] if c.get("type") == C.VALID]}
    for before, after in zip(steps, steps[1:]):
        # The skipped phase's Event says why it was entered (the spec was accepted).
        event = transition_event(before, after, stored if after == steps[-1] else accepted_only)
        if event:
            metrics.PHASE_TRANSITIONS.labels(**{"from": before or "None", "to": after}).inc()
            ctx.kube.event(body, *event)
            logger.info("phase %s -> %s", before, after)
    return stored


def _refuse(ctx: Context, body: dict, phase: str, reason: str, message: str, logger) -> None:
    """Record why the job cannot run (Valid=False, and Failed for permanent reasons)."""
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    generation = body["metadata"].get("generation")
    now = now_rfc3339()
    old = _current_status(ctx, key, body)
    new = dict(old, phase=phase, observedGeneration=generation)
    conditions = set_condition(list(old.get("conditions") or []), C.VALID, "False", reason, message, now, generation)
    if phase == "Failed":
        conditions = set_condition(conditions, C.FAILED, "True", reason, message, now, generation)
    new["conditions"] = conditions
    _write(ctx, body, old, new, logger)


def _accepted(ctx: Context, body: dict, old: dict) -> dict:
    """`old` with Valid=True; written together with the first derived status."""
    generation = body["metadata"].get("generation")
    conditions = set_condition(list(old.get("conditions") or []), C.VALID, "True", R.ACCEPTED, "spec accepted", now_rfc3339(), generation)
    # A job refused earlier (fixed image) is no longer failed for that reason.
    conditions = [c for c in conditions if not (c["type"] == C.FAILED and c.get("reason") == R.IMAGE_NOT_ALLOWED)]
    new = dict(old, conditions=conditions, observedGeneration=generation)
    if old.get("phase") in (None, "Failed") and not any(c["type"] == C.FAILED for c in conditions):
        new["phase"] = "Pending"
    return new


def _missing_secrets(ctx: Context, job, logger) -> list[str]:
    """Names of referenced Secrets that do not exist (existence only, never their data).
    A Secret seen recently is not asked about again: 500 jobs sharing one Secret
    cost one GET, not 500. A missing one is always asked about afresh.
    Without permission to ask, nothing is reported missing here; the kubelet's
    CreateContainerConfigError on the trainer pod says it (status_logic)."""
    if not ctx.may_read_secrets:
        return []
    ns = job.metadata.namespace
    names = []
    if locations.uses_s3(job, ctx.cfg):
        names.append(s3_secret_name(job, ctx.cfg))
    creds = job.spec.credentials
    names += [ref.name for ref in (creds.hf_token, creds.tracking) if ref is not None]
    missing = []
    now = time.monotonic()
    for name in dict.fromkeys(names):
        if now - ctx.secrets_seen.get((ns, name), -SECRET_CACHE_SECONDS) < SECRET_CACHE_SECONDS:
            continue
        try:
            exists = ctx.kube.exists("Secret", ns, name)
        except ApiError as exc:
            if exc.status != 403:
                raise
            ctx.may_read_secrets = False
            logger.info("not allowed to look up Secrets (%s); a missing Secret will be reported "
                        "from the trainer pod's CreateContainerConfigError instead", exc.status)
            return []
        if exists:
            ctx.secrets_seen[(ns, name)] = now
        else:
            missing.append(name)
    return missing


# --------------------------------------------------------------------------- events


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_finetunejob(type, namespace, name, body, memo: kopf.Memo, **_) -> None:
    """A spec this process has not reconciled is due at once; our own status
    writes come back here too and need nothing."""
    ctx: Context = memo.ctx
    key = (namespace, name)
    if type == "DELETED":
        # Children go through ownerReferences; checkpoints and outputs in S3 stay.
        ctx.forget(key)
        return
    meta = body["metadata"]
    if ctx.reconciled.get(key) != (meta.get("uid"), meta.get("generation")):
        ctx.work.mark(key, delay=0, urgent=True)


@kopf.on.event("batch", "v1", "jobs", labels=TRAINER_LABELS)
async def on_training_job(namespace, labels, memo, **_) -> None:
    memo.ctx.work.mark((namespace, labels.get(LABEL_JOB)))


@kopf.on.event("", "v1", "pods", labels=TRAINER_LABELS)
async def on_trainer_pod(namespace, labels, memo, **_) -> None:
    memo.ctx.work.mark((namespace, labels.get(LABEL_JOB)))


@kopf.on.event("apps", "v1", "deployments", labels=SERVING_LABELS)
async def on_serving_deployment(namespace, labels, memo, **_) -> None:
    memo.ctx.work.mark((namespace, labels.get(LABEL_JOB)))


@kopf.on.cleanup()
def stop_work(memo: kopf.Memo, **_) -> None:
    if getattr(memo, "ctx", None) is not None and memo.ctx.work is not None:
        memo.ctx.work.stop()


# --------------------------------------------------------------------------- one pass over a job


def _work(ctx: Context, key: Key, finetunejobs, training_jobs, trainer_pods, serving_deployments) -> float | None:
    """A worker's pass over one job: reconcile a spec not reconciled yet, else
    sync status from the children; scrape progress while it runs. Returns when
    to come back (None: at the next event); raises to be retried later."""
    found = _one(finetunejobs, key)
    if found is None or found["metadata"].get("deletionTimestamp"):
        return None  # gone or going: garbage collection removes the children
    body = {k: found.get(k) for k in ("apiVersion", "kind", "metadata", "spec", "status")}
    meta = body["metadata"]
    logger = _JobLog(log, {"namespace": key[0], "name": key[1]})
    children = (training_jobs, trainer_pods, serving_deployments)
    started = time.perf_counter()
    # The queue never works on one job twice at once: no lock is needed here.
    try:
        if ctx.reconciled.get(key) != (meta.get("uid"), meta.get("generation")):
            again = _reconcile(ctx, body, key, logger, *children)
        else:
            again = None
            _sync(ctx, key, logger, *children, body=body)
        scrape_in = _poll_progress(ctx, key, body, logger, trainer_pods)
    except ApiError as exc:
        if exc.status == 404:
            return None  # deleted meanwhile
        raise
    finally:
        metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
    return min((t for t in (again, scrape_in) if t is not None), default=None)


def _reconcile(ctx: Context, body: dict, key: Key, logger, training_jobs, trainer_pods, serving_deployments) -> float | None:
    """Parse, check, create what is missing, converge suspend; status follows in
    the next pass. Returns when to try again (a Secret still missing), None when done."""
    meta = body["metadata"]
    done = (meta.get("uid"), meta.get("generation"))
    try:
        again = _reconcile_spec(ctx, body, key, logger, training_jobs, trainer_pods, serving_deployments)
    except ApiError as exc:
        if exc.retryable or exc.status in (404, 409):
            raise
        message = f"the API server refused a child object: {exc.message}"
        logger.error("%s", message)
        _refuse(ctx, body, "Failed", R.INVALID_SPEC, message, logger)
        again = None
    if again is None:
        ctx.reconciled[key] = done
    return again


def _reconcile_spec(ctx: Context, body: dict, key: Key, logger, training_jobs, trainer_pods, serving_deployments) -> float | None:
    cfg, kube = ctx.cfg, ctx.kube
    parsed = _parse(body)
    if parsed.job is None:
        message = "; ".join(p.render() for p in parsed.problems)
        logger.warning("invalid spec: %s", message)
        _refuse(ctx, body, "Failed", R.INVALID_SPEC, message, logger)
        return None  # nothing to retry until the spec changes
    job = parsed.job
    refused = disallowed_images(job, cfg)
    if refused:
        _refuse(ctx, body, "Failed", R.IMAGE_NOT_ALLOWED, "; ".join(refused), logger)
        return None
    missing = _missing_secrets(ctx, job, logger)
    if missing:
        message = f"Secret {', '.join(missing)} not found in namespace {key[0]}; create it (no training Job is created until then)"
        _refuse(ctx, body, "Pending", R.SECRET_MISSING, message, logger)
        return SECRET_RETRY_SECONDS
    old = _current_status(ctx, key, body)
    existing = _one(training_jobs, key)
    if existing is not None:
        _converge_suspend(kube, key, existing, job, logger)
    elif not _trained(old):
        stored, created = _create_training_objects(kube, build_training_objects(job, cfg), logger)
        if created:
            logger.info("created Job %s", stored["metadata"]["name"])
        else:
            _converge_suspend(kube, key, stored, job, logger)
    # Status follows one window later, with whatever the new Job's first events
    # showed by then: under a burst, every worker goes on creating Jobs first.
    ctx.accepted[key] = (job.metadata.uid, job.metadata.generation)
    ctx.work.mark(key)
    return None


def _create_training_objects(kube: Kube, objects: list[dict], logger) -> tuple[dict, bool]:
    """Create the ConfigMap, Job (and Service) side by side; returns the Job (stored,
    created?). Their order does not matter: the Job's pods wait for the ConfigMap
    as a kubelet waits for any volume. When the API server refuses one of the
    others for good (a quota, say) but created the Job, the Job is suspended, so
    that no pod waits for a ConfigMap that will never come (the operator may not
    delete; the Job goes with its FineTuneJob), and the refusal is raised. A
    retryable error leaves everything as it is: the retry finds it (409)."""
    results = kube.create_all_if_absent(objects)
    job = next(result for obj, result in zip(objects, results) if obj["kind"] == "Job")
    errors = [r for r in results if isinstance(r, ApiError)]
    if not errors:
        return job
    final = [e for e in errors if not (e.retryable or e.status in (404, 409))]
    if final and not isinstance(job, ApiError):
        stored = job[0]["metadata"]
        logger.info("suspending Job %s: %s", stored["name"], final[0].message)
        kube.merge_patch("Job", stored["namespace"], stored["name"], {"spec": {"suspend": True}})
    raise (final or errors)[0]


def _valid(status: dict) -> bool:
    """The spec was accepted (a refused one has Valid=False, a new one none yet)."""
    return any(c.get("type") == C.VALID and c.get("status") == "True" for c in status.get("conditions") or [])


def _trained(status: dict) -> bool:
    """Training ran to its end. Its Job is not created again when it is gone
    (ttlSecondsAfterFinished, or removed by hand): the result stands."""
    return status.get("phase") in ("Succeeded", "Serving") or (status.get("phase") == "Failed" and _valid(status))


def _converge_suspend(kube: Kube, key: Key, stored: dict, job, logger) -> None:
    want = job.spec.suspend
    have = bool((stored.get("spec") or {}).get("suspend"))
    if want == have:
        return
    if not want and job.spec.queue_name:
        return  # Kueue unsuspends queued Jobs when it admits them
    kube.merge_patch("Job", key[0], stored["metadata"]["name"], {"spec": {"suspend": want}})
    logger.info("%s Job %s", "suspended" if want else "resumed", stored["metadata"]["name"])


# --------------------------------------------------------------------------- status sync


def _sync(ctx: Context, key: Key, logger, training_jobs, trainer_pods, serving_deployments, body: dict) -> None:
    """Derive status from the children (as the indexes show them) and write what changed
    (in one PATCH with a newly accepted spec's Valid condition and observedGeneration);
    create the serving objects once training succeeded."""
    old = _current_status(ctx, key, body)
    meta = body["metadata"]
    accepting = ctx.accepted.get(key) == (meta.get("uid"), meta.get("generation"))
    base = _accepted(ctx, body, old) if accepting else old
    if not _valid(base):
        return  # refused or not reconciled yet: nothing runs, nothing to derive
    parsed = _parse(body)
    if parsed.job is None:
        return
    job = parsed.job
    obs = Observation(
        job=_one(training_jobs, key),
        pods=_values(trainer_pods, key),
        deployment=_one(serving_deployments, key),
        spec_suspend=job.spec.suspend,
        serving_enabled=job.spec.serving.enabled,
        nodes=job.spec.distributed.nodes,
    )
    new = next_status(base, obs, now=now_rfc3339(), generation=meta.get("generation"))
    if job.spec.serving.enabled and new.get("phase") in ("Succeeded", "Serving") and obs.deployment is None:
        _create_serving(ctx, job, new, logger)
    # A new job was Pending (accepted, its Job created) even when its children's
    # first events already show more by the time its first status is written.
    _write(ctx, body, old, new, logger, via="Pending" if accepting and not old.get("phase") else None)
    if accepting:
        ctx.accepted.pop(key, None)


def _create_serving(ctx: Context, job, status: dict, logger) -> None:
    finished = job.model_copy(update={"status": FineTuneJobStatus.model_validate({"output": status.get("output") or {}}, by_alias=True)})
    for obj in build_serving_objects(finished, ctx.cfg):
        ctx.kube.create_if_absent(obj)
    status["serving"] = dict(status.get("serving") or {}, endpoint=serving_endpoint(job))
    logger.info("created vLLM Deployment and Service")


# --------------------------------------------------------------------------- progress


def _poll_progress(ctx: Context, key: Key, body: dict, logger, trainer_pods) -> float | None:
    """While the job runs, read rank 0's /metrics into status.progress, status.metrics
    and status.checkpoint every scrape interval. Returns when to read again."""
    interval = ctx.cfg.metrics_scrape_interval
    old = _current_status(ctx, key, body)  # the queue runs no other pass on this job meanwhile
    if old.get("phase") != "Running":
        ctx.scraped.pop(key, None)
        return None
    wait = ctx.scraped.get(key, float("-inf")) + interval - time.monotonic()
    if wait > 0:
        return wait
    ctx.scraped[key] = time.monotonic()
    ip = _rank0_ip(_values(trainer_pods, key))
    if not ip:
        return interval
    try:
        text = scrape(f"http://{ip}:{METRICS_PORT}/metrics", ctx.cfg.metrics_scrape_timeout)
    except OSError as exc:
        logger.debug("trainer metrics not reachable yet at %s: %s", ip, exc)
        return interval
    parsed = _parse(body)
    if parsed.job is None:
        return None
    patch = progress_patch(parse_trainer_metrics(text), locations.checkpoint_uri(parsed.job, ctx.cfg))
    if patch:
        new = dict(old)
        for section, values in patch.items():
            new[section] = dict(old.get(section) or {}, **values)
        _write(ctx, body, old, new, logger)
    return interval


def _rank0_ip(pods) -> str | None:
    for pod in pods:
        status = pod.get("status") or {}
        index = (pod["metadata"].get("annotations") or {}).get("batch.kubernetes.io/job-completion-index", "0")
        if status.get("phase") == "Running" and status.get("podIP") and index == "0":
            return status["podIP"]
    return None
