"""Synthetic product descriptions whose price follows a hidden rule plus noise.

    python examples/price-prediction/generate.py --rows 2000 --out train.jsonl

Each row is a completion-format example: the prompt describes a product (its
kind, material, size, and details that do not matter: colour, a selling
point), the completion is its price in whole dollars. The hidden rule:

    price = base[kind] x factor[material] x factor[size] x (1 + noise),   noise ~ U(-6%, +6%)

so a model has to learn which words move the price and by how much, and
ignore the rest; the noise sets the floor no model can beat (about 3% of the
price on average). Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

KINDS = {"lamp": 40, "chair": 90, "table": 180, "sofa": 320}
MATERIALS = {"pine": 1.0, "oak": 1.6, "steel": 1.3}
SIZES = {"small": 0.8, "large": 1.25}
COLOURS = ["red", "blue", "green", "black", "white", "grey"]
POINTS = ["free delivery", "easy to assemble", "hand finished", "two-year warranty", "best seller", "new"]
BRANDS = ["Norrland", "Casa Viva", "Ulmo", "Brightwood", "Kestrel", "Maple & Co", "Tovari", "Oakhurst"]
NOISE = 0.06
PROMPT = "Product: {brand} {size} {material} {kind}, {colour}, {point}. Price in dollars:"


def price(kind: str, material: str, size: str, noise: float = 0.0) -> int:
    return round(KINDS[kind] * MATERIALS[material] * SIZES[size] * (1 + noise))


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """n rows: {"prompt": description, "completion": " <price>"}."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        kind, material, size = rng.choice(list(KINDS)), rng.choice(list(MATERIALS)), rng.choice(list(SIZES))
        prompt = PROMPT.format(brand=rng.choice(BRANDS), size=size, material=material, kind=kind, colour=rng.choice(COLOURS),
                               point=rng.choice(POINTS))
        rows.append({"prompt": prompt, "completion": f" {price(kind, material, size, rng.uniform(-NOISE, NOISE))}"})
    return rows


def corpus() -> list[str]:
    """Text covering the task's vocabulary (for training a tokenizer on the spot in tests)."""
    lines = [r["prompt"] + r["completion"] for r in make_rows(400, seed=12345)]
    return lines + [" ".join(str(d) for d in range(10))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in make_rows(args.rows, args.seed)))
    print(f"wrote {args.rows} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
