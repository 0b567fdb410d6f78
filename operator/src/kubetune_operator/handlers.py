"""Kopf handlers: FineTuneJob -> ConfigMap + Job (+ Service) -> status -> serving.

Run with `kopf run -m kubetune_operator.handlers --all-namespaces --peering=kubetune`
(or `kubetune operator`). Handlers stay thin: parse, build, apply, patch status.
The decisions live in pure modules (builders, status_logic, progress); every API
call goes through `k8s.Kube`; our errors become Kopf's only here.

Children are watched through Kopf indexes (in-memory views fed by the watch
streams), so a status sync costs no extra reads: one PATCH when something changed.
A child's event only marks its owner due; `SyncQueue` syncs each due owner once
per short window, off Kopf's handler pool (see sync_queue.py for why).
"""

from __future__ import annotations

import logging
import random
import threading
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
SECRET_RETRY_SECONDS = 10
SECRET_CACHE_SECONDS = 30
API_RETRY_SECONDS = 5
# Child events within this window cost one status write: a trainer pod's way from
# Pending to Running emits several, and each write is a watch event Kopf processes.
STATUS_SYNC_WINDOW = 0.5
# Decorator arguments are fixed at import; the interval is the one setting read here.
SCRAPE_INTERVAL = load_settings().metrics_scrape_interval

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
    syncs: SyncQueue | None = None  # owners whose children changed (started at startup)
    _locks: dict[Key, threading.RLock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def lock(self, key: Key) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(key, threading.RLock())

    def forget(self, key: Key) -> None:
        with self._guard:
            self._locks.pop(key, None)
        self.written.pop(key, None)
        self.phases.set(*key, None)


# --------------------------------------------------------------------------- startup


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger,
              finetunejobs, training_jobs, trainer_pods, serving_deployments, **_) -> None:
    cfg = load_settings()
    settings.persistence.finalizer = FINALIZER
    # The status subresource is structural: Kopf keeps its bookkeeping in our
    # annotations, never in status.kopf.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubetune.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kubetune.io", key="last-handled-configuration")
    # After patching its annotations Kopf waits this long for the watch to show
    # its own patch. Under a burst the watch lags by more than the default 5 s;
    # giving up early makes Kopf take our own status write (made before its patch)
    # for an unhandled object and run the creation handler a second time.
    settings.persistence.consistency_timeout = 60
    # We post our own Events on phase changes; Kopf posts only its warnings/errors.
    settings.posting.level = logging.WARNING
    # Two replicas with the same priority would both pause: pick one at random
    # unless the deployment pins it. The higher one works, the other stands by.
    settings.peering.name = settings.peering.name if settings.peering.mandatory else cfg.peering_name
    settings.peering.priority = cfg.peering_priority if cfg.peering_priority is not None else random.randint(1, 1_000_000)
    settings.execution.max_workers = cfg.max_workers
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    memo.ctx = ctx = Context(cfg=cfg, kube=Kube.from_environment(cfg.client_qps, cfg.client_burst))
    # Kopf's indexes are live views: the sync workers read them as they are then.
    views = (finetunejobs, training_jobs, trainer_pods, serving_deployments)
    ctx.syncs = SyncQueue(lambda key: _sync_owner(ctx, key, *views), window=STATUS_SYNC_WINDOW, retry_delay=API_RETRY_SECONDS).start()
    if cfg.metrics_port:
        metrics.serve(cfg.metrics_port)
    logger.info("kubetune operator: peering %s priority %s, metrics on :%s", settings.peering.name, settings.peering.priority, cfg.metrics_port)


# --------------------------------------------------------------------------- indexes


def _slim(body) -> dict:
    """What status derivation needs of a child; keeps the indexes small."""
    meta = body["metadata"]
    return {
        "metadata": {k: meta.get(k) for k in ("name", "uid", "annotations", "creationTimestamp") if meta.get(k) is not None},
        "spec": {k: body.get("spec", {}).get(k) for k in ("suspend", "replicas") if k in body.get("spec", {})},
        "status": dict(body.get("status") or {}),
    }


@kopf.index("batch", "v1", "jobs", labels=TRAINER_LABELS)
def training_jobs(namespace, labels, body, **_):
    return {(namespace, labels.get(LABEL_JOB)): _slim(body)}


@kopf.index("", "v1", "pods", labels=TRAINER_LABELS)
def trainer_pods(namespace, labels, body, **_):
    return {(namespace, labels.get(LABEL_JOB)): _slim(body)}


@kopf.index("apps", "v1", "deployments", labels=SERVING_LABELS)
def serving_deployments(namespace, labels, body, **_):
    return {(namespace, labels.get(LABEL_JOB)): _slim(body)}


@kopf.index(GROUP, VERSION, PLURAL)
def finetunejobs(namespace, name, body, **_):
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


def _write(ctx: Context, body: dict, old: dict, new: dict, logger) -> dict:
    """Patch status with what changed; an Event and metrics on a phase change."""
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
    event = transition_event(old.get("phase"), stored.get("phase", ""), stored)
    if event:
        metrics.PHASE_TRANSITIONS.labels(**{"from": old.get("phase") or "None", "to": stored["phase"]}).inc()
        ctx.kube.event(body, *event)
        logger.info("phase %s -> %s", old.get("phase"), stored["phase"])
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


# --------------------------------------------------------------------------- reconcile


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def reconcile(body, memo: kopf.Memo, logger, training_jobs, trainer_pods, serving_deployments, **_) -> None:
    """Parse, check, build, create what is missing, converge suspend, sync status."""
    ctx: Context = memo.ctx
    body = {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec", "status")}
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    started = time.perf_counter()
    with ctx.lock(key):
        try:
            _reconcile(ctx, body, key, logger, training_jobs, trainer_pods, serving_deployments)
        except ApiError as exc:
            if exc.retryable or exc.status == 409:
                raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=API_RETRY_SECONDS) from None
            _refuse(ctx, body, "Failed", R.INVALID_SPEC, f"the API server refused a child object: {exc.message}", logger)
            raise kopf.PermanentError(f"Kubernetes API refused a child object: {exc}") from None
        finally:
            metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)


def _reconcile(ctx: Context, body: dict, key: Key, logger, training_jobs, trainer_pods, serving_deployments) -> None:
    cfg, kube = ctx.cfg, ctx.kube
    parsed = _parse(body)
    if parsed.job is None:
        message = "; ".join(p.render() for p in parsed.problems)
        _refuse(ctx, body, "Failed", R.INVALID_SPEC, message, logger)
        raise kopf.PermanentError(f"invalid spec: {message}")
    job = parsed.job
    refused = disallowed_images(job, cfg)
    if refused:
        _refuse(ctx, body, "Failed", R.IMAGE_NOT_ALLOWED, "; ".join(refused), logger)
        return  # nothing to retry until the spec changes
    missing = _missing_secrets(ctx, job, logger)
    if missing:
        message = f"Secret {', '.join(missing)} not found in namespace {key[0]}; create it (no training Job is created until then)"
        _refuse(ctx, body, "Pending", R.SECRET_MISSING, message, logger)
        raise kopf.TemporaryError(message, delay=SECRET_RETRY_SECONDS)
    accepted = _accepted(ctx, body, _current_status(ctx, key, body))

    for obj in build_training_objects(job, cfg):
        stored, created = kube.create_if_absent(obj)
        if obj["kind"] == "Job":
            if created:
                logger.info("created Job %s", obj["metadata"]["name"])
            else:
                _converge_suspend(kube, stored, job, logger)
    _sync(ctx, key, logger, training_jobs, trainer_pods, serving_deployments, body=body, base=accepted)


def _converge_suspend(kube: Kube, stored: dict, job, logger) -> None:
    want = job.spec.suspend
    have = bool((stored.get("spec") or {}).get("suspend"))
    if want == have:
        return
    if not want and job.spec.queue_name:
        return  # Kueue unsuspends queued Jobs when it admits them
    kube.merge_patch("Job", stored["metadata"]["namespace"], stored["metadata"]["name"], {"spec": {"suspend": want}})
    logger.info("%s Job %s", "suspended" if want else "resumed", stored["metadata"]["name"])


# --------------------------------------------------------------------------- status sync


def _sync(ctx: Context, key: Key, logger, training_jobs, trainer_pods, serving_deployments, body: dict, base: dict | None = None) -> None:
    """Derive status from the children (as the indexes show them) and write what changed
    (in one PATCH with `base`'s changes, when given); create the serving objects once
    training succeeded."""
    with ctx.lock(key):
        old = _current_status(ctx, key, body)
        base = old if base is None else base
        valid = next((c for c in base.get("conditions") or [] if c.get("type") == C.VALID), None)
        if not valid or valid.get("status") != "True":
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
        new = next_status(base, obs, now=now_rfc3339(), generation=body["metadata"].get("generation"))
        if job.spec.serving.enabled and new.get("phase") in ("Succeeded", "Serving") and obs.deployment is None:
            _create_serving(ctx, job, new, logger)
        _write(ctx, body, old, new, logger)


def _create_serving(ctx: Context, job, status: dict, logger) -> None:
    finished = job.model_copy(update={"status": FineTuneJobStatus.model_validate({"output": status.get("output") or {}}, by_alias=True)})
    for obj in build_serving_objects(finished, ctx.cfg):
        ctx.kube.create_if_absent(obj)
    status["serving"] = dict(status.get("serving") or {}, endpoint=serving_endpoint(job))
    logger.info("created vLLM Deployment and Service")


def _sync_owner(ctx: Context, key: Key, finetunejobs, training_jobs, trainer_pods, serving_deployments) -> None:
    """A SyncQueue worker's sync of one owner (raises to be retried later)."""
    body = _one(finetunejobs, key)
    if body is None:
        return  # owner gone: garbage collection removes the child
    started = time.perf_counter()
    try:
        _sync(ctx, key, _JobLog(log, {"namespace": key[0], "name": key[1]}), training_jobs, trainer_pods, serving_deployments, body=body)
    except ApiError as exc:
        if exc.status != 404:
            raise
    finally:
        metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)


@kopf.on.event("batch", "v1", "jobs", labels=TRAINER_LABELS)
async def on_training_job(namespace, labels, memo, **_) -> None:
    memo.ctx.syncs.mark((namespace, labels.get(LABEL_JOB)))


@kopf.on.event("", "v1", "pods", labels=TRAINER_LABELS)
async def on_trainer_pod(namespace, labels, memo, **_) -> None:
    memo.ctx.syncs.mark((namespace, labels.get(LABEL_JOB)))


@kopf.on.event("apps", "v1", "deployments", labels=SERVING_LABELS)
async def on_serving_deployment(namespace, labels, memo, **_) -> None:
    memo.ctx.syncs.mark((namespace, labels.get(LABEL_JOB)))


@kopf.on.cleanup()
def stop_syncs(memo: kopf.Memo, **_) -> None:
    if getattr(memo, "ctx", None) is not None and memo.ctx.syncs is not None:
        memo.ctx.syncs.stop()


# --------------------------------------------------------------------------- progress


def _is_running(status, **_) -> bool:
    return (status or {}).get("phase") == "Running"


@kopf.timer(GROUP, VERSION, PLURAL, interval=SCRAPE_INTERVAL, when=_is_running)
def poll_progress(body, namespace, name, memo, logger, trainer_pods, **_) -> None:
    """Scrape rank 0's /metrics into status.progress, status.metrics and status.checkpoint."""
    ctx: Context = memo.ctx
    key = (namespace, name)
    ip = _rank0_ip(_values(trainer_pods, key))
    if not ip:
        return
    try:
        text = scrape(f"http://{ip}:{METRICS_PORT}/metrics", ctx.cfg.metrics_scrape_timeout)
    except OSError as exc:
        logger.debug("trainer metrics not reachable yet at %s: %s", ip, exc)
        return
    parsed = _parse(dict(body))
    if parsed.job is None:
        return
    patch = progress_patch(parse_trainer_metrics(text), locations.checkpoint_uri(parsed.job, ctx.cfg))
    if not patch:
        return
    plain = {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec", "status")}
    with ctx.lock(key):
        old = _current_status(ctx, key, plain)
        if old.get("phase") != "Running":
            return  # finished meanwhile: the termination message has the final numbers
        new = dict(old)
        for section, values in patch.items():
            new[section] = dict(old.get(section) or {}, **values)
        _write(ctx, plain, old, new, logger)


def _rank0_ip(pods) -> str | None:
    for pod in pods:
        status = pod.get("status") or {}
        index = (pod["metadata"].get("annotations") or {}).get("batch.kubernetes.io/job-completion-index", "0")
        if status.get("phase") == "Running" and status.get("podIP") and index == "0":
            return status["podIP"]
    return None


# --------------------------------------------------------------------------- delete


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget(namespace, name, memo, **_) -> None:
    """Children go through ownerReferences; checkpoints and outputs in S3 stay.
    `optional`: deletion is never blocked by a finalizer, even with the operator down."""
    memo.ctx.forget((namespace, name))
