"""A spec this process has not reconciled: check it, create what is missing,
converge suspend. Status follows one window later (`sync`), with whatever the
new Job's first events showed by then: under a burst, every worker goes on
creating Jobs first."""

from __future__ import annotations

from ...admission import disallowed_images, policy_violations
from ...api.status import Reason as R
from ...builders import build_training_objects
from ...k8s import ApiError
from ...runtime import PermanentError
from . import adapter_source
from ..watches import FINETUNEJOBS
from .observe import pool_refusal
from .suspend import converge_suspend
from .sync import trained

SECRET_RETRY_SECONDS = 10


def reconcile(ctl, p) -> float | None:
    """Returns when to try again (a Secret still missing), None when done.
    Raises PermanentError when retrying cannot help until the spec changes."""
    if p.job is None:
        raise PermanentError(R.INVALID_SPEC, "; ".join(problem.render() for problem in p.problems))
    refused = disallowed_images(p.job, ctl.cfg)
    if refused:
        raise PermanentError(R.IMAGE_NOT_ALLOWED, "; ".join(refused))
    refused = policy_violations(p.job, ctl.cfg)
    if refused:  # before anything is created, as the API server's admission policy would have
        raise PermanentError(R.POLICY_DENIED, "; ".join(refused))
    secrets = ctl.secrets.check(p.job, p.logger)
    if secrets.missing:
        message = f"Secret {', '.join(secrets.missing)} not found in namespace {p.key[0]}; create it (no training Job is created until then)"
        ctl.refuse(p, "Pending", R.SECRET_MISSING, message)
        return SECRET_RETRY_SECONDS
    if secrets.unusable:
        ctl.refuse(p, "Pending", R.SECRET_NOT_USABLE, secrets.unusable_message(ctl.cfg.policy.secret_label))
        return SECRET_RETRY_SECONDS
    training_job, _, _ = ctl.children(p.key)
    if trained(ctl.status.current(p.key, p.body)):
        if training_job is not None:
            converge_suspend(ctl.kube, p, training_job)
    elif training_job is not None:
        _complete_training_objects(ctl, p, training_job)
    else:
        conflict = pool_refusal(ctl, p)
        if conflict:  # refused before anything is created: the pool could never serve it
            raise PermanentError(R.INVALID_SPEC, conflict)
        source = _adapter_source(ctl, p)
        if source.waiting:
            ctl.refuse(p, "Pending", R.ADAPTER_SOURCE_PENDING, source.waiting)
            return adapter_source.RETRY_SECONDS
        _create_training_objects(ctl, p, source.uri)
    ctl.accepted[p.key] = p.version
    ctl.reconciled[p.key] = p.version
    ctl.mark(p.key)
    return None


def _adapter_source(ctl, p) -> adapter_source.Resolved:
    name = p.job.spec.model.adapter_from_job
    if name is None:
        return adapter_source.Resolved()
    return adapter_source.resolve(p.key[0], name, ctl.rt.cache.one(FINETUNEJOBS.kind, (p.key[0], name)))


def _complete_training_objects(ctl, p, training_job: dict) -> None:
    """A Job this process did not create (it restarted, or the spec changed):
    its ConfigMap and Service are created too where missing, since a process
    killed between creating the Job and them left pods waiting for a volume
    that would never come. Costs a 409 per object, once per job and process."""
    source = _adapter_source(ctl, p)
    if source.waiting:  # made while its source job had an adapter; nothing to rebuild the config from now
        converge_suspend(ctl.kube, p, training_job)
        return
    _create_training_objects(ctl, p, source.uri, existing_job=training_job)


def _create_training_objects(ctl, p, adapter_uri: str | None = None, existing_job: dict | None = None) -> None:
    """Create the ConfigMap, Job (and Service) side by side, all but the Job
    when `existing_job` is there. Their order does not matter: the Job's pods
    wait for the ConfigMap as a kubelet waits for any volume. When the API
    server refuses one of the others for good (a quota, say) but the Job
    exists, the Job is suspended, so that no pod waits for a ConfigMap that will
    never come (the operator may not delete; the Job goes with its
    FineTuneJob), and the refusal is permanent. A retryable error leaves
    everything as it is: the retry finds it (409)."""
    kube = ctl.kube
    job = adapter_source.with_source_adapter(p.job, adapter_uri) if adapter_uri else p.job
    objects = [obj for obj in build_training_objects(job, ctl.cfg) if existing_job is None or obj["kind"] != "Job"]
    results = dict(zip((obj["kind"] for obj in objects), kube.create_all_if_absent(objects)))
    job = results.get("Job", (existing_job, False))
    errors = [r for r in results.values() if isinstance(r, ApiError)]
    if not errors:
        stored, created = job
        if created:
            p.logger.info("created Job %s", stored["metadata"]["name"])
        else:
            converge_suspend(kube, p, stored)
        return
    final = [e for e in errors if not (e.retryable or e.status in (404, 409))]
    if not final:
        raise errors[0]
    if not isinstance(job, ApiError):
        name = job[0]["metadata"]["name"]
        p.logger.info("suspending Job %s: %s", name, final[0].message)
        kube.merge_patch("Job", p.key[0], name, {"spec": {"suspend": True}})
    raise PermanentError(R.INVALID_SPEC, f"the API server refused a child object: {final[0].message}")
