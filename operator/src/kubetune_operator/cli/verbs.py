"""`kubetune`: validate manifests and datasets, render what the operator would
create, run a job locally, and regenerate the CRD."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import get_args

from kubetune_contract.sections import DatasetFormat

ROOT_HELP = """\
kubetune fine-tunes LLMs from one Kubernetes resource, FineTuneJob.

Typical flow:
  kubetune validate job.yaml                 check a manifest before applying it
  kubetune validate --dataset train.jsonl    pre-flight a dataset before claiming GPUs
  kubetune validate job.yaml --dataset f     the dataset as that job reads it (format, columns)
  kubetune render job.yaml                   print the Kubernetes objects the operator creates
  kubetune run job.yaml                      train locally with the same config, no cluster
  kubetune generate --job NAME -p "..."      the base and the tuned model's answers side by side
  kubetune eval job.yaml --adapter URI       the job's evaluation section against an existing output
  kubetune merge-adapters A B --base M -o O  merge LoRA adapters trained on one base into one
  kubetune sweep sweep.yaml                  a FineTuneSweep locally, trial after trial
"""


def _cmd_validate(args: argparse.Namespace) -> int:
    from ..api import load_manifests
    from ..api.advice import warnings
    from ..api.manifest import parse_document
    from .dataset_check import check_dataset, labelled

    if not args.files and not args.dataset and not args.sources:
        print("nothing to validate: give manifest files and/or --dataset FILE", file=sys.stderr)
        return 2
    policy = _policy_from(args.policy) if args.policy else None
    failed, jobs = False, []
    for path in args.files:
        for parsed in load_manifests(path, parse_document):
            if policy is not None and not parsed.problems:
                parsed.problems = _policy_problems(parsed, policy, args.namespace)
            if parsed.problems:
                failed = True
                for problem in parsed.problems:
                    print(problem.render(parsed.source), file=sys.stderr)
            elif parsed.sweep is not None:
                print(f"{parsed.source}: FineTuneSweep {parsed.sweep.metadata.name} is valid")
            else:
                jobs.append(parsed.job)
                print(f"{parsed.source}: FineTuneJob {parsed.job.metadata.name} is valid")
                for warning in warnings(parsed.job.spec):
                    print(f"{parsed.source}: warning: {warning}", file=sys.stderr)
    # With one job given, its data is checked as that job reads it (format,
    # columns, and what its evaluation needs of the answers and the split).
    from .evaluation_check import evaluation_row_check, evaluation_split_problems

    job = jobs[0] if len(jobs) == 1 else None
    dataset = job.spec.dataset if job else None
    if args.sources and not (dataset and dataset.sources):
        print("--sources needs one FineTuneJob manifest whose spec.dataset has sources", file=sys.stderr)
        return 2
    uris = [*(args.dataset or []), *([s.uri for s in dataset.sources] if args.sources else [])]
    for uri in dict.fromkeys(uris):
        # A file the job lists in dataset.sources is read as that source: its format and columns, named by its index.
        index = next((i for i, s in enumerate(dataset.sources or []) if s.uri == uri), None) if dataset else None
        spec = dataset.sources[index] if index is not None else dataset
        declared = args.format if args.format != "auto" or spec is None else spec.format
        report = check_dataset(uri, declared_format=declared, max_errors=args.max_errors, columns=spec.columns if spec else None,
                               row_check=evaluation_row_check(job.spec, spec.columns if spec else None) if job else None,
                               objective=job.spec.objective if job else None)
        report.label = f"dataset.sources[{index}]" if index is not None else None
        if job:
            report.errors += evaluation_split_problems(job.spec, report)
        print(labelled(report))
        failed |= not report.ok
    return 1 if failed else 0


def _policy_from(path: str):
    from ..api.policy import parse_policy

    try:
        return parse_policy(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--policy {path}: {exc}") from None


def _policy_problems(parsed, policy, namespace: str | None) -> list:
    """The admin policy's refusals of a job (or a sweep's template), as the API server and the operator make them."""
    from ..api.policy import violations

    obj = parsed.sweep or parsed.job
    spec, prefix = (obj.spec.template, "spec.template") if parsed.sweep is not None else (obj.spec, "spec")
    return violations(spec, policy, namespace or obj.metadata.namespace or "default", prefix)


def _cmd_crd(args: argparse.Namespace) -> int:
    from ..api.crd import build_crds
    from ..api.yamlio import dump_yaml, dump_yaml_all

    crds = build_crds()
    if not args.write:
        sys.stdout.write(dump_yaml_all(crds))
        return 0
    root = Path(args.root)
    dirs = [root / "crds"] + ([root / "charts" / "kubetune" / "crds"] if (root / "charts" / "kubetune").is_dir() else [])
    for crd in crds:
        for target in (d / f"{crd['spec']['names']['singular']}.yaml" for d in dirs):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(dump_yaml(crd))
            print(f"wrote {target}")
    if (root / "charts" / "kubetune").is_dir():
        from ..api.admission_policy import RULES_FILE, admission_spec

        target = root / "charts" / "kubetune" / RULES_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(dump_yaml(admission_spec()))
        print(f"wrote {target}")
    return 0


def _cmd_docs(args: argparse.Namespace) -> int:
    from ..api.reference import spec_reference, write_into

    if not args.write:
        sys.stdout.write(spec_reference())
        return 0
    readme = Path(args.root) / "README.md"
    write_into(readme)
    print(f"wrote the spec reference into {readme}")
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from .render import render_manifest_objects

    return render_manifest_objects(args.file, namespace=args.namespace, out=sys.stdout)


def _cmd_run(args: argparse.Namespace) -> int:
    from .local_run import run_local

    return run_local(args.file, args.workdir, {})


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .local_sweep import run_sweep

    return run_sweep(args.file, args.workdir)


def _cmd_sweep_report(args: argparse.Namespace) -> int:
    from ..api.sweep import FineTuneSweepSpec
    from ..k8s import ApiError, Kube
    from ..sweeps.report import rows_of_status, write_report

    try:
        body = Kube.from_environment(5, 10, 1).get("FineTuneSweep", args.namespace, args.name)
    except ApiError as exc:
        print(f"kubetune sweep-report: {exc}", file=sys.stderr)
        return 1
    if body is None:
        print(f"kubetune sweep-report: FineTuneSweep {args.namespace}/{args.name} not found", file=sys.stderr)
        return 1
    spec = FineTuneSweepSpec.model_validate(body["spec"], by_alias=True, by_name=False)
    path = write_report(Path(args.out), args.name, spec, rows_of_status(body.get("status") or {}))
    print(f"file://{path.resolve()}")
    return 0


def _cmd_operator(args: argparse.Namespace) -> int:
    from ..main import run_operator

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
        "Prints every problem as `file:line: path.to.field: what is wrong; what is valid`; exits 1 if any. "
        "Warns (exit 0) where a valid spec may not work on every cluster (e.g. a multi-node job without a queue).",
    )
    v.add_argument("files", nargs="*", metavar="FILE", help="FineTuneJob manifest(s), YAML (multi-document allowed)")
    v.add_argument("--dataset", action="append", metavar="URI", help="dataset to pre-flight: a local path or s3:// URI (JSONL, JSON, CSV, Parquet); repeatable")
    v.add_argument("--sources", action="store_true",
                   help="with one FineTuneJob manifest: pre-flight every file of its dataset.sources, each with its own format and columns")
    v.add_argument("--format", default="auto", choices=list(get_args(DatasetFormat)),
                   help="dataset row format (default: the one manifest's dataset.format, else detect); with one manifest, its dataset.columns apply")
    v.add_argument("--max-errors", type=int, default=50, metavar="N", help="bad rows to list before summarising (default 50)")
    v.add_argument("--policy", metavar="FILE",
                   help="also check against the cluster's admin policy: a KubetunePolicy (kubectl get kubetunepolicy NAME -o yaml) or its spec")
    v.add_argument("--namespace", "-n", metavar="NS", help="the namespace the policy's storage roots are read for (default: the manifest's, else default)")
    v.set_defaults(func=_cmd_validate)

    r = sub.add_parser("render", help="print the Kubernetes objects the operator would create", description="Render the ConfigMap, Job (and Service) the operator creates for a manifest, as YAML.")
    r.add_argument("file", metavar="FILE")
    r.add_argument("--namespace", "-n", default="default", help="namespace to render into (default: default)")
    r.set_defaults(func=_cmd_render)

    run = sub.add_parser("run", help="train locally from a manifest, no cluster", description="Render the trainer config exactly as the operator would and run the trainer as a local process.")
    run.add_argument("file", metavar="FILE")
    run.add_argument("--workdir", default=".kubetune", help="scratch directory (default: ./.kubetune)")
    run.set_defaults(func=_cmd_run)

    sw = sub.add_parser("sweep", help="run a FineTuneSweep locally, trial after trial, no cluster",
                        description="Run a FineTuneSweep's trials one after another with `kubetune run`, pruning as the operator would; print the trials table and write the sweep report.")
    sw.add_argument("file", metavar="FILE")
    sw.add_argument("--workdir", default=".kubetune", help="scratch directory (default: ./.kubetune)")
    sw.set_defaults(func=_cmd_sweep)

    sr = sub.add_parser("sweep-report", help="write the report of a FineTuneSweep in the cluster",
                        description="Read a FineTuneSweep's status ($KUBECONFIG) and write sweep-report.html/.md: the trials table and the objective against each parameter.")
    sr.add_argument("name", metavar="NAME")
    sr.add_argument("--namespace", "-n", default="default")
    sr.add_argument("--out", default=".", help="directory to write into (default: .)")
    sr.set_defaults(func=_cmd_sweep_report)

    c = sub.add_parser("crd", help="print (or --write) the CRDs generated from the API models")
    c.add_argument("--write", action="store_true", help="write crds/<kind>.yaml (and the chart's copies, and the admission policy's rules) under --root")
    c.add_argument("--root", default=".", help="repository root (default: .)")
    c.set_defaults(func=_cmd_crd)

    o = sub.add_parser("operator", help="run the operator (kopf run with kubetune's handlers and KUBETUNE_* settings)", description="Run the Kopf operator; extra arguments go to `kopf run`.")
    o.add_argument("kopf_args", nargs=argparse.REMAINDER, metavar="KOPF_ARGS")
    o.set_defaults(func=_cmd_operator)

    from .merge_adapters import add_parser as add_merge_adapters
    from .model import add_parsers

    add_parsers(sub)
    add_merge_adapters(sub)

    d = sub.add_parser("docs", help="print (or --write into README.md) the spec reference generated from the API model")
    d.add_argument("--write", action="store_true", help="replace the reference section of README.md under --root")
    d.add_argument("--root", default=".", help="repository root (default: .)")
    d.set_defaults(func=_cmd_docs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)

