"""Operator settings, read once from `KUBETUNE_*` environment variables (the
Helm chart sets them from values).

Everything a builder needs to know beyond the FineTuneJob itself lives here, so
builders stay pure functions of (job, settings).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping

from .api.policy import PolicySpec, default_policy, parse_policy

ENV_PREFIX = "KUBETUNE_"


@dataclass(frozen=True)
class Settings:
    # Training pods.
    trainer_image: str = "ghcr.io/kubetune/trainer:0.1.0"
    # A FineTuneJob may only ask for images under these prefixes: creating a
    # FineTuneJob must not let a user run pods they could not create themselves.
    allowed_image_prefixes: tuple[str, ...] = ("ghcr.io/kubetune/",)
    image_pull_policy: str = "IfNotPresent"
    # Replaces `kubetune-train --config ...` for single-process jobs, for trainer
    # images with another entrypoint.
    trainer_command: tuple[str, ...] | None = None
    # Where checkpoints and outputs go when the spec gives no URI:
    # <bucket uri>/<namespace>/<name>/{checkpoints,output}.
    default_bucket_uri: str = "s3://kubetune"
    default_s3_secret: str = "kubetune-s3"
    default_s3_endpoint: str | None = None
    default_s3_region: str | None = None
    # Serving.
    vllm_image: str = "vllm/vllm-openai:v0.32.0"
    # An image that pulls the artifact from S3 before vLLM starts (init step);
    # the trainer image has boto3 and a non-root user, so it is the default.
    fetch_image: str | None = None
    # Operator process.
    watched_namespaces: tuple[str, ...] = ()  # empty: all namespaces
    client_qps: float = 50.0
    client_burst: int = 100
    metrics_port: int = 8080
    liveness_port: int = 8081
    metrics_scrape_interval: float = 10.0  # seconds between trainer /metrics polls
    metrics_scrape_timeout: float = 2.0  # the whole exchange with one trainer's /metrics, connect to last byte
    metrics_scrape_workers: int = 4  # threads of their own (never the work queue's)
    metrics_scrape_per_namespace: int = 1  # scrapes in flight at once per namespace
    peering_name: str = "kubetune"
    peering_priority: int | None = None  # None: random per process (see handlers)
    max_workers: int = 32  # work queue threads (reconciles, status syncs, progress scrapes)
    resync_interval: float = 300.0  # seconds between resyncs of the watch cache (runtime.resync); 0: none
    extra_trainer_env: Mapping[str, str] = field(default_factory=dict)
    # The admin policy (KUBETUNE_POLICY, the chart's KubetunePolicy spec);
    # None: the chart's defaults for this bucket and endpoint.
    admin_policy: PolicySpec | None = None

    @property
    def effective_fetch_image(self) -> str:
        return self.fetch_image or self.trainer_image

    @property
    def policy(self) -> PolicySpec:
        return self.admin_policy or default_policy(self.default_bucket_uri, self.default_s3_endpoint)

    def image_allowed(self, image: str) -> bool:
        return any(image_matches(image, allowed) for allowed in self.allowed_image_prefixes)


def image_matches(image: str, allowed: str) -> bool:
    """Whether `image` lies under `allowed`, matched by whole name parts: a
    registry host (`registry.corp`) admits its repositories (`registry.corp/x`)
    but not another host that starts alike (`registry.corp.evil.io/x`); a
    repository (`ghcr.io/kubetune/trainer`) admits its tags and digests but not
    `ghcr.io/kubetune/trainer-evil`. An entry ending in `/` is a path prefix."""
    if allowed.endswith("/"):
        return image.startswith(allowed)
    if image == allowed:
        return True
    if not image.startswith(allowed):
        return False
    after = image[len(allowed)]
    # A host alone is followed by its path; a repository by its tag or digest, or a deeper path.
    return after == "/" if "/" not in allowed else after in "/:@"


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _pairs(value: str) -> dict[str, str]:
    out = {}
    for item in _split(value):
        key, sep, val = item.partition("=")
        if not sep:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = val.strip()
    return out


def _json_list(value: str) -> tuple[str, ...]:
    parsed = json.loads(value)
    if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
        raise ValueError("expected a JSON list of strings")
    return tuple(parsed)


# env suffix -> (field, parser)
_ENV: dict[str, tuple[str, object]] = {
    "TRAINER_IMAGE": ("trainer_image", str),
    "ALLOWED_IMAGE_PREFIXES": ("allowed_image_prefixes", _split),
    "IMAGE_PULL_POLICY": ("image_pull_policy", str),
    "TRAINER_COMMAND": ("trainer_command", lambda v: _json_list(v) if v else None),
    "DEFAULT_BUCKET_URI": ("default_bucket_uri", lambda v: v.rstrip("/")),
    "DEFAULT_S3_SECRET": ("default_s3_secret", str),
    "DEFAULT_S3_ENDPOINT": ("default_s3_endpoint", lambda v: v or None),
    "DEFAULT_S3_REGION": ("default_s3_region", lambda v: v or None),
    "VLLM_IMAGE": ("vllm_image", str),
    "FETCH_IMAGE": ("fetch_image", lambda v: v or None),
    "WATCH_NAMESPACES": ("watched_namespaces", _split),
    "CLIENT_QPS": ("client_qps", float),
    "CLIENT_BURST": ("client_burst", int),
    "METRICS_PORT": ("metrics_port", int),
    "LIVENESS_PORT": ("liveness_port", int),
    "METRICS_SCRAPE_INTERVAL": ("metrics_scrape_interval", float),
    "METRICS_SCRAPE_TIMEOUT": ("metrics_scrape_timeout", float),
    "METRICS_SCRAPE_WORKERS": ("metrics_scrape_workers", int),
    "METRICS_SCRAPE_PER_NAMESPACE": ("metrics_scrape_per_namespace", int),
    "PEERING_NAME": ("peering_name", str),
    "PEERING_PRIORITY": ("peering_priority", lambda v: int(v) if v else None),
    "MAX_WORKERS": ("max_workers", int),
    "RESYNC_INTERVAL": ("resync_interval", float),
    "EXTRA_TRAINER_ENV": ("extra_trainer_env", _pairs),
    "POLICY": ("admin_policy", lambda v: parse_policy(v) if v.strip() else None),
}

ENV_VARS = tuple(ENV_PREFIX + suffix for suffix in _ENV)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `KUBETUNE_*` variables; unset ones keep their defaults.
    A malformed value raises ValueError naming the variable."""
    environ = os.environ if environ is None else environ
    values = {}
    for suffix, (name, parse) in _ENV.items():
        raw = environ.get(ENV_PREFIX + suffix)
        if raw is None:
            continue
        try:
            values[name] = parse(raw)  # type: ignore[operator]
        except ValueError as exc:  # pydantic's ValidationError is one
            raise ValueError(f"{ENV_PREFIX}{suffix}={raw!r}: {exc}") from None
    return Settings(**values)
