"""The report as Markdown (report.md): the same content, charts as files beside it."""

from __future__ import annotations

from .content import Report, Table


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(t: Table) -> list[str]:
    headers = t.headers if any(t.headers) else ["", ""]
    return [f"## {t.title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows], ""]


def render(report: Report, chart_files: list[str]) -> str:
    lines = [f"# {report.title}", "", f"**{report.verdict}**", ""]
    if report.fit:
        lines += [f"Fit: **{report.fit[0]}**. {report.fit[1]}", ""]
    if report.metrics:
        lines += _table(report.metrics)
    lines += [*(f"{n}\n" for n in report.notes)]
    if chart_files:
        lines += ["## Curves", "", *[f"![{c.title}]({f})" for c, f in zip(report.charts, chart_files)], ""]
    if report.samples:
        lines += _table(report.samples)
    for section in report.sections:
        lines += _table(section)
    lines += ["## Resolved config (secrets redacted)", "", "```yaml", report.config.rstrip(), "```", ""]
    return "\n".join(lines)
