"""What the FineTuneJob and serving-pool controllers watch, declared once (a
watch two controllers share is one Kopf handler, one cache): FineTuneJobs, a
job's training Job and pods, its own vLLM Deployment and pods, and a serving
pool's Deployment and pods. The children carry kubetune's labels, so the API
server filters them."""

from __future__ import annotations

from ..api import GROUP, PLURAL, VERSION
from ..builders.meta import LABEL_JOB, LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY, SERVING_APP, TRAINER_APP
from ..builders.serving_plan import LABEL_POOL
from ..runtime import Watch
from ..runtime.watches import slim, whole

TRAINER_LABELS = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_NAME: TRAINER_APP}
SERVING_LABELS = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_NAME: SERVING_APP}

FINETUNEJOBS = Watch("finetunejobs", GROUP, VERSION, PLURAL, keep=whole)
TRAINING_JOBS = Watch("training-jobs", "batch", "v1", "jobs", TRAINER_LABELS, owner_label=LABEL_JOB)
TRAINER_PODS = Watch("trainer-pods", "", "v1", "pods", TRAINER_LABELS, owner_label=LABEL_JOB)
SERVING_DEPLOYMENTS = Watch("serving-deployments", "apps", "v1", "deployments", SERVING_LABELS, owner_label=LABEL_JOB)
SERVING_PODS = Watch("serving-pods", "", "v1", "pods", SERVING_LABELS, owner_label=LABEL_JOB)


def keep_rollout(body) -> dict:
    """A slim Deployment plus its generation: whether a rollout completed is
    status.observedGeneration against metadata.generation."""
    kept = slim(body)
    kept["metadata"]["generation"] = body["metadata"].get("generation")
    return kept


POOL_DEPLOYMENTS = Watch("pool-deployments", "apps", "v1", "deployments", SERVING_LABELS, owner_label=LABEL_POOL, keep=keep_rollout)
POOL_PODS = Watch("pool-pods", "", "v1", "pods", SERVING_LABELS, owner_label=LABEL_POOL)
