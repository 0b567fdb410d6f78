"""`make bench-trainer`'s streaming section (alone: `BENCH_ONLY=streaming make bench-trainer`).

On a generated JSONL of the lookup task at 1x and 10x the rows, each run in
its own process (its peak RSS is that process's `ru_maxrss`), the same steps
(`training.maxSteps`, so no counting pass):

- peak RSS of a streamed run at 10x vs 1x. Goal: flat within 20%.
- the same for the run that loads the file into memory, for contrast.
- tokens/s, streamed vs loaded, on the 1x file, interleaved A/B. Goal: >= 0.95x.
- the counting pass's cost (a streamed run with epochs instead of maxSteps
  counts first): seconds per 1x file, from its statistics.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROWS = int(os.environ.get("BENCH_STREAM_ROWS", "20000"))
STEPS = int(os.environ.get("BENCH_STREAM_STEPS", "30"))
REPEATS = int(os.environ.get("BENCH_STREAM_REPEATS", "2"))


def make_rows_file(path: Path, n: int) -> Path:
    from kubetune_trainer.testing.tiny_model import make_rows

    rng = random.Random(3)
    with path.open("w") as fh:
        for r in make_rows("completion", n):
            r["prompt"] = " ".join(rng.choice(["please", "now", "kindly", "the", "word"]) for _ in range(rng.randint(0, 40))) + " " + r["prompt"]
            fh.write(json.dumps(r) + "\n")
    return path


def case(model: str, data: str, work: str, streaming: bool) -> dict:
    """One run in this process (the child), with its peak RSS."""
    sys.path.insert(0, str(Path(__file__).parent))
    from trainer_bench import ours

    result = ours(Path(model), Path(data), Path(work), steps=STEPS, dataset_extra={"streaming": streaming})
    return {**result, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _run(model: Path, data: Path, work: Path, streaming: bool) -> dict:
    out = subprocess.run([sys.executable, __file__, json.dumps([str(model), str(data), str(work), streaming])],
                         capture_output=True, text=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    if out.returncode != 0:
        raise RuntimeError(f"streaming bench case failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def counting_pass_seconds(model: Path, data: Path, work: Path) -> float:
    """The counting pass alone (prepare with count=True), in this process."""
    from kubetune_contract.sections import DatasetSpec
    from kubetune_trainer.data import prepare
    from transformers import AutoTokenizer

    spec = DatasetSpec(trainUri=f"file://{data}", maxSeqLength=128, streaming=True)
    prepared = prepare(spec, AutoTokenizer.from_pretrained(model), seed=0, cache_dir=work, count=True)
    return prepared.stats["countingPassSeconds"]


def rows(model: Path, root: Path) -> tuple[list[tuple], list[str]]:
    """The table rows (measure, values, ratio, goal, met) and the detail lines."""
    small = make_rows_file(root / "stream-1x.jsonl", ROWS)
    large = make_rows_file(root / "stream-10x.jsonl", ROWS * 10)
    streamed, loaded = [], []
    for i in range(REPEATS):  # interleaved, so machine load hits both alike
        streamed.append(_run(model, small, root / f"stream-s-{i}", True))
        loaded.append(_run(model, small, root / f"stream-l-{i}", False))
    big_streamed = _run(model, large, root / "stream-s-big", True)
    big_loaded = _run(model, large, root / "stream-l-big", False)
    rss_s = statistics.median(r["maxrss_mb"] for r in streamed)
    rss_l = statistics.median(r["maxrss_mb"] for r in loaded)
    flat = big_streamed["maxrss_mb"] / rss_s
    tps_ratio = statistics.median(a["tps"] / b["tps"] for a, b in zip(streamed, loaded))
    counting = counting_pass_seconds(model, small, root / "stream-count")
    mb = small.stat().st_size / 2**20
    table = [
        (f"streamed peak RSS, 10x vs 1x rows ({ROWS:,} rows, {mb:.1f} MiB)", f"{big_streamed['maxrss_mb']:.0f} vs {rss_s:.0f} MiB",
         f"{flat:.3f}x", "<= 1.20x", flat <= 1.20),
        ("loaded peak RSS, 10x vs 1x rows (contrast)", f"{big_loaded['maxrss_mb']:.0f} vs {rss_l:.0f} MiB",
         f"{big_loaded['maxrss_mb'] / rss_l:.3f}x", "-", True),
        ("tokens/s, streamed vs loaded (1x)", f"{statistics.median(r['tps'] for r in streamed):,.0f} vs "
         f"{statistics.median(r['tps'] for r in loaded):,.0f}", f"{tps_ratio:.3f}x", ">= 0.95x", tps_ratio >= 0.95),
        (f"counting pass over the 1x file ({ROWS:,} rows)", f"{counting:.2f} s", f"{ROWS / counting:,.0f} rows/s", "-", True),
    ]
    detail = [f"streaming runs: peak RSS streamed {[round(r['maxrss_mb']) for r in streamed]} MiB, loaded "
              f"{[round(r['maxrss_mb']) for r in loaded]} MiB; tokens/s streamed {[round(r['tps']) for r in streamed]}, "
              f"loaded {[round(r['tps']) for r in loaded]}; {STEPS} steps each"]
    return table, detail


def main() -> int:
    from kubetune_trainer.testing.tiny_model import make_tiny_model

    with tempfile.TemporaryDirectory(prefix="kubetune-stream-bench-") as tmp:  # gone after the run
        root = Path(tmp)
        model = make_tiny_model(root / "model", hidden=256, layers=4)
        table, detail = rows(model, root)
    print(f"\n{'measure':58} {'ours / with':28} {'ratio':>10} {'goal':>9}  met")
    for name, values, ratio, goal, met in table:
        print(f"{name:58} {values:28} {ratio:>10} {goal:>9}  {'yes' if met else 'NO'}")
    print("\n" + "\n".join(detail))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("["):
        print(json.dumps(case(*json.loads(sys.argv[1]))))
        sys.exit(0)
    sys.exit(main())
