"""`kubetune operator`: run the Kopf operator with kubetune's handlers.

Equivalent to `kopf run -m kubetune_operator.handlers --all-namespaces
--peering=kubetune --liveness=http://0.0.0.0:8081/healthz` with the namespaces,
peering name and liveness port taken from the KUBETUNE_* settings; extra
arguments go to `kopf run` as they are (e.g. --standalone, --verbose).
"""

from __future__ import annotations

import os
import sys

from .settings import Settings, load_settings


def kopf_argv(cfg: Settings, extra: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "kopf", "run", "-m", "kubetune_operator.handlers"]
    if not any(a.startswith(("--namespace", "-n", "--all-namespaces", "-A")) for a in extra):
        if cfg.watched_namespaces:
            argv += [f"--namespace={ns}" for ns in cfg.watched_namespaces]
        else:
            argv.append("--all-namespaces")
    if not any(a.startswith(("--peering", "--standalone")) for a in extra):
        argv.append(f"--peering={cfg.peering_name}")
    if not any(a.startswith("--liveness") for a in extra) and cfg.liveness_port:
        argv.append(f"--liveness=http://0.0.0.0:{cfg.liveness_port}/healthz")
    return argv + list(extra)


def run_operator(extra: list[str]) -> int:
    argv = kopf_argv(load_settings(), extra)
    os.execv(argv[0], argv)  # replaces this process: signals go straight to Kopf
    return 0  # not reached
