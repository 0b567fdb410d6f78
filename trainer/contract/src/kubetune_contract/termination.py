"""What the trainer's termination message says of the run's final numbers:
the metrics it carries under `metrics`, by the names `status.metrics` shows
them (the operator copies exactly these)."""

from __future__ import annotations

import json

FINAL_METRICS = ("trainLoss", "evalLoss", "tokensPerSecond")


# --------------------------------------------------------------------------- reading one

# The kubelet keeps at most 4 KiB of a termination message; the trainer trims
# its own to fit (kubetune_trainer.report). Our deepest is the evaluation's
# per-metric comparison (report.evaluation.metrics.<name>.<side>): 4 levels.
MAX_BYTES = 4096
MAX_DEPTH = 8
# The top level, by key: the JSON types each may have (None: null). What a
# section holds inside is each status section's to read; a section of the
# wrong shape is refused here, before any of them looks at it.
TOP_LEVEL = {
    "reason": (str,), "message": (str, None), "step": (int, None), "totalSteps": (int, None),
    "metrics": (dict, None), "checkpoint": (dict, None), "output": (dict, None), "evaluation": (dict, None),
    "exportFailures": (dict, None), "tracking": (dict, None), "dataset": (dict, None), "evalCurve": (list, None),
}
REQUIRED = ("reason",)
# Sections whose inside is checked here too: by key, or every value alike ("*").
SECTIONS = {
    "checkpoint": {"uri": (str, None), "step": (int, None), "best": (dict, None), "resumedFrom": (dict, None)},
    "metrics": {"*": (int, float, None)},
    "output": {"*": (str, None)},
    "exportFailures": {"*": (str,)},
}
_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "an object", list: "a list"}


class ReportInvalid(ValueError):
    """A termination message that is not the trainer's report (what is wrong with it)."""


def _depth(text: str) -> int:
    """How deeply the JSON text nests arrays and objects (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _is(value, kinds) -> bool:
    return any(value is None if kind is None else (isinstance(value, kind) and not (kind is int and isinstance(value, bool)))
               for kind in kinds)


def parse_report(text: str) -> dict:
    """The trainer's report from a termination message, or ReportInvalid saying
    why not: too large, too deeply nested (refused before parsing), not JSON,
    not an object, a section of the wrong type. Never any other exception."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise ReportInvalid(f"larger than {MAX_BYTES} bytes")
    if _depth(text) > MAX_DEPTH:
        raise ReportInvalid(f"nested deeper than {MAX_DEPTH} levels")
    try:
        report = json.loads(text)
    except (ValueError, RecursionError):
        raise ReportInvalid("not JSON") from None
    if not isinstance(report, dict):
        raise ReportInvalid(f"a JSON {type(report).__name__}, not an object")
    for key in REQUIRED:
        if key not in report:
            raise ReportInvalid(f"no {key}")
    for key, kinds in TOP_LEVEL.items():
        if key in report:
            _check(key, report[key], kinds)
    for key, fields in SECTIONS.items():
        for name, value in (report.get(key) or {}).items():
            kinds = fields.get(name, fields.get("*"))
            if kinds is not None:
                _check(f"{key}.{name}", value, kinds)
    return report


def _check(where: str, value, kinds) -> None:
    if not _is(value, kinds):
        wanted = " or ".join("null" if k is None else _NAMES[k] for k in kinds)
        raise ReportInvalid(f"{where} is a {type(value).__name__}, not {wanted}")
