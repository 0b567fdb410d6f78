"""The report's curves as PNGs (matplotlib, Agg): train and validation loss on
one chart (that is how overfitting is seen), learning rate, gradient norm,
tokens per second."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Chart:
    title: str
    png: bytes


# (history key, legend label) per line, and the y-axis label.
CHARTS = (
    ("training and validation loss", (("trainLoss", "training"), ("evalLoss", "validation")), "loss (nats per token)"),
    ("learning rate", (("learningRate", "learning rate"),), "learning rate"),
    ("gradient norm (before clipping)", (("gradNorm", "gradient norm"),), "norm"),
    ("training throughput", (("tokensPerSecond", "tokens per second"),), "tokens per second"),
    # Preference objectives: the implicit rewards and their margin, and how often the batch ranks its pairs right.
    ("preference rewards", (("rewardsChosen", "chosen"), ("rewardsRejected", "rejected"), ("rewardMargin", "margin")), "implicit reward"),
    ("preference accuracy (training batches)", (("rewardAccuracy", "chosen ranked above rejected"),), "share of pairs"),
    ("GRPO reward (training batches)", (("rewardMean", "mean weighted reward"),), "reward"),
)


def _series(history: list[dict], key: str) -> list[tuple[float, float]]:
    return [(h["step"], h[key]) for h in history if h.get(key) is not None and math.isfinite(h[key])]


def _draw(title: str, lines, ylabel: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for points, label in lines:
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o" if len(points) < 30 else None,
                markersize=3, linewidth=1.5, label=label)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(lines) > 1:
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def charts(history: list[dict]) -> list[Chart]:
    """One chart per CHARTS entry that has data (matplotlib missing: none)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return []
    out = []
    for title, keys, ylabel in CHARTS:
        lines = [(pts, label) for key, label in keys if (pts := _series(history, key))]
        if lines:
            out.append(Chart(title, _draw(title, lines, ylabel)))
    return out
