"""Checks the operator makes before creating anything for a FineTuneJob, beyond
what the CRD schema already enforces: rules that depend on operator settings."""

from __future__ import annotations

from .api.job import FineTuneJob
from .api.policy import violations
from .settings import Settings


def disallowed_images(job: FineTuneJob, cfg: Settings) -> list[str]:
    """Messages for each image the job asks for that the operator may not run.
    The operator's own defaults are always allowed."""
    problems = []
    if job.spec.image and job.spec.image != cfg.trainer_image and not cfg.image_allowed(job.spec.image):
        problems.append(f"spec.image {job.spec.image!r} is not allowed")
    serving_image = job.spec.serving.image
    if serving_image and serving_image != cfg.vllm_image and not cfg.image_allowed(serving_image):
        problems.append(f"spec.serving.image {serving_image!r} is not allowed")
    if problems:
        allowed = ", ".join(cfg.allowed_image_prefixes) or "(none)"
        problems = [f"{p}: images must start with one of {allowed}; ask your cluster admin to allow it or leave the field unset for the default" for p in problems]
    return problems


def policy_violations(job: FineTuneJob, cfg: Settings) -> list[str]:
    """Messages for each field that breaks the admin policy (the API server's
    admission policy refuses the same; this holds where it is not installed)."""
    return [problem.render() for problem in violations(job.spec, cfg.policy, job.metadata.namespace or "default")]
