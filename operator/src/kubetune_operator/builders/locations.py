"""Where a job's checkpoints and outputs live once operator defaults are applied."""

from __future__ import annotations

from ..api.job import FineTuneJob
from ..settings import Settings
from .meta import LABEL_SWEEP


# Where a pvc://claim/... URI's claim is mounted, in trainer and serving pods alike.
PVC_ROOT = "/mnt/pvc"


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


def shared_uri(job: FineTuneJob, cfg: Settings) -> str | None:
    """A sweep trial's prefix for work every trial of its sweep shares (the base
    model's evaluation): beside the trials' own, None for a job outside a sweep."""
    sweep = job.metadata.labels.get(LABEL_SWEEP)
    if not sweep:
        return None
    if job.spec.checkpoint.uri:  # the template's location, with the trial's name appended (builders.trial)
        return job.spec.checkpoint.uri.rstrip("/").removesuffix(f"/{job.metadata.name}") + "/shared"
    return f"{cfg.default_bucket_uri}/{_namespace(job)}/{sweep}/shared"


def trainer_uris(job: FineTuneJob, cfg: Settings) -> list[str]:
    """Every location the trainer reads or writes: the model and the adapter it
    continues, the data, the test set, checkpoints (and the one it resumes
    from), outputs, a sweep's shared prefix."""
    spec = job.spec
    uris = [spec.model.uri, spec.model.adapter_from if spec.model.adapter_from_job is None else None,
            *(s.uri for s in spec.dataset.training_sources), spec.dataset.eval_uri, spec.evaluation.test_uri,
            checkpoint_uri(job, cfg), spec.checkpoint.resume_from, output_uri(job, cfg), shared_uri(job, cfg)]
    return [uri for uri in uris if uri]


def uses_s3(job: FineTuneJob, cfg: Settings) -> bool:
    """Whether any location the trainer touches is on S3 (then it needs the S3 Secret)."""
    return any(uri.startswith("s3://") for uri in trainer_uris(job, cfg))


def pvc_claims(uris) -> list[str]:
    """The PersistentVolumeClaims `pvc://claim/...` URIs name, each once, in order."""
    return list(dict.fromkeys(uri.removeprefix("pvc://").split("/", 1)[0] for uri in uris if uri and uri.startswith("pvc://")))


def s3_endpoint(job: FineTuneJob, cfg: Settings) -> str | None:
    s3 = job.spec.credentials.s3
    return (s3.endpoint if s3 else None) or cfg.default_s3_endpoint


def s3_region(job: FineTuneJob, cfg: Settings) -> str | None:
    s3 = job.spec.credentials.s3
    return (s3.region if s3 else None) or cfg.default_s3_region
