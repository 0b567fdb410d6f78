"""Every `kubetune` verb: `verbs` (the parser and each verb), `local_run`
(`kubetune run`), `local_sweep` (`kubetune sweep`), `model` (`kubetune generate`
and `kubetune eval`), `merge_adapters`, `dataset_check` and `evaluation_check`
(`kubetune validate --dataset`). `kubetune` is `main`; `python -m
kubetune_operator.cli` runs the same."""

from .verbs import main

__all__ = ["main"]
