"""`kubetune render FILE`: print the Kubernetes objects the operator creates
for a manifest, built by the very builders the operator uses."""

from __future__ import annotations

import sys
from typing import TextIO

from ..admission import disallowed_images
from ..api.manifest import load_manifests
from ..api.yamlio import dump_yaml_all
from ..builders import build_serving_objects, build_training_objects
from ..builders.serving import plan_objects
from ..builders.serving_plan import pool_plan
from ..settings import Settings, load_settings

HEADER = """\
# Rendered by `kubetune render` for {source} (FineTuneJob {name}, namespace {namespace}).
# The operator adds ownerReferences to the FineTuneJob when it creates these
# (a serving pool's Deployment gets one per member and serves every member's adapter).
"""


def render_objects(job, cfg: Settings) -> list[dict]:
    """Training objects, then (with serving.enabled) the serving ones created after
    success: the job's own, or its serving pool's as if it were the pool's only member."""
    objects = build_training_objects(job, cfg)
    if job.spec.serving.enabled and job.spec.serving.pool:
        objects += plan_objects(pool_plan(job.spec.serving.pool, [job], cfg), cfg)
    elif job.spec.serving.enabled:
        objects += build_serving_objects(job, cfg)
    return objects


def render_manifest_objects(path: str, *, namespace: str = "default", out: TextIO = sys.stdout, cfg: Settings | None = None) -> int:
    """Print every job's objects as YAML; problems go to stderr and exit 1."""
    try:
        cfg = cfg or load_settings()
    except ValueError as exc:
        print(f"operator settings: {exc}", file=sys.stderr)
        return 2
    failed = False
    written = 0
    for parsed in load_manifests(path):
        if parsed.problems:
            failed = True
            for problem in parsed.problems:
                print(problem.render(parsed.source), file=sys.stderr)
            continue
        job = parsed.job
        job.metadata.namespace = job.metadata.namespace or namespace
        refused = disallowed_images(job, cfg)
        if refused:
            for message in refused:
                print(f"{parsed.source}: {message}", file=sys.stderr)
            failed = True
            continue
        if written:
            out.write("---\n")
        written += 1
        out.write(HEADER.format(source=parsed.source, name=job.metadata.name, namespace=job.metadata.namespace))
        out.write(dump_yaml_all(render_objects(job, cfg)))
    return 1 if failed else 0
