"""The FineTuneJob controller: FineTuneJob -> ConfigMap + Job (+ Service) ->
status from the children and the trainer's /metrics -> vLLM serving.

- `controller`: what it watches, what each event marks, one pass per key;
- `reconcile`: a new spec: checks, the training objects, suspend;
- `sync`: status from the children, and the serving objects once trained;
- `scrape`: progress from rank 0's /metrics while the job runs;
- `secrets`: whether the Secrets a job references exist.
The decisions live in pure modules (`..builders`, `...status`).
"""

from .controller import FineTuneJobController

__all__ = ["FineTuneJobController"]
