"""The report as one self-contained HTML page (charts inlined as PNG data URIs)."""

from __future__ import annotations

import base64
from html import escape

from .content import Report, Table

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72em; margin: 2em auto; padding: 0 1em; color: #1b1f24; }
.verdict { font-size: 1.25em; padding: .8em 1em; border-left: 5px solid #2a7; background: #f2faf5; }
.verdict.warn { border-color: #d80; background: #fff8ec; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #d0d7de; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.ok { color: #1a7f37; font-weight: bold; } td.bad { color: #cf222e; font-weight: bold; }
.charts img { margin: .5em 1em .5em 0; border: 1px solid #eee; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: .85em; }
"""


def _cell(text: str) -> str:
    css = {"✓": " class=ok", "✗": " class=bad"}.get(text, "")
    return f"<td{css}>{escape(text)}</td>"


def _table(t: Table, heading: str = "h2") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in t.headers) if any(t.headers) else ""
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in t.rows)
    return f"<{heading}>{escape(t.title)}</{heading}><table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def render(report: Report) -> str:
    warn = report.fit is not None and report.fit[0] != "Good"
    parts = ["<!doctype html><html lang=en><meta charset=utf-8>", f"<title>{escape(report.title)}</title>",
             f"<style>{STYLE}</style>", f"<h1>{escape(report.title)}</h1>",
             f"<p class='verdict{' warn' if warn else ''}' id=verdict>{escape(report.verdict)}</p>"]
    if report.fit:
        parts.append(f"<p id=fit><b>Fit: {escape(report.fit[0])}.</b> {escape(report.fit[1])}</p>")
    if report.metrics:
        parts.append(_table(report.metrics))
    parts += [f"<p class=note>{escape(n)}</p>" for n in report.notes]
    if report.charts:
        images = "".join(f"<img alt='{escape(c.title)}' title='{escape(c.title)}' src='data:image/png;base64,"
                         f"{base64.b64encode(c.png).decode()}'>" for c in report.charts)
        parts.append(f"<h2>Curves</h2><div class=charts>{images}</div>")
    if report.samples:
        parts.append(_table(report.samples))
    parts += [_table(s) for s in report.sections]
    parts.append(f"<h2>Resolved config (secrets redacted)</h2><pre id=config>{escape(report.config)}</pre></html>")
    return "\n".join(parts)
