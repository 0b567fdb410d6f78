"""Whether the Secrets a job references exist (existence only, never their data)."""

from __future__ import annotations

import logging
from typing import Callable

from ...builders import locations
from ...builders.pod import s3_secret_name
from ...k8s import ApiError, Kube
from ...settings import Settings

# A Secret seen recently is not asked about again: 500 jobs sharing one Secret
# cost one GET, not 500. A missing one is always asked about afresh.
SEEN_FOR_SECONDS = 30


class SecretChecker:
    def __init__(self, kube: Kube, cfg: Settings, clock: Callable[[], float]):
        self.kube = kube
        self.cfg = cfg
        self.clock = clock
        self._seen: dict[tuple[str, str], float] = {}
        # False once the API server answers 403: the chart grants no Secret access,
        # so a missing Secret is then learned from the trainer pod instead.
        self.may_read = True

    def referenced(self, job) -> list[str]:
        names = [s3_secret_name(job, self.cfg)] if locations.uses_s3(job, self.cfg) else []
        creds = job.spec.credentials
        names += [ref.name for ref in (creds.hf_token, creds.tracking) if ref is not None]
        return list(dict.fromkeys(names))

    def missing(self, job, logger: logging.Logger | logging.LoggerAdapter) -> list[str]:
        """Names of referenced Secrets that do not exist. Without permission to
        ask, none: the kubelet's CreateContainerConfigError on the trainer pod
        says it (status.observed)."""
        if not self.may_read:
            return []
        namespace = job.metadata.namespace
        missing = []
        for name in self.referenced(job):
            if self.clock() - self._seen.get((namespace, name), float("-inf")) < SEEN_FOR_SECONDS:
                continue
            try:
                exists = self.kube.exists("Secret", namespace, name)
            except ApiError as exc:
                if exc.status != 403:
                    raise
                self.may_read = False
                logger.info("not allowed to look up Secrets (%s); a missing Secret will be reported "
                            "from the trainer pod's CreateContainerConfigError instead", exc.status)
                return []
            if exists:
                self._seen[(namespace, name)] = self.clock()
            else:
                missing.append(name)
        return missing
