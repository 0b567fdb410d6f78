"""`kubetune`: validate manifests and datasets, render what the operator would
create, run a job locally, and regenerate the CRD."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT_HELP = """\
kubetune fine-tunes LLMs from one Kubernetes resource, FineTuneJob.

Typical flow:
  kubetune validate job.yaml                 check a manifest before applying it
  kubetune validate --dataset train.jsonl    pre-flight a dataset before claiming GPUs
  kubetune render job.yaml                   print the Kubernetes objects the operator creates
  kubetune run job.yaml                      train locally with the same config, no cluster
"""


def _cmd_validate(args: argparse.Namespace) -> int:
    from .api import load_manifests

    failed = False
    for dataset in args.dataset or []:
        from .dataset_check import check_dataset, format_report

        report = check_dataset(dataset, declared_format=args.format, max_errors=args.max_errors)
        print(format_report(report))
        failed |= not report.ok
    for path in args.files:
        for parsed in load_manifests(path):
            if parsed.problems:
                failed = True
                for problem in parsed.problems:
                    print(problem.render(parsed.source), file=sys.stderr)
            else:
                print(f"{parsed.source}: FineTuneJob {parsed.job.metadata.name} is valid")
    if not args.files and not args.dataset:
        print("nothing to validate: give manifest files and/or --dataset FILE", file=sys.stderr)
        return 2
    return 1 if failed else 0


def _cmd_crd(args: argparse.Namespace) -> int:
    from .api.crd import build_crd
    from .api.yamlio import dump_yaml

    text = dump_yaml(build_crd())
    if not args.write:
        sys.stdout.write(text)
        return 0
    root = Path(args.root)
    targets = [root / "crds" / "finetunejob.yaml"]
    if (root / "charts" / "kubetune").is_dir():
        targets.append(root / "charts" / "kubetune" / "crds" / "finetunejob.yaml")
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target}")
    return 0


def _cmd_docs(args: argparse.Namespace) -> int:
    from .api.reference import spec_reference

    sys.stdout.write(spec_reference())
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from .render.objects import render_manifest_objects

    return render_manifest_objects(args.file, namespace=args.namespace, out=sys.stdout)


def _cmd_run(args: argparse.Namespace) -> int:
    from .local_run import run_local

    return run_local(args.file, args.workdir, {})


def _cmd_operator(args: argparse.Namespace) -> int:
    from .main import run_operator

    return run_operator(args.kopf_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubetune", description=ROOT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    v = sub.add_parser(
        "validate",
        help="check FineTuneJob manifests and/or datasets",
        description="Check manifests against the FineTuneJob API and pre-flight datasets. "
        "Prints every problem as `file:line: path.to.field: what is wrong; what is valid`; exits 1 if any.",
    )
    v.add_argument("files", nargs="*", metavar="FILE", help="FineTuneJob manifest(s), YAML (multi-document allowed)")
    v.add_argument("--dataset", action="append", metavar="URI", help="dataset to pre-flight: a local path or s3:// URI (JSONL, JSON, CSV, Parquet); repeatable")
    v.add_argument("--format", default="auto", choices=["auto", "instruction", "chat", "completion", "text"], help="dataset row format (default: detect)")
    v.add_argument("--max-errors", type=int, default=50, metavar="N", help="bad rows to list before summarising (default 50)")
    v.set_defaults(func=_cmd_validate)

    r = sub.add_parser("render", help="print the Kubernetes objects the operator would create", description="Render the ConfigMap, Job (and Service) the operator creates for a manifest, as YAML.")
    r.add_argument("file", metavar="FILE")
    r.add_argument("--namespace", "-n", default="default", help="namespace to render into (default: default)")
    r.set_defaults(func=_cmd_render)

    run = sub.add_parser("run", help="train locally from a manifest, no cluster", description="Render the trainer config exactly as the operator would and run the trainer as a local process.")
    run.add_argument("file", metavar="FILE")
    run.add_argument("--workdir", default=".kubetune", help="scratch directory (default: ./.kubetune)")
    run.set_defaults(func=_cmd_run)

    c = sub.add_parser("crd", help="print (or --write) the FineTuneJob CRD generated from the API model")
    c.add_argument("--write", action="store_true", help="write crds/finetunejob.yaml (and the chart's copy) under --root")
    c.add_argument("--root", default=".", help="repository root (default: .)")
    c.set_defaults(func=_cmd_crd)

    o = sub.add_parser("operator", help="run the operator (kopf run with kubetune's handlers and KUBETUNE_* settings)", description="Run the Kopf operator; extra arguments go to `kopf run`.")
    o.add_argument("kopf_args", nargs=argparse.REMAINDER, metavar="KOPF_ARGS")
    o.set_defaults(func=_cmd_operator)

    d = sub.add_parser("docs", help="print the spec reference (Markdown) generated from the API model")
    d.set_defaults(func=_cmd_docs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
