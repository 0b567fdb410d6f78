"""Kopf's entry module: `kopf run -m kubetune_operator.handlers --all-namespaces
--peering=kubetune` (or `kubetune operator`).

Wiring only. Each controller (`controllers/`) declares what it watches; the
runtime (`runtime/`) registers the Kopf handlers for those watches, keeps what
they show in a lock-guarded cache, and runs the controllers' passes from one
work queue. See docs/architecture.md.
"""

from __future__ import annotations

import logging

import kopf

from . import metrics
from .controllers import CONTROLLERS
from .k8s import Kube
from .runtime import Runtime, kopf_setup, resync
from .settings import load_settings

WATCHES = tuple(dict.fromkeys(watch for controller in CONTROLLERS for watch in controller.watches))
for _watch in WATCHES:
    kopf_setup.register(_watch)


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_) -> None:
    cfg = load_settings()
    kopf_setup.configure(settings, cfg, WATCHES)
    kube = Kube.from_environment(cfg.client_qps, cfg.client_burst, cfg.max_workers)
    memo.runtime = Runtime.create(cfg, kube, CONTROLLERS)
    memo.runtime.queue.start()
    if cfg.resync_interval > 0:
        memo.resync = resync.start(memo.runtime, WATCHES, cfg.watched_namespaces, cfg.resync_interval)
    if cfg.metrics_port:
        metrics.serve(cfg.metrics_port)
    logger.info("kubetune operator: peering %s priority %s, metrics on :%s", settings.peering.name, settings.peering.priority, cfg.metrics_port)


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_) -> None:
    if getattr(memo, "resync", None) is not None:
        memo.resync.set()
    runtime = getattr(memo, "runtime", None)
    if runtime is not None:
        runtime.queue.stop()
