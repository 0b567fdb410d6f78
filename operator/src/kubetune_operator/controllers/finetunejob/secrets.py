"""Whether the Secrets a job references exist and may be used (their metadata
only, never their data).

The admin policy's `secretLabel` (default `kubetune.io/usable=true`) names the
Secrets a job may reference: without it, any Secret of the namespace (a
database password, another tool's token) could be put in a trainer's or vLLM's
environment and sent wherever the spec points. The API server cannot check
another object's labels at admission, so the operator does, before it creates
anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from ...builders import locations
from ...builders.pod import s3_secret_name
from ...k8s import ApiError, Kube
from ...settings import Settings

# A Secret seen recently is not asked about again: 500 jobs sharing one Secret
# cost one GET, not 500. A missing or unusable one is always asked about afresh.
SEEN_FOR_SECONDS = 30


@dataclass
class SecretVerdict:
    missing: list[str] = field(default_factory=list)  # Secret names not found
    unusable: list[str] = field(default_factory=list)  # "field: why", per referenced Secret the policy refuses

    def unusable_message(self, label: str) -> str:
        return ("; ".join(self.unusable) + f": the admin policy (KubetunePolicy secretLabel) lets jobs use only Secrets labelled {label}; "
                "ask your cluster admin to label the Secret (no training Job is created until then)")


class SecretChecker:
    def __init__(self, kube: Kube, cfg: Settings, clock: Callable[[], float]):
        self.kube = kube
        self.cfg = cfg
        self.clock = clock
        self._seen: dict[tuple[str, str], float] = {}
        # False once the API server answers 403: the chart grants get on Secrets
        # (metadata only is asked for); without it, a missing Secret is learned
        # from the trainer pod, and a policy that needs labels refuses every job.
        self.may_read = True

    def referenced(self, job) -> list[tuple[str, str]]:
        """(spec field, Secret name) of every Secret the job's pods would read."""
        creds = job.spec.credentials
        out = []
        if locations.uses_s3(job, self.cfg):
            out.append(("spec.credentials.s3.secretName" if creds.s3 else "the default S3 Secret", s3_secret_name(job, self.cfg)))
        out += [(f"spec.credentials.{name}.name", ref.name) for name, ref in (("hfToken", creds.hf_token), ("tracking", creds.tracking))
                if ref is not None]
        return out

    def check(self, job, logger: logging.Logger | logging.LoggerAdapter) -> SecretVerdict:
        """Referenced Secrets that do not exist, and those the policy does not let
        the job use. Without permission to ask: none missing (the kubelet's
        CreateContainerConfigError on the trainer pod says it, status.observed), and
        every one unusable when the policy asks for a label."""
        label = self.cfg.policy.secret_label
        key, _, value = label.partition("=")
        verdict = SecretVerdict()
        namespace = job.metadata.namespace
        for where, name in self.referenced(job):
            if self.clock() - self._seen.get((namespace, name), float("-inf")) < SEEN_FOR_SECONDS:
                continue
            if not self.may_read:
                if label:
                    verdict.unusable.append(f"{where}: Secret {name} cannot be checked (the operator may not get Secrets' metadata)")
                continue
            try:
                meta = self.kube.metadata("Secret", namespace, name)
            except ApiError as exc:
                if exc.status != 403:
                    raise
                self.may_read = False
                logger.info("not allowed to look up Secrets (%s); a missing Secret will be reported "
                            "from the trainer pod's CreateContainerConfigError instead", exc.status)
                return self.check(job, logger)
            if meta is None:
                verdict.missing.append(name)
            elif label and (meta.get("labels") or {}).get(key) != value:
                verdict.unusable.append(f"{where}: Secret {name} is not labelled {label}")
            else:
                self._seen[(namespace, name)] = self.clock()
        verdict.missing = list(dict.fromkeys(verdict.missing))
        return verdict
