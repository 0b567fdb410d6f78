"""The answer a dataset row expects, and the number in an answer.

Numeric metrics (mae, rmse, mape) score the number in each answer. What counts
as a number is declared here once: `kubetune validate --dataset` refuses data
whose answers have none, the trainer's pre-flight refuses it too, and the
trainer's decoders read model answers with the same pattern.
"""

from __future__ import annotations

import re

from .formats import columns_of
from .sections import ColumnMapping

# An optional minus, digits, an optional decimal part. Thousands separators are
# not read ("1,299" is 1): write training answers without them.
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# Text that could still grow into a number: what a decoder extends greedily.
NUMBER_PREFIX = re.compile(r"\s*-?(\d+(\.\d*)?)?")
# A token can start a number when its text (after leading whitespace) begins
# with a digit, or is a lone minus.
NUMBER_START = re.compile(r"\s*(-?\d|-$)")


def first_number(text: str) -> float | None:
    """The first number in `text`, or None."""
    match = NUMBER.search(text)
    return float(match.group()) if match else None


def answer_of(row: dict, fmt: str, mapping: ColumnMapping | None = None) -> str | None:
    """The text a row expects the model to answer, or None for formats with no
    answer (text)."""
    columns = columns_of(fmt, mapping)
    if fmt == "completion":
        value = row.get(columns["completion"])
    elif fmt == "instruction":
        value = row.get(columns["output"])
    elif fmt == "chat":
        messages = row.get(columns["messages"]) or []
        value = messages[-1].get("content") if messages and isinstance(messages[-1], dict) else None
    else:
        return None
    return value if isinstance(value, str) else None
