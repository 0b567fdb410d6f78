"""`kubetune merge-adapters`: combine LoRA adapters trained on one base into one.

The arguments are validated here as the contract's `MergeSpec` (field-named
errors, before anything runs); the merge itself is trainer code, run as a child
process with the trainer's Python (`KUBETUNE_TRAINER_PYTHON`, as `kubetune run`
does): this package has no torch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError

from kubetune_contract.config import first_error
from kubetune_contract.merging import MergeSpec

from .local_run import TRAINER_PYTHON_ENV


def add_parser(sub) -> None:
    m = sub.add_parser("merge-adapters", help="merge LoRA adapters trained on one base into one (PEFT's weighted merge)",
                       description="Merge LoRA adapters trained on one base model into one adapter, with a model card listing "
                       "its sources and weights. URIs: s3://, pvc:// or local paths (s3:// uses AWS_* from the environment).")
    m.add_argument("adapters", nargs="+", metavar="ADAPTER", help="adapter directories or URIs (two or more)")
    m.add_argument("--base", required=True, help="the base model they were trained on (hf://, s3://, pvc://, path)")
    m.add_argument("--output", "-o", required=True, help="where the merged adapter goes")
    m.add_argument("--method", default="linear", help="linear (default; one rank), cat, ties or dare_linear")
    m.add_argument("--weights", help="comma-separated weights, one per adapter (default: 1 each)")
    m.add_argument("--density", type=float, help="ties, dare_linear: fraction of each update kept (default 0.5)")
    m.add_argument("--name", default="merged", help="the merged adapter's name in its model card")
    m.set_defaults(func=run_merge)


def _uri(value: str) -> str:
    return value if "://" in value else f"file://{Path(value).resolve()}"


def build_spec(args: argparse.Namespace) -> dict:
    weights = [1.0] * len(args.adapters)
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise ValueError(f"--weights: {args.weights!r} is not a comma-separated list of numbers") from None
        if len(weights) != len(args.adapters):
            raise ValueError(f"--weights: {len(weights)} weights for {len(args.adapters)} adapters; give one per adapter")
    return {
        "base": _uri(args.base), "output": _uri(args.output), "method": args.method, "density": args.density, "name": args.name,
        "adapters": [{"uri": _uri(a), "weight": w} for a, w in zip(args.adapters, weights)],
        "s3": {"endpoint": os.environ.get("AWS_ENDPOINT_URL"), "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")},
    }


def run_merge(args: argparse.Namespace) -> int:
    try:
        spec = MergeSpec.model_validate(build_spec(args), by_alias=True, by_name=False)
    except ValueError as exc:
        message = first_error(exc) if isinstance(exc, ValidationError) else str(exc)
        print(f"kubetune merge-adapters: {message}", file=sys.stderr)
        return 2
    python = os.environ.get(TRAINER_PYTHON_ENV, sys.executable)
    with tempfile.TemporaryDirectory(prefix="kubetune-merge-spec-") as tmp:
        path = Path(tmp) / "merge.json"
        path.write_text(json.dumps(spec.model_dump(by_alias=True, mode="json")))
        return subprocess.run([python, "-m", "kubetune_trainer.merge_adapters", "--spec", str(path)]).returncode
