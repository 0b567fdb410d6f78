"""Where a job's checkpoints and outputs live once operator defaults are applied."""

from __future__ import annotations

from ..api.job import FineTuneJob
from ..settings import Settings


def _namespace(job: FineTuneJob) -> str:
    return job.metadata.namespace or "default"


def checkpoint_uri(job: FineTuneJob, cfg: Settings) -> str:
    if job.spec.checkpoint.uri:
        return job.spec.checkpoint.uri.rstrip("/")
    return f"{cfg.default_bucket_uri}/{_namespace(job)}/{job.metadata.name}/checkpoints"


def output_uri(job: FineTuneJob, cfg: Settings) -> str:
    if job.spec.output.uri:
        return job.spec.output.uri.rstrip("/")
    return f"{cfg.default_bucket_uri}/{_namespace(job)}/{job.metadata.name}/output"


def uses_s3(job: FineTuneJob, cfg: Settings) -> bool:
    """Whether any location the trainer touches is on S3 (then it needs the S3 Secret)."""
    spec = job.spec
    uris = [spec.model.uri, spec.dataset.train_uri, spec.dataset.eval_uri, checkpoint_uri(job, cfg), output_uri(job, cfg)]
    return any(uri and uri.startswith("s3://") for uri in uris)


def s3_endpoint(job: FineTuneJob, cfg: Settings) -> str | None:
    s3 = job.spec.credentials.s3
    return (s3.endpoint if s3 else None) or cfg.default_s3_endpoint


def s3_region(job: FineTuneJob, cfg: Settings) -> str | None:
    s3 = job.spec.credentials.s3
    return (s3.region if s3 else None) or cfg.default_s3_region
