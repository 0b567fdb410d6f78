"""`kubetune generate` and `kubetune eval`: try a tuned model from the CLI.

Both find the models (from a finished FineTuneJob's `status.output` and
`spec.model`, read from the cluster, or from URIs given) and run the trainer's
`kubetune_trainer.model_tools` as a child process with the trainer's python
(`KUBETUNE_TRAINER_PYTHON`, as `kubetune run` does): the operator package
has no torch. s3:// works with AWS_* in the environment (and, for a job, the
endpoint its spec names).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .local_run import TRAINER_PYTHON_ENV, build_local_config


class ModelsNotFound(Exception):
    pass


def job_models(name: str, namespace: str) -> tuple[str, dict, dict]:
    """(base model URI, status.output, spec) of a FineTuneJob in the current kubeconfig's cluster."""
    from ..k8s import Kube

    body = Kube.from_environment(qps=5, burst=10, threads=1).get("FineTuneJob", namespace, name)
    if body is None:
        raise ModelsNotFound(f"FineTuneJob {namespace}/{name} not found")
    output = (body.get("status") or {}).get("output") or {}
    if not (output.get("adapterUri") or output.get("mergedUri")):
        phase = (body.get("status") or {}).get("phase") or "new"
        raise ModelsNotFound(f"FineTuneJob {namespace}/{name} has no output yet (phase {phase}); wait for Succeeded")
    return body["spec"]["model"]["uri"], output, body["spec"]


def _tuned_args(adapter: str | None, merged: str | None) -> list[str]:
    return ["--adapter", adapter] if adapter else ["--merged", merged]


def _run(argv: list[str], env: dict | None = None) -> int:
    python = os.environ.get(TRAINER_PYTHON_ENV, sys.executable)
    try:
        return subprocess.run([python, "-m", "kubetune_trainer.model_tools", *argv], env={**os.environ, **(env or {})}).returncode
    except OSError as exc:
        print(f"kubetune: cannot start the trainer's python ({python}): {exc.strerror}", file=sys.stderr)
        return 1


def _endpoint_env(spec: dict | None) -> dict:
    endpoint = (((spec or {}).get("credentials") or {}).get("s3") or {}).get("endpoint")
    return {"AWS_ENDPOINT_URL": endpoint} if endpoint and not os.environ.get("AWS_ENDPOINT_URL") else {}


def generate(args) -> int:
    base, adapter, merged, spec = args.base, args.adapter, args.merged, None
    if args.job:
        try:
            base, output, spec = job_models(args.job, args.namespace)
        except ModelsNotFound as exc:
            print(f"kubetune generate: {exc}", file=sys.stderr)
            return 1
        adapter, merged = output.get("adapterUri"), None if output.get("adapterUri") else output.get("mergedUri")
    if not base or not (adapter or merged):
        print("kubetune generate: give --job NAME, or --base URI with --adapter URI or --merged URI", file=sys.stderr)
        return 2
    argv = ["generate", "--base", base, *_tuned_args(adapter, merged), "--max-new-tokens", str(args.max_new_tokens),
            "--temperature", str(args.temperature)] + [a for p in args.prompt for a in ("--prompt", p)]
    return _run(argv + (["--chat"] if args.chat else []), _endpoint_env(spec))


def evaluate(args) -> int:
    """Render the manifest's config as `kubetune run` does, then evaluate the given output with it."""
    from ..api import load_manifests

    parsed = load_manifests(args.file)
    for p in parsed:
        for problem in p.problems:
            print(problem.render(p.source), file=sys.stderr)
    if any(p.problems for p in parsed):
        return 2
    if len(parsed) != 1:
        print(f"kubetune eval: {args.file} holds {len(parsed)} FineTuneJobs; give exactly one", file=sys.stderr)
        return 2
    job = parsed[0].job
    if not (args.adapter or args.merged):
        print("kubetune eval: give --adapter URI or --merged URI (a job's status.output)", file=sys.stderr)
        return 2
    out = Path(args.out or f".kubetune/{job.metadata.name}/eval")
    config = build_local_config(job, out.parent)
    path = Path(tempfile.mkdtemp(prefix="kubetune-eval-")) / "config.json"
    path.write_text(json.dumps(config))
    return _run(["eval", "--config", str(path), *_tuned_args(args.adapter, args.merged), "--out", str(out)])


def add_parsers(sub) -> None:
    g = sub.add_parser("generate", help="prompt the base and the tuned model side by side",
                       description="Answer prompts with the base and the tuned model, side by side: a finished FineTuneJob's "
                       "output (--job, read from the cluster), or models by URI (file://, s3://). Runs on CPU.")
    g.add_argument("--job", help="a finished FineTuneJob: its spec.model and status.output")
    g.add_argument("--namespace", "-n", default="default")
    g.add_argument("--base", help="base model URI (without --job)")
    tuned = g.add_mutually_exclusive_group()
    tuned.add_argument("--adapter", help="tuned LoRA adapter URI (without --job)")
    tuned.add_argument("--merged", help="tuned merged model URI (without --job)")
    g.add_argument("--prompt", "-p", action="append", required=True, help="repeatable")
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    g.add_argument("--chat", action="store_true", help="send each prompt as a user turn of the chat template")
    g.set_defaults(func=generate)
    e = sub.add_parser("eval", help="run a manifest's evaluation section against an existing output",
                       description="Evaluate an existing output (adapter or merged model) with the manifest's spec.evaluation: "
                       "the base and the tuned model on the same test rows, baselines, the report. Runs on CPU.")
    e.add_argument("file", metavar="FILE", help="the FineTuneJob manifest whose evaluation section (and data) to use")
    tuned = e.add_mutually_exclusive_group()
    tuned.add_argument("--adapter", help="the tuned adapter URI (status.output.adapterUri)")
    tuned.add_argument("--merged", help="the tuned merged model URI (status.output.mergedUri)")
    e.add_argument("--out", help="report directory (default .kubetune/<name>/eval)")
    e.set_defaults(func=evaluate)
