"""The validation-loss curve a run ends with: each evaluation during training
as (step, evalLoss), under `evalCurve` in the termination message and in
`status.metrics.evalCurve`.

While a trainer runs, the operator sees only its newest evaluation, once per
scrape, so a fast run, or one whose operator was restarted, leaves gaps. A
sweep's median pruner compares trials at the same step, so it needs each
finished trial's whole curve, and the trainer is the one that has it.
"""

from __future__ import annotations

import math

KEY = "evalCurve"
MAX_POINTS = 48  # about 1 KiB of the termination message's 4 KiB
MIN_POINTS = 8  # what is left when the termination message must shrink


def thin(points: list[tuple[int, float]], limit: int = MAX_POINTS) -> list[list]:
    """At most `limit` (≥ 2) finite points, in step order, spread evenly over the
    run; the first and last evaluation are always kept."""
    clean = sorted((int(s), float(v)) for s, v in points if isinstance(v, (int, float)) and math.isfinite(v))
    if len(clean) > limit:
        last = len(clean) - 1
        clean = [clean[i] for i in sorted({round(k * last / (limit - 1)) for k in range(limit)})]
    return [[s, round(v, 6)] for s, v in clean]


def parse(raw) -> dict[int, float]:
    """{step: evalLoss} from a termination message's `evalCurve`; malformed points
    are skipped, and no more than MAX_POINTS are taken."""
    out: dict[int, float] = {}
    for point in raw if isinstance(raw, list) else []:
        if len(out) >= MAX_POINTS:
            break
        if not (isinstance(point, list) and len(point) == 2):
            continue
        step, value = point
        if isinstance(step, int) and not isinstance(step, bool) and step > 0 and isinstance(value, (int, float)) \
                and not isinstance(value, bool) and math.isfinite(value):
            out[step] = float(value)
    return out
