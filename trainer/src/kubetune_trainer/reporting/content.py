"""What the report says, independent of its layout: a verdict first, then the
metrics table (base, tuned, change, ✓/✗, the baselines beside), the curves,
five test rows side by side, the run, data and training in words, and the
resolved config (secrets redacted). Every label is words: a key without an
entry in WORDS is split from camelCase, and a missing value reads "—".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from kubetune_contract.evaluation_metrics import METRICS, format_value, metric

from .charts import Chart, charts

SAMPLE_ROWS = 5
MISSING = "—"
WORDS = {
    "job": "job", "method": "method", "model": "base model", "world_size": "processes", "strategy": "parallelism",
    "precision": "precision", "format": "row format", "rows": "rows read", "droppedBlank": "rows dropped (blank field)",
    "duplicatesDropped": "duplicates dropped", "sha256": "content hash (sha256)", "trainRows": "training rows",
    "evalRows": "validation rows", "testRows": "test rows", "testRowsSeenInTraining": "test prompts also in training",
    "maxSeqLength": "max sequence length (tokens)", "truncated": "rows truncated", "trainTokens": "training tokens",
    "longestTokens": "longest row (tokens)", "steps": "steps", "totalSteps": "steps planned", "seconds": "training time (s)",
    "resumedFrom": "resumed from step", "trainLoss": "final training loss", "evalLoss": "last validation loss",
    "learningRate": "final learning rate", "gradNorm": "final gradient norm", "tokensPerSecond": "tokens per second",
    "samplesPerSecond": "sequences per second", "etaSeconds": "time left at the end (s)", "paddingFraction": "padding fraction",
    "tokensTotal": "tokens trained on", "earlyStoppedAt": "stopped early at step", "best": "output made from (lowest validation loss)",
    "uri": "location", "adapterUri": "adapter", "mergedUri": "merged model", "reportUri": "report",
    "streamed": "streamed (read lazily, not loaded)", "split": "held out by", "dedupe": "duplicates",
    "totalStepsFrom": "steps planned from", "countingPassSeconds": "counting pass (s)",
    "packedSequences": "packed sequences per pass",
    "resumedFromCheckpoint": "continued another run's checkpoint (checkpoint.resumeFrom)", "differs": "with other settings",
}


def words(key: str) -> str:
    """A summary key as a label people read."""
    if key in WORDS:
        return WORDS[key]
    if key.endswith("Uri"):
        key = key[:-3]
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r" \1", key).replace("_", " ").lower()


def shown(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{words(k)} {shown(v)}" for k, v in value.items())
    return str(value)


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Report:
    title: str
    verdict: str
    fit: tuple[str, str] | None  # (reason, message)
    metrics: Table | None
    notes: list[str] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    samples: Table | None = None
    sections: list[Table] = field(default_factory=list)
    config: str = ""


def _change(name: str, row: dict) -> tuple[str, str]:
    """("68% better", "✓"); from a base of 0 there is no percentage: the difference itself."""
    gain, better = row.get("improvement"), row.get("better")
    if better is None:
        return MISSING, ""
    if gain is not None:
        change = f"{abs(100 * gain):.0f}% {'better' if gain >= 0 else 'worse'}"
    else:
        sign = "+" if row["change"] >= 0 else "-"
        change = sign + format_value(name, abs(row["change"])).replace("%", " points" if metric(name).fraction else "%")
    return change, "✓" if better else "✗"


def metrics_table(evaluation: dict) -> Table | None:
    rows = evaluation.get("metrics") or {}
    if not rows:
        return None
    baselines = evaluation.get("baselines") or {}
    headers = ["metric", "split", "base", "tuned", "change", "better"] + [f"{words(b)} baseline" for b in baselines]
    out = []
    for name in METRICS:
        if name not in rows:
            continue
        r, m = rows[name], metric(name)
        change, mark = _change(name, r)
        label = f"{m.label} ({'higher' if m.higher_is_better else 'lower'} is better)"
        out.append([label, m.split, format_value(name, r.get("base")), format_value(name, r.get("tuned")), change, mark]
                   + [format_value(name, baselines[b].get(name)) if name in baselines[b] else MISSING for b in baselines])
    return Table("Held-out evaluation", headers, out)


def _notes(evaluation: dict, data: dict) -> list[str]:
    notes = []
    parse = evaluation.get("parseRate") or {}
    if parse:
        parts = [f"{model} {100 * rate:.0f}%" for model, rate in parse.items()]
        notes.append("Answers with a parsable number: " + ", ".join(parts) + "; the others were scored as the training "
                     "answers' mean.")
    if data.get("testRowsSeenInTraining"):
        notes.append(f"{data['testRowsSeenInTraining']} test prompts also appear in the training rows: those are not held out.")
    return notes


def samples_table(predictions: list[dict]) -> Table | None:
    if not predictions:
        return None
    rows = [[p["prompt"], p["reference"], shown(p.get("base")), shown(p.get("tuned"))] for p in predictions[:SAMPLE_ROWS]]
    return Table(f"{len(rows)} test rows side by side", ["prompt", "reference", "base answer", "tuned answer"], rows)


# Values that read better as a sentence than as their parts.
SHOWN = {"best": lambda b: f"step {b.get('step')} (validation loss {shown(b.get('evalLoss'))}), {b.get('uri') or ''}".rstrip(", ")}


def _section(title: str, data: dict) -> Table:
    return Table(title, ["", ""], [[words(k), SHOWN.get(k, shown)(v)] for k, v in data.items() if v is not None and v != {}])


SOURCE_COLUMNS = (("uri", "source"), ("format", "row format"), ("weight", "weight"), ("shareAsked", "share asked"),
                  ("rowsRead", "rows read"), ("trainRows", "training rows"), ("rowsInEpoch", "rows per mixed epoch"),
                  ("rowsConsumed", "rows consumed"), ("shareGot", "share got"))


def sources_table(data: dict) -> Table | None:
    """dataset.sources: each source's share asked and got, rows read and consumed (repeats counted)."""
    sources = data.get("sources") or []
    if not sources:
        return None
    rows = [[shown(s.get(key)) for key, _ in SOURCE_COLUMNS] for s in sources]
    return Table("Training sources", [label for _, label in SOURCE_COLUMNS], rows)


def build(summary: dict, history: list[dict], predictions: list[dict], config_text: str) -> Report:
    evaluation = summary.get("evaluation") or {}
    fit = evaluation.get("fit")
    run = {k: summary.get(k) for k in ("job", "model", "method", "strategy", "precision", "world_size") if summary.get(k) is not None}
    data = summary.get("data") or {}
    sections = [_section("Run", run), _section("Data", {k: v for k, v in data.items() if k != "sources"}), sources_table(data),
                _section("Training", summary.get("train") or {}), _section("Outputs", summary.get("output") or {})]
    return Report(
        title=f"Fine-tuning report: {summary.get('job', '')}",
        verdict=evaluation.get("verdict") or "no evaluation data: set spec.evaluation.testSplit and dataset.evalSplit to measure the tuned model",
        fit=(fit["reason"], fit["message"]) if fit else None,
        metrics=metrics_table(evaluation), notes=_notes(evaluation, summary.get("data") or {}),
        charts=charts(history), samples=samples_table(predictions),
        sections=[s for s in sections if s and s.rows], config=config_text,
    )
