"""What a run leaves behind: the termination message, metrics.json and the report.

The termination message is the container's last word to the operator
(≤ 4 KiB JSON at /dev/termination-log, overridable by KUBETUNE_TERMINATION_LOG);
its `output` holds `<name>Uri` for each output the run produced, and nothing
for those it did not. metrics.json and report.html/.md are uploaded under
`output.uri`, next to the exported formats.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from kubetune_contract import curves
from kubetune_contract.termination import FINAL_METRICS

from .metrics import PREFERENCE_LOGS

log = logging.getLogger("kubetune.report")

TERMINATION_LOG_ENV = "KUBETUNE_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
MAX_BYTES = 4096
REPORT_PAGE = "report.html"
PREDICTIONS = "predictions.jsonl"  # every test row: prompt, reference, base and tuned answers


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def termination_message(reason: str, message: str, *, step: int | None = None, total_steps: int | None = None,
                        metrics: dict | None = None, checkpoint: dict | None = None, output: dict | None = None,
                        evaluation: dict | None = None, export_failures: dict | None = None, tracking: dict | None = None,
                        dataset: dict | None = None, eval_curve: list[tuple[int, float]] | None = None) -> str:
    """The JSON the operator reads; trimmed to stay under 4 KiB: the message
    first, then the validation-loss curve to its fewest points, then the
    evaluation's detail (`_evaluation_trims`), never the outputs; each export
    failure reason is capped at 600 characters."""
    body = {
        "reason": reason, "message": message, "step": step, "totalSteps": total_steps,
        "metrics": _clean({k: (metrics or {}).get(k) for k in FINAL_METRICS}),
        "checkpoint": checkpoint or {"uri": None, "step": None},
        "output": output or {},
    }
    if evaluation:
        body["evaluation"] = _clean(evaluation)
    if export_failures:
        body["exportFailures"] = {name: str(why)[:600] for name, why in export_failures.items()}
    if tracking:
        body["tracking"] = tracking
    if dataset:
        body["dataset"] = dataset
    if eval_curve:
        body[curves.KEY] = curves.thin(eval_curve)
    text = json.dumps(body, separators=(",", ":"))
    while len(text.encode()) > MAX_BYTES and len(body["message"]) > 20:
        body["message"] = body["message"][: len(body["message"]) // 2] + "..."
        text = json.dumps(body, separators=(",", ":"))
    if len(text.encode()) > MAX_BYTES and curves.KEY in body:
        body[curves.KEY] = curves.thin(body[curves.KEY], curves.MIN_POINTS)
        text = json.dumps(body, separators=(",", ":"))
    for trim in _evaluation_trims():
        if len(text.encode()) <= MAX_BYTES or "evaluation" not in body:
            break
        trim(body["evaluation"])
        text = json.dumps(body, separators=(",", ":"))
    if len(text.encode()) > MAX_BYTES and "dataset" in body:  # the report lists the sources too
        body.pop("dataset")
        text = json.dumps(body, separators=(",", ":"))
    return text


def _evaluation_trims():
    """What goes first when the evaluation does not fit: the verdict (the report has
    it), the fit message's detail, the baselines, then every metric but the primary."""
    def verdict(e):
        e.pop("verdict", None)

    def fit_message(e):
        if e.get("fit", {}).get("message"):
            e["fit"]["message"] = e["fit"]["message"][:300]

    def baselines(e):
        e.pop("baselines", None)

    def metrics(e):
        e["metrics"] = {k: v for k, v in (e.get("metrics") or {}).items() if k == e.get("primary")}

    return (verdict, fit_message, baselines, metrics)


def write_termination_message(text: str) -> None:
    path = os.environ.get(TERMINATION_LOG_ENV, DEFAULT_TERMINATION_LOG)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError:
        pass  # not in a pod (or not writable): the log line is enough


# --------------------------------------------------------------------------- report


def history(log_history: list[dict], throughput: list[tuple[int, float]] | None = None) -> list[dict]:
    """The Trainer's log history as the report's curves (camelCase, logged values
    only), with the tokens/s measured at each logged step."""
    out = []
    for e in log_history:
        row = {"step": e.get("step")}
        for k, name in (("loss", "trainLoss"), ("eval_loss", "evalLoss"), ("learning_rate", "learningRate"), ("grad_norm", "gradNorm"),
                        *((key, out) for key, out, _ in PREFERENCE_LOGS)):
            if e.get(k) is not None:
                row[name] = float(e[k])
        if len(row) > 1:
            out.append(row)
    out += [{"step": step, "tokensPerSecond": tps} for step, tps in throughput or []]
    return sorted(out, key=lambda r: r["step"] or 0)


def write_report(out_dir: Path, summary: dict, history: list[dict], *, predictions: list[dict] | None = None,
                 config: dict | None = None) -> list[Path]:
    """metrics.json, predictions.jsonl, report.md (+ its chart files) and report.html."""
    import yaml

    from .reporting import content, html, markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "metrics.json"]
    written[0].write_text(json.dumps(_clean({**summary, "history": history}), indent=1, default=str))
    if predictions:
        written.append(out_dir / PREDICTIONS)
        written[-1].write_text("".join(json.dumps(_clean(p)) + "\n" for p in predictions))
    report = content.build(summary, history, predictions or [], yaml.safe_dump(config or {}, sort_keys=False))
    chart_files = []
    for i, chart in enumerate(report.charts):
        name = f"report-charts/{i + 1}-{'-'.join(chart.title.split()[:3])}.png"
        (out_dir / name).parent.mkdir(exist_ok=True)
        (out_dir / name).write_bytes(chart.png)
        chart_files.append(name)
        written.append(out_dir / name)
    (out_dir / "report.md").write_text(markdown.render(report, chart_files))
    (out_dir / REPORT_PAGE).write_text(html.render(report))
    return written + [out_dir / "report.md", out_dir / REPORT_PAGE]
