"""`make bench-gpu` / `python bench/gpu_bench.py`: LoRA and QLoRA on a Llama-3-8B-shaped model.

Standalone on one CUDA GPU, no hub access: the model is random-init with Llama
3 8B's shape (hidden 4096, 32 layers, GQA 32/8 heads, MLP 14336, vocab 128256),
saved once to a local directory and loaded through `from_pretrained` like a
real one; data is synthetic text packed to seq 2048. For each method it runs
kubetune's trainer and a plain TRL `SFTTrainer` script with the same
hyper-parameters and prints tokens/s/GPU, peak memory and MFU.

MFU counts 4N FLOPs per token (N = parameters): with a frozen base, the
backward pass computes activation gradients (2N) but no weight gradients, so
forward 2N + backward 2N; the adapters' own FLOPs are negligible.

`--smoke` runs the same code on a tiny shape (CPU is fine) to check the script.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense bf16


def llama3_8b_shape(smoke: bool) -> dict:
    if smoke:
        return dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=1024)
    return dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256)


def make_model(root: Path, smoke: bool) -> Path:
    from random_llama import make_random_llama

    return make_random_llama(root / ("model-smoke" if smoke else "llama3-8b-shaped"), root / "tokenizer-src", llama3_8b_shape(smoke),
                             max_position_embeddings=8192, rope_theta=500000.0)


def make_data(path: Path, rows: int) -> Path:
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "kazo", "rimu", "tebo", "the", "code", "word", "1", "2", "3"]
    path.write_text("".join(json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(200, 900)))}) + "\n" for _ in range(rows)))
    return path


def n_params(model_dir: Path) -> int:
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    h, i, l, v = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    kv = h // c.num_attention_heads * c.num_key_value_heads
    return l * (2 * h * h + 2 * h * kv + 3 * h * i) + 2 * v * h


def ours(model: Path, data: Path, work: Path, method: str, a: argparse.Namespace) -> dict:
    """Our trainer on the config the operator renders, its /metrics scraped every 2 s
    while it runs: the NVML GPU gauges (utilisation, memory) as a user's Prometheus sees them."""
    import threading

    import torch
    from prometheus_client import generate_latest

    from kubetune_operator.api import parse_job
    from kubetune_operator.render.trainer_config import Placement, render_trainer_config
    from kubetune_trainer.config import parse_config
    from kubetune_trainer.metrics import TrainerMetrics
    from kubetune_trainer.run import RunState, run

    cuda = torch.cuda.is_available()
    os.environ["KUBETUNE_WORKDIR"] = str(work)
    torch.cuda.reset_peak_memory_stats() if cuda else None
    spec = {"model": {"uri": f"file://{model}"},
            "dataset": {"trainUri": f"file://{data}", "format": "text", "maxSeqLength": a.seq, "packing": True},
            "method": method, "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
            **({"quantization": {"bits": 4, "quantType": "nf4", "doubleQuant": True, "computeDtype": "bfloat16" if cuda else "float32"}}
               if method == "qlora" else {}),
            "training": {"maxSteps": a.steps, "learningRate": 2e-4, "batchSize": a.batch, "gradientAccumulationSteps": 1, "warmupRatio": 0.0,
                         "gradientCheckpointing": True, "logEverySteps": 5, "precision": "bf16" if cuda else "fp32"},
            "checkpoint": {"everySteps": 10**6}, "resources": {"gpusPerNode": 1 if cuda else 0}}
    job = parse_job({"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": f"gpu-{method}"}, "spec": spec})
    assert not job.problems, job.problems
    rendered = render_trainer_config(job.job.spec, namespace="bench", name=f"gpu-{method}", placement=Placement(
        checkpoint_uri=f"file://{work}/checkpoints", output_uri=f"file://{work}/output", s3_endpoint=None, s3_region=None, metrics_port=0))
    rendered["checkpoint"]["uri"] = None
    rendered["evaluation"]["compareBase"] = False
    metrics = TrainerMetrics("bench", f"gpu-{method}", 0)
    scrapes, stop = [], threading.Event()

    def scrape() -> None:
        while not stop.wait(2.0):
            scrapes.append(generate_latest(metrics.registry).decode())

    poller = threading.Thread(target=scrape, daemon=True)
    poller.start()
    try:
        t = run(parse_config(rendered), RunState(), metrics).summary["train"]
    finally:
        stop.set()
        poller.join()
    return {"tps": t["tokensTotal"] / t["seconds"], "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
            **gpu_readings(scrapes)}


def gpu_readings(scrapes: list[str]) -> dict:
    """The highest GPU utilisation and memory use our /metrics reported (None without NVML)."""
    from kubetune_contract import metric_names as names

    def peak(name: str) -> float | None:
        values = [float(line.rsplit(" ", 1)[1]) for text in scrapes for line in text.splitlines() if line.startswith(name + "{")]
        return max(values) if values else None

    used = peak(names.GPU_MEMORY_USED_BYTES)
    return {"nvml_util": peak(names.GPU_UTILIZATION_RATIO), "nvml_used_gib": used / 2**30 if used is not None else None}


def plain(model: Path, data: Path, work: Path, method: str, a: argparse.Namespace) -> dict:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from kubetune_trainer.callbacks import TokenCounter

    cuda = torch.cuda.is_available()
    torch.cuda.reset_peak_memory_stats() if cuda else None
    kwargs = {"dtype": torch.bfloat16 if cuda else torch.float32}
    if method == "qlora":
        kwargs.update(quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                                             bnb_4bit_compute_dtype=kwargs["dtype"]), device_map={"": 0} if cuda else "cpu")
    m = AutoModelForCausalLM.from_pretrained(model, **kwargs)
    if method == "qlora":
        m = prepare_model_for_kbit_training(m, use_gradient_checkpointing=True)
    args = SFTConfig(output_dir=str(work), max_steps=a.steps, learning_rate=2e-4, per_device_train_batch_size=a.batch, max_length=a.seq,
                     packing=True, bf16=cuda, use_cpu=not cuda, gradient_checkpointing=True, activation_checkpointing=True,
                     activation_checkpointing_kwargs={"use_reentrant": False}, save_strategy="no", report_to=[], logging_steps=5, disable_tqdm=True)
    trainer = SFTTrainer(model=m, args=args, train_dataset=load_dataset("json", data_files=str(data), split="train"),
                         processing_class=AutoTokenizer.from_pretrained(model),
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
    counter = TokenCounter().attach(trainer.model)
    start = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - start
    return {"tps": counter.tokens / seconds, "peak_gib": (torch.cuda.max_memory_allocated() / 2**30) if cuda else 0}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny shape, to check the script anywhere")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--methods", default="qlora,lora")
    ap.add_argument("--root", default=os.environ.get("KUBETUNE_BENCH_DIR", tempfile.gettempdir() + "/kubetune-gpu-bench"))
    a = ap.parse_args()
    if a.smoke:
        a.steps, a.seq = min(a.steps, 4), min(a.seq, 256)
    import gc

    import torch

    root = Path(a.root)
    root.mkdir(parents=True, exist_ok=True)
    model = make_model(root, a.smoke)
    data = make_data(root / "data.jsonl", rows=max(64, a.steps * a.batch * 8))
    n = n_params(model)
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    print(f"device {name}; model {n / 1e9:.2f}B params; seq {a.seq}, batch {a.batch}, {a.steps} steps, packing on, gradient checkpointing", flush=True)
    results = []
    for method in a.methods.split(","):
        for label, fn in (("kubetune", ours), ("plain TRL", plain)):
            r = fn(model, data, root / f"{label.replace(' ', '-')}-{method}", method, a)
            mfu = (4 * n * r["tps"]) / (peak * 1e12) if peak else None
            results.append((method, label, r["tps"], r["peak_gib"], mfu))
            if "nvml_util" in r:
                shown = "no NVML readings (no GPU driver)" if r["nvml_util"] is None else \
                    f"GPU utilisation up to {r['nvml_util']:.0%}, memory used up to {r['nvml_used_gib']:.1f} GiB"
                print(f"  {method} {label}: our /metrics during the run: {shown}", flush=True)
            gc.collect()
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
    print(f"\n{'method':7} {'trainer':10} {'tokens/s/GPU':>13} {'peak GiB':>9} {'MFU (4N)':>9}")
    for method, label, tps, gib, mfu in results:
        print(f"{method:7} {label:10} {tps:13,.0f} {gib:9.1f} {(f'{mfu:.1%}' if mfu is not None else 'n/a'):>9}")
    for method in a.methods.split(","):
        ours_tps = next(r[2] for r in results if r[0] == method and r[1] == "kubetune")
        plain_tps = next(r[2] for r in results if r[0] == method and r[1] == "plain TRL")
        print(f"{method}: kubetune / plain TRL = {ours_tps / plain_tps:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
