"""Several training sources mixed by weight (`dataset.sources`).

The mixed epoch
---------------
Weights are normalised to shares (0.5/0.3/0.2 and 5/3/2 mix alike). The mixed
epoch has as many rows as the sources' training rows together (after dedupe,
evalSplit and testSplit, which are applied to each source before mixing), and
source i contributes round(share_i x that) of them; the rounding is by largest
remainder, so the counts add up to the epoch exactly. A source's rows are drawn
without repeats while they last (a seeded shuffle of its rows); a source asked
for more rows than it has is repeated whole, then the remainder is a seeded
draw without repeats from it again, so no row repeats twice more than another.
The mixed rows are then shuffled together.

Everything is a pure function of the rows' counts, the weights and
`training.seed`: the same on every process and every run, another order with
another seed.

Splits happen per source before mixing: a validation or test row of one source
never reaches training, not even as a repeat, and every source is represented
in the validation and test rows.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class MixPlan:
    """The mixed epoch: `order` lists (source, row) pairs in training order."""

    order: list[tuple[int, int]]
    shares: list[float]  # each source's normalised weight
    counts: list[int]  # rows of each source in the epoch (repeats counted)

    @property
    def size(self) -> int:
        return len(self.order)


def shares(weights: list[float]) -> list[float]:
    total = sum(weights)
    return [w / total for w in weights]


def quotas(sizes: list[int], weights: list[float], epoch: int | None = None) -> list[int]:
    """Rows each source contributes to an epoch of `epoch` rows (default: all the
    sources' rows): round(share x epoch), by largest remainder so they add up."""
    epoch = sum(sizes) if epoch is None else epoch
    exact = [s * epoch for s in shares(weights)]
    counts = [int(x) for x in exact]
    # Largest remainder first; ties go to the earlier source (stable, so deterministic).
    by_remainder = sorted(range(len(exact)), key=lambda i: -(exact[i] - counts[i]))
    for i in by_remainder[: epoch - sum(counts)]:
        counts[i] += 1
    return counts


def _rng(seed: int, *parts: object) -> random.Random:
    """A generator of its own for each use of the seed: independent draws, stable across Python versions."""
    key = ":".join(str(p) for p in (seed, *parts)).encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def draw(size: int, count: int, seed: int, source: int) -> list[int]:
    """`count` row indices of a source of `size` rows: without repeats while rows
    last, then whole repeats, then a seeded draw of the remainder."""
    whole, rest = divmod(count, size)
    picked = list(range(size)) * whole
    order = list(range(size))
    _rng(seed, "source", source).shuffle(order)
    return picked + order[:rest]


def plan(sizes: list[int], weights: list[float], seed: int) -> MixPlan:
    """The mixed epoch of sources with `sizes` rows and these weights."""
    if len(sizes) != len(weights) or not sizes:
        raise ValueError("one weight per source, at least one source")
    if any(s <= 0 for s in sizes):
        raise ValueError("every source needs at least one row")
    if any(not w > 0 for w in weights):
        raise ValueError("weights must be > 0")
    counts = quotas(sizes, weights)
    order = [(i, row) for i, (size, count) in enumerate(zip(sizes, counts)) for row in draw(size, count, seed, i)]
    _rng(seed, "mix").shuffle(order)
    return MixPlan(order=order, shares=shares(weights), counts=counts)


def consumed(plan: MixPlan, examples: int) -> list[int]:
    """Rows of each source among the first `examples` the training read, passes
    over the mixed epoch included: whole epochs count every row, the last,
    partial one its prefix (the training reads the mixed epoch in `order`)."""
    passes, rest = divmod(max(0, examples), plan.size)
    counts = [c * passes for c in plan.counts]
    for source, _ in plan.order[:rest]:
        counts[source] += 1
    return counts
