"""`make bench-gpu-dpo` / `python bench/gpu_dpo_bench.py`: DPO with QLoRA on a
random-init Llama-shaped model of about 1B parameters, bf16, seq 1024: kubetune's
`objective: dpo` path vs a plain TRL `DPOTrainer` script, tokens/s and peak GPU
memory, run one after the other in one process.

Standalone on one CUDA GPU, no hub access: the model (hidden 2048, 16 layers,
GQA 32/8 heads, MLP 5632, vocab 32000: ~1.1B) is made here and loaded through
`from_pretrained`; the preference pairs are synthetic (prompt ~300-500 tokens,
answers ~200-500, so a pair fills about seq 1024). Both runs use LoRA r 16 on
all linear layers of a 4-bit nf4 base, gradient checkpointing, TRL's default
sigmoid loss with beta 0.1, and the base with the adapter disabled as the
reference. Tokens are counted the same way for both (kubetune's TokenCounter).

The GPU machine has torch, transformers, peft and accelerate; it lacks trl,
bitsandbytes, datasets and pydantic: install their wheels first, e.g.
`pip install --no-deps wheels/*.whl` with wheels downloaded here by
`pip download trl==1.16.0 bitsandbytes==0.50.2 datasets==5.2.0 pydantic==2.14.3 pydantic-core -d wheels`
(plus their small pure-Python dependencies), and put trainer/src and
trainer/contract/src on PYTHONPATH (the Makefile target does).

`--smoke` runs the same code on a tiny shape and short sequences (CPU is fine).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shape(smoke: bool) -> dict:
    if smoke:
        return dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=1024)
    return dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, vocab_size=32000)


def make_model(root: Path, smoke: bool) -> Path:
    from random_llama import make_random_llama

    return make_random_llama(root / ("model-smoke" if smoke else "llama-1b-shaped"), root / "tokenizer-src", shape(smoke),
                             max_position_embeddings=4096)


def make_pairs(path: Path, rows: int, seq: int) -> Path:
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "kazo", "rimu", "tebo", "the", "code", "word"]
    text = lambda lo, hi: " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))  # noqa: E731
    p, a = (seq * 3 // 10, seq // 2), (seq // 5, seq // 2)
    path.write_text("".join(json.dumps({"prompt": text(*p), "chosen": " " + text(*a), "rejected": " " + text(*a)}) + "\n" for _ in range(rows)))
    return path


def ours(model: Path, data: Path, work: Path, a: argparse.Namespace) -> dict:
    import torch

    from kubetune_operator.api import parse_job
    from kubetune_operator.render.trainer_config import Placement, render_trainer_config
    from kubetune_trainer.config import parse_config
    from kubetune_trainer.run import RunState, run

    cuda = torch.cuda.is_available()
    os.environ["KUBETUNE_WORKDIR"] = str(work)
    torch.cuda.reset_peak_memory_stats() if cuda else None
    spec = {"model": {"uri": f"file://{model}"}, "dataset": {"trainUri": f"file://{data}", "maxSeqLength": a.seq},
            "method": "qlora", "objective": "dpo", "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
            "quantization": {"bits": 4, "quantType": "nf4", "doubleQuant": True, "computeDtype": "bfloat16" if cuda else "float32"},
            "training": {"maxSteps": a.steps, "learningRate": 5e-5, "batchSize": a.batch, "gradientAccumulationSteps": 1, "warmupRatio": 0.0,
                         "gradientCheckpointing": True, "logEverySteps": 5, "precision": "bf16" if cuda else "fp32"},
            "checkpoint": {"everySteps": 10**6}, "resources": {"gpusPerNode": 1 if cuda else 0}}
    job = parse_job({"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "gpu-dpo"}, "spec": spec})
    assert not job.problems, job.problems
    rendered = render_trainer_config(job.job.spec, namespace="bench", name="gpu-dpo", placement=Placement(
        checkpoint_uri=f"file://{work}/checkpoints", output_uri=f"file://{work}/output", s3_endpoint=None, s3_region=None, metrics_port=0))
    rendered["checkpoint"]["uri"] = None
    rendered["metrics"]["enabled"] = False
    rendered["evaluation"]["compareBase"] = False
    t = run(parse_config(rendered), RunState(), None).summary["train"]
    return {"tps": t["tokensTotal"] / t["seconds"], "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0}


def plain(model: Path, data: Path, work: Path, a: argparse.Namespace) -> dict:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import DPOConfig, DPOTrainer

    from kubetune_trainer.callbacks import TokenCounter

    cuda = torch.cuda.is_available()
    torch.cuda.reset_peak_memory_stats() if cuda else None
    dtype = torch.bfloat16 if cuda else torch.float32
    m = AutoModelForCausalLM.from_pretrained(model, dtype=dtype, device_map={"": 0} if cuda else "cpu", quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype))
    m = prepare_model_for_kbit_training(m, use_gradient_checkpointing=True)
    args = DPOConfig(output_dir=str(work), max_steps=a.steps, learning_rate=5e-5, per_device_train_batch_size=a.batch, max_length=a.seq,
                     bf16=cuda, use_cpu=not cuda, gradient_checkpointing=True, activation_checkpointing=True, warmup_steps=0,
                     activation_checkpointing_kwargs={"use_reentrant": False}, save_strategy="no", report_to=[], logging_steps=5, disable_tqdm=True)
    trainer = DPOTrainer(model=m, args=args, train_dataset=load_dataset("json", data_files=str(data), split="train"),
                         processing_class=AutoTokenizer.from_pretrained(model),
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
    counter = TokenCounter().attach(trainer.model)
    start = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - start
    return {"tps": counter.tokens / seconds, "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny shape and sequences, to check the script anywhere")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--root", default=os.environ.get("KUBETUNE_BENCH_DIR", tempfile.gettempdir() + "/kubetune-gpu-dpo-bench"))
    a = ap.parse_args()
    if a.smoke:
        a.steps, a.seq = min(a.steps, 4), min(a.seq, 128)
    import torch

    root = Path(a.root)
    root.mkdir(parents=True, exist_ok=True)
    model = make_model(root, a.smoke)
    data = make_pairs(root / "pairs.jsonl", rows=max(64, a.steps * a.batch * 2), seq=a.seq)
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"device {name}; seq {a.seq}, batch {a.batch} pairs, {a.steps} steps; DPO, QLoRA nf4, bf16, gradient checkpointing", flush=True)
    results = {}
    for label, fn in (("kubetune", ours), ("plain TRL", plain)):
        results[label] = fn(model, data, root / label.replace(" ", "-"), a)
        gc.collect()
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    print(f"\n{'trainer':10} {'tokens/s':>10} {'peak GiB':>9}")
    for label, r in results.items():
        print(f"{label:10} {r['tps']:10,.0f} {r['peak_gib']:9.2f}")
    print(f"kubetune / plain TRL = {results['kubetune']['tps'] / results['plain TRL']['tps']:.3f}x (goal >= 0.97)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
