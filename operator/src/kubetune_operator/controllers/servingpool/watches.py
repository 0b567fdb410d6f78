"""What a serving pool's controller watches besides FineTuneJobs: its Deployment
and its pods, both labelled with the pool (and with the serving labels every
kubetune vLLM object carries, so the API server filters them)."""

from __future__ import annotations

from ...builders.meta import LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY, SERVING_APP
from ...builders.serving_plan import LABEL_POOL
from ...runtime import Watch
from ...runtime.watches import slim

SERVING_LABELS = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_NAME: SERVING_APP}


def keep_rollout(body) -> dict:
    """A slim Deployment plus its generation: whether a rollout completed is
    status.observedGeneration against metadata.generation."""
    kept = slim(body)
    kept["metadata"]["generation"] = body["metadata"].get("generation")
    return kept


POOL_DEPLOYMENTS = Watch("pool-deployments", "apps", "v1", "deployments", SERVING_LABELS, owner_label=LABEL_POOL, keep=keep_rollout)
POOL_PODS = Watch("pool-pods", "", "v1", "pods", SERVING_LABELS, owner_label=LABEL_POOL)
