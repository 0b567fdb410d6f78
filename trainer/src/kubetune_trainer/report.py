"""What a run leaves behind: the termination message, metrics.json and the report.

The termination message is the container's last word to the operator
(≤ 4 KiB JSON at /dev/termination-log, overridable by KUBETUNE_TERMINATION_LOG);
metrics.json and report.html/.md are uploaded next to the adapter.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
from pathlib import Path

log = logging.getLogger("kubetune.report")

TERMINATION_LOG_ENV = "KUBETUNE_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
MAX_BYTES = 4096


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


def termination_message(reason: str, message: str, *, step: int | None = None, total_steps: int | None = None,
                        metrics: dict | None = None, checkpoint: dict | None = None, output: dict | None = None) -> str:
    """The JSON the operator reads; trimmed (message first) to stay under 4 KiB."""
    body = {
        "reason": reason, "message": message, "step": step, "totalSteps": total_steps,
        "metrics": _clean({k: (metrics or {}).get(k) for k in ("trainLoss", "evalLoss", "tokensPerSecond")}),
        "checkpoint": checkpoint or {"uri": None, "step": None},
        "output": output or {"adapterUri": None, "mergedUri": None, "reportUri": None},
    }
    text = json.dumps(body, separators=(",", ":"))
    while len(text.encode()) > MAX_BYTES and len(body["message"]) > 20:
        body["message"] = body["message"][: len(body["message"]) // 2] + "..."
        text = json.dumps(body, separators=(",", ":"))
    return text


def write_termination_message(text: str) -> None:
    path = os.environ.get(TERMINATION_LOG_ENV, DEFAULT_TERMINATION_LOG)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError:
        pass  # not in a pod (or not writable): the log line is enough


# --------------------------------------------------------------------------- report


def _png(history: list[dict], key: str, title: str) -> str | None:
    points = [(h["step"], h[key]) for h in history if key in h and h[key] is not None and math.isfinite(h[key])]
    if not points:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o" if len(points) < 30 else None, linewidth=1.5)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _rows(d: dict) -> list[tuple[str, str]]:
    out = []
    for k, v in d.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        out.append((k, str(v)))
    return out


def write_report(out_dir: Path, summary: dict, history: list[dict]) -> list[Path]:
    """metrics.json, report.md and report.html (with PNG curves when matplotlib is there)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps({**summary, "history": history}, indent=1, default=str))
    sections = {k: v for k, v in summary.items() if isinstance(v, dict)}
    flat = {k: v for k, v in summary.items() if not isinstance(v, dict)}

    md = [f"# Fine-tuning report: {summary.get('job', '')}", ""]
    for title, d in [("Run", flat), *sections.items()]:
        md += [f"## {title}", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in _rows(d)], ""]
    (out_dir / "report.md").write_text("\n".join(md))

    charts = [(_png(history, k, t), t) for k, t in (("trainLoss", "training loss"), ("evalLoss", "eval loss"), ("learningRate", "learning rate"))]
    parts = [f"<!doctype html><meta charset=utf-8><title>kubetune report</title><h1>Fine-tuning report: {html.escape(str(summary.get('job', '')))}</h1>"]
    for title, d in [("Run", flat), *sections.items()]:
        parts.append(f"<h2>{html.escape(title)}</h2><table>" + "".join(f"<tr><th align=left>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _rows(d)) + "</table>")
    for png, title in charts:
        if png:
            parts.append(f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{png}'>")
    (out_dir / "report.html").write_text("\n".join(parts))
    return [out_dir / "metrics.json", out_dir / "report.md", out_dir / "report.html"]
