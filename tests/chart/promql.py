"""Metric names in PromQL expressions, and the names our code exports.

A small lexer rather than a full parser: it removes what cannot be a metric
name (strings, label matchers, ranges, grouping clauses, Grafana variables,
numbers/durations, keywords, function calls) and returns the identifiers left.
It errs on the side of reporting too much, so an unknown word fails the test
instead of slipping through. Its own tests are in test_metric_names.py.
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.I)
_VARIABLE = re.compile(r"\$\{?\w+(:\w+)?\}?")
_DURATION = re.compile(r"(?<![\w.])(\d+(ms|s|m|h|d|w|y))+(?![\w.])")
_NUMBER = re.compile(r"(?<![\w.])[+-]?(\d+\.?\d*(e[+-]?\d+)?|0x[0-9a-f]+|inf|nan)(?![\w.])", re.I)
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
             "atan2", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    text = _STRING.sub(" ", expr)
    text = _VARIABLE.sub(" ", text)
    # Label matchers may hold variables and braces never nest in PromQL.
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _DURATION.sub(" ", text)  # `offset 5m`
    text = _NUMBER.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        word = m.group()
        rest = text[m.end():].lstrip()
        if rest.startswith("("):  # a function or aggregation call
            continue
        if word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry's metrics can expose, by metric type
    (a labelled metric with no children yet exposes no samples, so reading
    the text exposition would miss it)."""
    out: set[str] = set()
    for family in registry.collect():
        n = family.name
        if family.type == "counter":
            out |= {f"{n}_total", f"{n}_created"}
        elif family.type == "histogram":
            out |= {f"{n}_bucket", f"{n}_count", f"{n}_sum", f"{n}_created"}
        elif family.type == "summary":
            out |= {n, f"{n}_count", f"{n}_sum", f"{n}_created"}
        elif family.type == "info":
            out.add(f"{n}_info")
        else:
            out.add(n)
    return out


def trainer_exports() -> set[str]:
    from kubetune_trainer import metrics as tm

    m = tm.TrainerMetrics(namespace="ns", job="j", rank=0)
    # GPU series come from a collector that reads NVML at scrape time and
    # yields nothing on a machine without a GPU: take their names from the
    # module, and check they are declared as exposed there.
    gpu = set(tm.GPU_METRIC_NAMES)
    assert gpu <= set(tm.EXPOSED_NAMES)
    return exposed_names(m.registry) | gpu


def operator_exports() -> set[str]:
    from kubetune_operator import metrics as om

    return exposed_names(om.REGISTRY)
