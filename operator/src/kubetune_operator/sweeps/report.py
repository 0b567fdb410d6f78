"""The sweep section of the report: the trials table, and the objective against
each parameter (one scatter plot each, inline SVG: nothing to install, opens
anywhere). Written by `kubetune sweep` beside the trials, and by `kubetune
sweep-report` from a cluster sweep's status."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

from ..api.sweep import FineTuneSweepSpec
from . import study as st
from ..api.search_space import shown

WIDTH, HEIGHT, PAD = 360, 220, 40
COLOURS = {"complete": "#2b6cb0", "pruned": "#dd6b20", "failed": "#c53030", "running": "#718096"}


@dataclass(frozen=True)
class Row:
    number: int
    parameters: dict[str, str]
    state: str  # complete | pruned | failed | running
    objective: float | None


def rows_of_trials(trials: list[st.Trial]) -> list[Row]:
    return [Row(t.number, shown(t.values), t.state, t.objective) for t in trials]


def rows_of_status(status: dict) -> list[Row]:
    state = {"Succeeded": "complete", "Serving": "complete", "Failed": "failed", "Invalid": "failed"}
    return [Row(t["number"], t.get("parameters") or {}, "pruned" if t.get("pruned") else state.get(t.get("phase") or "", "running"),
                t.get("objective")) for t in status.get("trials") or []]


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def scatter(spec: FineTuneSweepSpec, path: str, rows: list[Row]) -> str:
    """Objective (y) against one parameter (x): an SVG, or '' when nothing to plot."""
    points = [(r, _number(r.parameters.get(path, ""))) for r in rows if r.objective is not None]
    points = [(r, x) for r, x in points if x is not None]
    if not points:
        return ""
    log = next(p.scale == "log" for p in spec.parameters if p.path == path) and all(x > 0 for _, x in points)
    xs = [math.log10(x) if log else x for _, x in points]
    ys = [r.objective for r, _ in points]

    def scale(v: float, low: float, high: float, size: int) -> float:
        return PAD + (v - low) / ((high - low) or 1.0) * (size - 2 * PAD)

    marks = [f"<circle cx='{scale(x, min(xs), max(xs), WIDTH):.1f}' cy='{HEIGHT - scale(y, min(ys), max(ys), HEIGHT):.1f}' r='5' "
             f"fill='{COLOURS[r.state]}'><title>trial {r.number}: {html.escape(r.parameters.get(path, ''))} -> {y:.4g} ({r.state})</title></circle>"
             for (r, _), x, y in zip(points, xs, ys)]
    label = f"{path}{' (log)' if log else ''}"
    axes = (f"<line x1='{PAD}' y1='{HEIGHT - PAD}' x2='{WIDTH - PAD}' y2='{HEIGHT - PAD}' stroke='#999'/>"
            f"<line x1='{PAD}' y1='{PAD}' x2='{PAD}' y2='{HEIGHT - PAD}' stroke='#999'/>"
            f"<text x='{WIDTH / 2}' y='{HEIGHT - 8}' text-anchor='middle' font-size='12'>{html.escape(label)}</text>"
            f"<text x='12' y='{HEIGHT / 2}' font-size='12' transform='rotate(-90 12 {HEIGHT / 2})' text-anchor='middle'>"
            f"{html.escape(spec.optimize.metric)}</text>")
    return f"<svg role='img' aria-label='{html.escape(label)}' width='{WIDTH}' height='{HEIGHT}' xmlns='http://www.w3.org/2000/svg'>{axes}{''.join(marks)}</svg>"


def render(name: str, spec: FineTuneSweepSpec, rows: list[Row]) -> tuple[str, str]:
    """(HTML, Markdown) of the sweep section."""
    paths = [p.path for p in spec.parameters]
    best = min((r for r in rows if r.state == "complete" and r.objective is not None),
               key=lambda r: r.objective if st.direction(spec) == "minimize" else -r.objective, default=None)
    verdict = (f"Best: trial {best.number}, {spec.optimize.metric} {best.objective:.4g} "
               f"({', '.join(f'{p} {best.parameters.get(p)}' for p in paths)})") if best else "No trial completed."
    head = ["trial", *paths, "state", spec.optimize.metric]
    body = [[str(r.number), *(r.parameters.get(p, "") for p in paths), r.state, "" if r.objective is None else f"{r.objective:.4g}"] for r in rows]
    md = [f"## Sweep {name}", "", verdict, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(row) + " |" for row in body]
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body) + "</table>"
    plots = "".join(scatter(spec, p, rows) for p in paths)
    page = (f"<!doctype html><meta charset=utf-8><title>sweep {html.escape(name)}</title><h2>Sweep {html.escape(name)}</h2>"
            f"<p>{html.escape(verdict)}</p>{table}<h3>{html.escape(spec.optimize.metric)} against each parameter</h3>{plots}")
    return page, "\n".join(md) + "\n"


def write_report(directory: Path, name: str, spec: FineTuneSweepSpec, trials_or_rows) -> Path:
    rows = trials_or_rows if trials_or_rows and isinstance(trials_or_rows[0], Row) else rows_of_trials(trials_or_rows)
    page, md = render(name, spec, rows)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sweep-report.md").write_text(md)
    path = directory / "sweep-report.html"
    path.write_text(page)
    return path
