"""`make bench-serving`: vLLM serving a LoRA adapter on its base vs the same
adapter merged into the weights, side by side in one run.

Same tiny model (made here), one adapter trained by the trainer (`kubetune
run`, exporting the adapter and the merged model), two vLLM servers from the
cached vLLM CPU environment up at once: `adapter` (--enable-lora, asked for
the adapter's name) and `merged` (the merged weights). Both get the same
prompts, at the same concurrency, each generating exactly the same number of
tokens (ignore_eos): rounds alternate A/B/A/B so each pair sees the same
machine load. Prints requests/s, tokens/s and p50/p99 latency for each and the
adapter/merged ratios (pairwise medians).

The anchor: on GPUs vLLM's LoRA path costs about a third of throughput
(vllm#11267). This is a 2-core CPU with a 0.4 M-parameter model, where fixed
per-request costs dominate: the ratio measures the LoRA path's overhead here,
not on a GPU.

Prints a table; exits 0 regardless (it measures, it does not gate).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "6"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "8"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "64"))  # per round
TOKENS = int(os.environ.get("BENCH_TOKENS", "16"))


def train(root: Path) -> tuple[Path, Path, Path]:
    """(base model, adapter, merged model) from one `kubetune run`."""
    import yaml

    from kubetune_trainer.testing.tiny_model import make_tiny_dataset, make_tiny_model

    model = make_tiny_model(root / "model")
    data = make_tiny_dataset(root / "train.jsonl", "completion", 192)
    job = {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "bench"},
           "spec": {"model": {"uri": f"file://{model}"}, "dataset": {"trainUri": f"file://{data}", "maxSeqLength": 64},
                    "method": "lora", "output": {"formats": ["adapter", "merged"]},
                    "training": {"maxSteps": 60, "learningRate": 0.003, "batchSize": 8, "gradientAccumulationSteps": 1,
                                 "gradientCheckpointing": False}, "resources": {"gpusPerNode": 0}}}
    (root / "job.yaml").write_text(yaml.safe_dump(job))
    subprocess.run([sys.executable, "-m", "kubetune_operator.cli", "run", str(root / "job.yaml"), "--workdir", str(root / "runs")],
                   check=True, capture_output=True, timeout=1800)
    out = root / "runs" / "bench" / "output"
    return model, out / "adapter", out / "merged"


def one_request(url: str, model: str, prompt: str) -> float:
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": TOKENS, "temperature": 0, "ignore_eos": True}).encode()
    started = time.perf_counter()
    request = urllib.request.Request(f"{url}/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        answer = json.loads(response.read())
    assert answer["usage"]["completion_tokens"] == TOKENS, answer["usage"]
    return time.perf_counter() - started


def one_round(url: str, model: str, prompts: list[str]) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        latencies = sorted(pool.map(lambda p: one_request(url, model, p), prompts))
    seconds = time.perf_counter() - started
    return {"rps": len(prompts) / seconds, "tps": len(prompts) * TOKENS / seconds,
            "p50": latencies[len(latencies) // 2], "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]}


def main() -> int:
    from kubetune_trainer.testing.tiny_model import KEYS, PROMPTS
    from tests.harness import procs
    from tests.harness.vllm import VllmServer

    prompts = [PROMPTS[i % len(PROMPTS)].format(k=KEYS[i % len(KEYS)]) for i in range(REQUESTS)]
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-serving-") as tmp:
        root = Path(tmp)
        print("training the tiny adapter (kubetune run, adapter + merged)...", flush=True)
        model, adapter, merged = train(root)
        servers = {"adapter": VllmServer(model, adapters={"tuned": adapter}, max_lora_rank=16, log_path=root / "adapter.log"),
                   "merged": VllmServer(merged, served_name="tuned", log_path=root / "merged.log")}
        # One after the other: started at the same moment, the two picked
        # their internal ports at once and a warm-up request was reset.
        print("starting the two vLLM servers, one after the other...", flush=True)
        for server in servers.values():
            server.start()
        try:
            for server in servers.values():  # warm-up: first requests compile and allocate
                one_round(server.url, "tuned", prompts[:CONCURRENCY])
            runs = {name: [] for name in servers}
            for _ in range(ROUNDS):
                for name, server in servers.items():
                    runs[name].append(one_round(server.url, "tuned", prompts))
        except Exception:
            for name, server in servers.items():  # what vLLM said before the bench gave up
                print(f"--- {name} vLLM log tail ({server.log_path}):\n{procs.log_tail(server.log_path, 120)}", flush=True)
            raise
        finally:
            for server in servers.values():
                server.stop()
    report(runs)
    return 0


def report(runs: dict[str, list[dict]]) -> None:
    a, m = runs["adapter"], runs["merged"]
    print(f"\n{ROUNDS} interleaved rounds of {REQUESTS} requests, {CONCURRENCY} at once, {TOKENS} tokens each (ignore_eos)\n")
    print(f"{'measure':22} {'adapter (LoRA)':>16} {'merged':>12} {'adapter/merged':>16}")
    for key, label, fmt in (("rps", "requests/s", "{:.1f}"), ("tps", "tokens/s", "{:.0f}"), ("p50", "p50 latency (s)", "{:.3f}"),
                            ("p99", "p99 latency (s)", "{:.3f}")):
        ratio = statistics.median(x[key] / y[key] for x, y in zip(a, m))
        print(f"{label:22} {fmt.format(statistics.median(r[key] for r in a)):>16} {fmt.format(statistics.median(r[key] for r in m)):>12} "
              f"{ratio:>15.3f}x")
    print(f"\nrequests/s per round: adapter {[round(r['rps'], 1) for r in a]}, merged {[round(r['rps'], 1) for r in m]}")


if __name__ == "__main__":
    sys.exit(main())
