"""A spec this process has not reconciled: check it, create what is missing,
converge suspend, then status in the same pass (`sync`): a new job shows
phase Pending with its Valid condition as soon as its Job exists, and a
changed spec's effect (serving turned off) is acted on at once."""

from __future__ import annotations

from ...admission import disallowed_images, policy_violations
from ...api.status import Reason as R
from ...builders import build_training_objects
from ...builders.training import SPEC_GENERATION_ANNOTATION
from ...builders.meta import conflict_message, controlled_by
from ...k8s import ApiError
from ...runtime import PermanentError
from . import adapter_source
from ..watches import FINETUNEJOBS
from .observe import pool_refusal
from .suspend import converge_suspend
from .sync import sync, trained

SECRET_RETRY_SECONDS = 10
CONFLICT_RETRY_SECONDS = 10
FORBIDDEN_RETRY_SECONDS = 10


def reconcile(ctl, p) -> float | None:
    """Returns when to try again (a Secret still missing), None when done.
    Raises PermanentError when retrying cannot help until the spec changes."""
    waiting = _admit(ctl, p)
    if waiting is not None:
        return waiting
    try:
        return _converge(ctl, p)
    except ApiError as exc:
        if not exc.rbac_denied:
            raise
        return _forbidden(ctl, p, exc)


def _converge(ctl, p) -> float | None:
    training_job, _, _ = ctl.children(p.key)
    if trained(ctl.status.current(p.key, p.body)):
        if training_job is not None:
            converge_suspend(ctl.kube, p, training_job)
    elif training_job is not None:
        conflict = _complete_training_objects(ctl, p, training_job)
        if conflict:
            return _conflict(ctl, p, conflict)
    else:
        conflict = pool_refusal(ctl, p)
        if conflict:  # refused before anything is created: the pool could never serve it
            raise PermanentError(R.INVALID_SPEC, conflict)
        source = _adapter_source(ctl, p)
        if source.waiting:
            ctl.refuse(p, "Pending", source.reason, source.waiting)
            return adapter_source.RETRY_SECONDS
        conflict = _create_training_objects(ctl, p, source.uri)
        if conflict:
            return _conflict(ctl, p, conflict)
    ctl.accepted[p.key] = p.version
    ctl.reconciled[p.key] = p.version
    # In the same pass: phase Pending with Valid=True for a new job (with what its
    # children show, for a changed spec), never one window later.
    return sync(ctl, p)


def _admit(ctl, p) -> float | None:
    """What must hold before anything is created: a valid spec, allowed images,
    the admin policy (as the API server's admission policy has it) and usable
    Secrets. Raises PermanentError, or returns when to look again."""
    if p.job is None:
        raise PermanentError(R.INVALID_SPEC, "; ".join(problem.render() for problem in p.problems))
    refused = disallowed_images(p.job, ctl.cfg)
    if refused:
        raise PermanentError(R.IMAGE_NOT_ALLOWED, "; ".join(refused))
    refused = policy_violations(p.job, ctl.cfg)
    if refused:
        raise PermanentError(R.POLICY_DENIED, "; ".join(refused))
    secrets = ctl.secrets.check(p.job, p.logger)
    if secrets.missing:
        message = f"Secret {', '.join(secrets.missing)} not found in namespace {p.key[0]}; create it (no training Job is created until then)"
        ctl.refuse(p, "Pending", R.SECRET_MISSING, message)
        return SECRET_RETRY_SECONDS
    if secrets.unusable:
        ctl.refuse(p, "Pending", R.SECRET_NOT_USABLE, secrets.unusable_message(ctl.cfg.policy.secret_label))
        return SECRET_RETRY_SECONDS
    return None


def _forbidden(ctl, p, exc: ApiError) -> float:
    """The operator's own RBAC lacks a verb: said in status (the API server's
    message names the verb, resource and ServiceAccount), looked at again
    later: an admin fixes the Role, not the FineTuneJob's author."""
    p.logger.warning("the API server refused the operator: %s", exc.message)
    ctl.refuse(p, "Pending", R.PERMISSION_DENIED,
               f"the operator is not allowed to create this job's objects: {exc.message} "
               f"(grant it in the operator's Role; retried every {FORBIDDEN_RETRY_SECONDS} s)")
    return FORBIDDEN_RETRY_SECONDS


def _conflict(ctl, p, conflict: str) -> float:
    """A child of our name that is not ours: said in status, looked at again
    later (an earlier incarnation's Job goes once garbage collection catches up)."""
    ctl.refuse(p, "Pending", R.CHILD_CONFLICT, f"{conflict} (no training Job runs until then)")
    return CONFLICT_RETRY_SECONDS


def _adapter_source(ctl, p) -> adapter_source.Resolved:
    name = p.job.spec.model.adapter_from_job
    if name is None:
        return adapter_source.Resolved()
    return adapter_source.resolve(p.key[0], name, ctl.rt.cache.one(FINETUNEJOBS.kind, (p.key[0], name)))


def _complete_training_objects(ctl, p, training_job: dict) -> str | None:
    """A Job this process did not create (it restarted, or the spec changed):
    its ConfigMap and Service are created too where missing, since a process
    killed between creating the Job and them left pods waiting for a volume
    that would never come. Costs a 409 per object, once per job and process.
    Returns a conflict, as `_create_training_objects`."""
    source = _adapter_source(ctl, p)
    if source.waiting:  # made while its source job had an adapter; nothing to rebuild the config from now
        converge_suspend(ctl.kube, p, training_job)
        return None
    return _create_training_objects(ctl, p, source.uri, existing_job=training_job)


def _create_training_objects(ctl, p, adapter_uri: str | None = None, existing_job: dict | None = None) -> str | None:
    """Create the ConfigMap and the Job side by side (a second round trip cost
    the apply-to-Job p99 half again under a burst); a multi-node job's Service
    first, the Job after it (pods would resolve a rendezvous name of someone
    else's at once), and a queued job's ConfigMap first too (its Job waits for
    Kueue anyway, which would un-suspend it whatever we suspended). An object
    a create answered 409 for must name this FineTuneJob as its controller;
    otherwise it is left untouched, the Job is suspended and the conflict
    returned (a ConfigMap someone made beforehand cannot carry this job's UID,
    and the trainer runs no config whose job.uid is not its pod's
    KUBETUNE_JOB_UID). A refusal for good (a quota) suspends the Job too and is
    permanent; a retryable error is left for the retry."""
    kube, uid = ctl.kube, p.body["metadata"].get("uid")
    job = adapter_source.with_source_adapter(p.job, adapter_uri) if adapter_uri else p.job
    built = build_training_objects(job, ctl.cfg)
    sequential = job.spec.queue_name is not None or any(obj["kind"] == "Service" for obj in built)
    job_now = not sequential and existing_job is None  # the Job in the same round as the rest
    first = [obj for obj in built if obj["kind"] != "Job" or job_now]
    results = list(zip(first, kube.create_all_if_absent(first)))
    if sequential and existing_job is None and not _failed(results) and not _foreign(results, uid):
        the_job = next(obj for obj in built if obj["kind"] == "Job")
        results.append((the_job, kube.create_all_if_absent([the_job])[0]))
    stored_job = next((r for obj, r in results if obj["kind"] == "Job"), (existing_job, False) if existing_job else None)
    foreign = _foreign(results, uid)
    if _failed(results) and not foreign:
        _refused(kube, p, results, stored_job)
    if foreign:
        if stored_job is not None and not isinstance(stored_job, ApiError) and controlled_by(stored_job[0], uid):
            _suspend(kube, p, stored_job[0], foreign)
        return foreign
    _render_again(kube, p, results)
    stored, created = stored_job
    if created:
        p.logger.info("created Job %s", stored["metadata"]["name"])
    else:
        converge_suspend(kube, p, stored)
    return None


def _render_again(kube, p, results) -> None:
    """A ConfigMap of ours rendered from an older spec: the spec changed while
    no trainer ran on it (the API server refuses it otherwise: api.spec_changes),
    so the next trainer reads the new one."""
    for built, result in results:
        if built["kind"] != "ConfigMap" or isinstance(result, ApiError) or result[1]:
            continue
        stored, wanted = result[0], built["metadata"].get("annotations", {}).get(SPEC_GENERATION_ANNOTATION)
        had = (stored["metadata"].get("annotations") or {}).get(SPEC_GENERATION_ANNOTATION)
        if wanted and had != wanted and stored.get("data") != built["data"]:
            kube.merge_patch("ConfigMap", p.key[0], built["metadata"]["name"],
                             {"metadata": {"annotations": {SPEC_GENERATION_ANNOTATION: wanted}}, "data": built["data"]})
            p.logger.info("trainer config rendered again for generation %s", wanted)


def _refused(kube, p, results, stored_job) -> None:
    """Raise what the API server answered: the error to retry, or (refused
    for good) PermanentError, the Job suspended if it exists."""
    errors = [r for _, r in results if isinstance(r, ApiError)]
    forbidden = [e for e in errors if e.rbac_denied]
    if forbidden:  # the operator's RBAC, not the spec: retried (reconcile says so in status)
        raise forbidden[0]
    final = [e for e in errors if not (e.retryable or e.status in (404, 409))]
    if not final:
        raise errors[0]
    if stored_job is not None and not isinstance(stored_job, ApiError):
        _suspend(kube, p, stored_job[0], final[0].message)
    raise PermanentError(R.INVALID_SPEC, f"the API server refused a child object: {final[0].message}")


def _failed(results) -> bool:
    return any(isinstance(r, ApiError) for _, r in results)


def _foreign(results, uid: str | None) -> str | None:
    """The first object a create found already there that is not this job's."""
    for _, result in results:
        if isinstance(result, tuple) and not result[1] and not controlled_by(result[0], uid):
            return conflict_message(result[0], "this FineTuneJob")
    return None


def _suspend(kube, p, job: dict, why: str) -> None:
    name = job["metadata"]["name"]
    if not (job.get("spec") or {}).get("suspend"):
        p.logger.info("suspending Job %s: %s", name, why)
        kube.merge_patch("Job", p.key[0], name, {"spec": {"suspend": True}})
