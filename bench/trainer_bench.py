"""`make bench-trainer`: kubetune's trainer against a plain TRL script, side by side in one run.

Same tiny model (random-init Llama, made here), same data, same hyper-parameters:

1. throughput: our full trainer path (metrics, callbacks, watchdog, token
   counting) vs a hand-written `SFTTrainer` script; non-padding tokens per
   second of `trainer.train()`, runs interleaved A/B/A/B, medians compared.
   Goal: >= 0.97x.
2. packing: the fraction of positions that are real tokens with packing vs
   without. Goal: >= 0.95 with packing.
3. checkpoints: how long the training loop is blocked per checkpoint with the
   background uploader vs a synchronous upload, to MinIO when the cluster tools
   are built (else a local directory). Goal: background < 10% of synchronous.
1b. DPO throughput: our `objective: dpo` path vs a hand-written `DPOTrainer`
   script on the same preference data and model (LoRA, the reference being
   the base with the adapter disabled in both), interleaved A/B, medians
   compared. Goal: >= 0.97x.
5. streaming (`stream_bench.py`): peak RSS of a streamed run at 1x and 10x
   the rows, tokens/s streamed vs loaded. `BENCH_ONLY=streaming` runs it alone.
4. evaluation: on the quickstart job (examples/quickstart.yaml, its evaluation
   section as written), the time spent evaluating (the base before training and
   the tuned model after: losses, generation, scoring) against the time spent
   training, in the same run. Reported, no goal.
6. the real model (`real_model_bench.py`): SmolLM2-135M-Instruct, SFT and DPO
   tokens/s vs plain TRL, peak RSS, the price job's evaluation against its
   training time, and that evaluation before vs after it was made cheaper.
   `BENCH_ONLY=real` runs it alone.

Prints a table; exits 0 regardless of goals (it measures, it does not gate).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
STEPS = int(os.environ.get("BENCH_STEPS", "40"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
HP = dict(lr=3e-3, batch=8, seq=128, r=16, alpha=32, seed=11)


def make_data(path: Path, n: int = 512) -> Path:
    """The lookup task with prompts of varied length (so padding matters)."""
    from kubetune_trainer.testing.tiny_model import make_rows

    rng = random.Random(0)
    rows = make_rows("completion", n)
    for r in rows:
        r["prompt"] = " ".join(rng.choice(["please", "now", "kindly", "quickly", "the", "word"]) for _ in range(rng.randint(0, 40))) + " " + r["prompt"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_preference_data(path: Path, n: int = 512) -> Path:
    """The tiny preference task (code word chosen over a source word), prompts of varied length."""
    from kubetune_trainer.testing.tiny_model import make_rows

    rng = random.Random(1)
    rows = make_rows("preference", n)
    for r in rows:
        r["prompt"] = " ".join(rng.choice(["please", "now", "kindly", "the", "word"]) for _ in range(rng.randint(0, 20))) + " " + r["prompt"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ours(model: Path, data: Path, work: Path, *, packing: bool = False, method: str = "lora", steps: int = STEPS,
         ckpt_uri: str | None = None, every: int = 10**6, background: bool = True, objective: str = "sft",
         dataset_extra: dict | None = None) -> dict:
    """Our trainer's run() on a config rendered from a FineTuneJob spec, as the operator renders it."""
    from kubetune_contract.metric_names import CHECKPOINT_BLOCKED_SECONDS
    from kubetune_operator.api import parse_job
    from kubetune_operator.render.trainer_config import Placement, render_trainer_config
    from kubetune_trainer.config import parse_config
    from kubetune_trainer.metrics import TrainerMetrics
    from kubetune_trainer.run import RunState, run

    os.environ["KUBETUNE_WORKDIR"] = str(work)
    spec = {
        "model": {"uri": f"file://{model}"},
        "dataset": {"trainUri": f"file://{data}", "maxSeqLength": HP["seq"], "packing": packing, **(dataset_extra or {})},
        "method": method, "objective": objective,
        **({"lora": {"r": HP["r"], "alpha": HP["alpha"], "dropout": 0.0}} if method != "full" else {}),
        # Accumulation and gradient checkpointing as the plain TRL script has them.
        "training": {"maxSteps": steps, "learningRate": HP["lr"], "batchSize": HP["batch"], "warmupRatio": 0.0, "seed": HP["seed"],
                     "logEverySteps": 10, "gradientAccumulationSteps": 1, "gradientCheckpointing": False},
        "checkpoint": {"everySteps": every, "keepLast": 2},
        "resources": {"gpusPerNode": 0},
    }
    job = parse_job({"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "ours"}, "spec": spec})
    assert not job.problems, job.problems
    rendered = render_trainer_config(job.job.spec, namespace="bench", name="ours", placement=Placement(
        checkpoint_uri=ckpt_uri or f"file://{work}/checkpoints", output_uri=f"file://{work}/output",
        s3_endpoint=None, s3_region=None, metrics_port=0))
    rendered["checkpoint"]["backgroundUpload"] = background
    if ckpt_uri is None:
        rendered["checkpoint"]["uri"] = None  # no store at all: the throughput runs measure training alone
    rendered["evaluation"]["compareBase"] = False
    # The metrics our runs feed (a private registry); the checkpoint rows read the
    # loop's blocked time from them, as Prometheus would.
    metrics = TrainerMetrics("bench", "ours", 0)
    state = run(parse_config(rendered), RunState(), metrics)
    t = state.summary["train"]
    sample = metrics.registry.get_sample_value
    return {"tokens": t["tokensTotal"], "seconds": t["seconds"], "tps": t["tokensTotal"] / t["seconds"], "padding": t["paddingFraction"],
            "checkpoints": int(sample(f"{CHECKPOINT_BLOCKED_SECONDS}_count", metrics.labels) or 0),
            "blocked": sample(f"{CHECKPOINT_BLOCKED_SECONDS}_sum", metrics.labels) or 0.0}


def plain_trl(model: Path, data: Path, work: Path, steps: int = STEPS) -> dict:
    """What an engineer would write by hand with TRL (plus the same token counter)."""
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from kubetune_trainer.callbacks import TokenCounter

    tok = AutoTokenizer.from_pretrained(model)
    m = AutoModelForCausalLM.from_pretrained(model)
    ds = load_dataset("json", data_files=str(data), split="train")
    args = SFTConfig(output_dir=str(work), max_steps=steps, learning_rate=HP["lr"], per_device_train_batch_size=HP["batch"],
                     warmup_steps=0, seed=HP["seed"], data_seed=HP["seed"], max_length=HP["seq"], logging_steps=10, save_strategy="no",
                     report_to=[], use_cpu=True, bf16=False, gradient_checkpointing=False, activation_checkpointing=False, disable_tqdm=True)
    trainer = SFTTrainer(model=m, args=args, train_dataset=ds, processing_class=tok,
                         peft_config=LoraConfig(r=HP["r"], lora_alpha=HP["alpha"], lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
    counter = TokenCounter().attach(trainer.model)
    start = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - start
    return {"tokens": counter.tokens, "seconds": seconds, "tps": counter.tokens / seconds, "padding": counter.padding_fraction}


def plain_trl_dpo(model: Path, data: Path, work: Path, steps: int = STEPS) -> dict:
    """A hand-written DPOTrainer script (LoRA; TRL's default sigmoid loss, beta 0.1, as ours), the same token counter."""
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from kubetune_trainer.callbacks import TokenCounter

    tok = AutoTokenizer.from_pretrained(model)
    m = AutoModelForCausalLM.from_pretrained(model)
    ds = load_dataset("json", data_files=str(data), split="train")
    args = DPOConfig(output_dir=str(work), max_steps=steps, learning_rate=HP["lr"], per_device_train_batch_size=HP["batch"],
                     warmup_steps=0, seed=HP["seed"], data_seed=HP["seed"], max_length=HP["seq"], logging_steps=10, save_strategy="no",
                     report_to=[], use_cpu=True, bf16=False, gradient_checkpointing=False, activation_checkpointing=False, disable_tqdm=True)
    trainer = DPOTrainer(model=m, args=args, train_dataset=ds, processing_class=tok,
                         peft_config=LoraConfig(r=HP["r"], lora_alpha=HP["alpha"], lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
    counter = TokenCounter().attach(trainer.model)
    start = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - start
    return {"tokens": counter.tokens, "seconds": seconds, "tps": counter.tokens / seconds}


def quickstart_evaluation(model: Path, work: Path) -> dict:
    """examples/quickstart.yaml as written (the tiny model and data in place of its
    URIs): training seconds and evaluation seconds of one run."""
    import yaml

    from kubetune_operator.api import parse_job
    from kubetune_operator.render.trainer_config import Placement, render_trainer_config
    from kubetune_trainer.config import parse_config
    from kubetune_trainer.run import RunState, run
    from kubetune_trainer.testing.tiny_model import make_tiny_dataset

    os.environ["KUBETUNE_WORKDIR"] = str(work)
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    doc["spec"]["model"] = {"uri": f"file://{model}"}
    doc["spec"]["dataset"]["trainUri"] = f"file://{make_tiny_dataset(work / 'train.jsonl', 'completion', 192)}"
    job = parse_job(doc)
    assert not job.problems, job.problems
    rendered = render_trainer_config(job.job.spec, namespace="bench", name="quickstart", placement=Placement(
        checkpoint_uri=f"file://{work}/checkpoints", output_uri=f"file://{work}/output", s3_endpoint=None, s3_region=None, metrics_port=0))
    state = run(parse_config(rendered), RunState())
    seconds = state.summary["evaluation"]["seconds"]
    return {"train": state.summary["train"]["seconds"], "base": seconds.get("base", 0.0), "tuned": seconds.get("tuned", 0.0),
            "rows": state.summary["evaluation"]["testRows"]}


def minio_store(data: Path) -> tuple[str | None, object]:
    """A MinIO on a free port when the cluster tools are built; else (None, None)."""
    import socket
    import urllib.request

    bin_dir = os.environ.get("KUBETUNE_TOOLS_BIN")
    if not bin_dir:
        out = subprocess.run(["bash", str(REPO / "hack/cluster-tools/build.sh")], capture_output=True, text=True)
        bin_dir = out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else ""
    binary = Path(bin_dir) / "minio"
    if not binary.exists():
        return None, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MINIO_ROOT_USER": "bench", "MINIO_ROOT_PASSWORD": "bench-secret"}
    proc = subprocess.Popen([str(binary), "server", "--quiet", "--address", f"127.0.0.1:{port}", str(data)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/minio/health/live", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret", AWS_REGION="us-east-1")
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="bench")
    return "s3://bench", proc


def main() -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    if os.environ.get("BENCH_ONLY") == "streaming":
        import stream_bench

        return stream_bench.main()
    if os.environ.get("BENCH_ONLY") == "real":
        import real_model_bench

        return real_model_bench.main()
    # Every run's data, checkpoints and adapters (over 1 GB with the real model's): gone after the run.
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-") as root:
        return _bench(Path(root))


def _bench(root: Path) -> int:
    from kubetune_trainer.testing.tiny_model import make_tiny_model

    model = make_tiny_model(root / "model", hidden=256, layers=4)
    data = make_data(root / "train.jsonl")
    print(f"tiny model: hidden 256, 4 layers; {STEPS} steps, batch {HP['batch']}, seq {HP['seq']}; {REPEATS} interleaved repeats", flush=True)

    # 1. throughput, interleaved so machine load hits both alike
    o, p = [], []
    for i in range(REPEATS):
        o.append(ours(model, data, root / f"ours-{i}"))
        p.append(plain_trl(model, data, root / f"plain-{i}"))
    o_tps, p_tps = statistics.median(r["tps"] for r in o), statistics.median(r["tps"] for r in p)
    # Each A/B pair ran back to back, so its ratio sees the same machine load.
    pair_ratio = statistics.median(a["tps"] / b["tps"] for a, b in zip(o, p))

    # 1b. DPO throughput, interleaved the same way
    prefs = make_preference_data(root / "prefs.jsonl")
    od, pd = [], []
    for i in range(REPEATS):
        od.append(ours(model, prefs, root / f"ours-dpo-{i}", objective="dpo"))
        pd.append(plain_trl_dpo(model, prefs, root / f"plain-dpo-{i}"))
    dpo_ratio = statistics.median(a["tps"] / b["tps"] for a, b in zip(od, pd))
    od_tps, pd_tps = statistics.median(r["tps"] for r in od), statistics.median(r["tps"] for r in pd)

    # 2. packing
    packed = ours(model, data, root / "packed", packing=True, steps=20)
    unpacked = o[0]

    # 3. checkpoint blocking: full fine-tuning (weights + optimizer state) every 5 steps
    store, proc = minio_store(root / "minio")
    try:
        uri = store or f"file://{root}/store"
        bg = ours(model, data, root / "bg", method="full", steps=20, ckpt_uri=f"{uri}/bg", every=5, background=True)
        sync = ours(model, data, root / "sync", method="full", steps=20, ckpt_uri=f"{uri}/sync", every=5, background=False)
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=30)  # before its data directory is removed
    bg_block, sync_block = bg["blocked"] / max(1, bg["checkpoints"]), sync["blocked"] / max(1, sync["checkpoints"])

    # 4. evaluation's cost on the quickstart job
    quick = quickstart_evaluation(model, root / "quickstart")
    evaluating = quick["base"] + quick["tuned"]
    ckpt_mb = sum(f.stat().st_size for f in (root / "bg" / "run" / "checkpoints").rglob("*") if f.is_file()) / 2**20 / max(1, len(list((root / "bg" / "run" / "checkpoints").glob("checkpoint-*"))))

    import stream_bench

    stream_rows, stream_detail = stream_bench.rows(model, root)
    import real_model_bench

    real_rows, real_detail = real_model_bench.rows(root / "real")
    rows = [
        ("tokens/s, ours vs plain TRL", f"{o_tps:,.0f} vs {p_tps:,.0f}", f"{pair_ratio:.3f}x", ">= 0.97x", pair_ratio >= 0.97),
        ("DPO tokens/s, ours vs plain TRL DPOTrainer", f"{od_tps:,.0f} vs {pd_tps:,.0f}", f"{dpo_ratio:.3f}x", ">= 0.97x", dpo_ratio >= 0.97),
        ("non-padding fraction, packing vs not", f"{1 - packed['padding']:.3f} vs {1 - unpacked['padding']:.3f}", f"{1 - packed['padding']:.3f}", ">= 0.95", 1 - packed["padding"] >= 0.95),
        (f"loop blocked per checkpoint ({'MinIO' if store else 'local dir'}, ~{ckpt_mb:.0f} MiB)", f"{bg_block * 1000:.1f} ms vs {sync_block * 1000:.1f} ms", f"{bg_block / sync_block:.1%}", "< 10%", bg_block / sync_block < 0.10),
        (f"quickstart: evaluation vs training time ({quick['rows']} test rows)", f"{evaluating:.1f} s vs {quick['train']:.1f} s",
         f"{evaluating / quick['train']:.2f}x", "-", True),
        *stream_rows,
        *real_rows,
    ]
    print()
    print(f"{'measure':58} {'ours / with':28} {'ratio':>10} {'goal':>9}  met")
    for name, values, ratio, goal, met in rows:
        print(f"{name:58} {values:28} {ratio:>10} {goal:>9}  {'yes' if met else 'NO'}")
    print(f"\nruns (tokens/s): ours {[round(r['tps']) for r in o]}, plain {[round(r['tps']) for r in p]}; "
          f"pairwise ratios {[round(a['tps'] / b['tps'], 3) for a, b in zip(o, p)]} (ratio above: their median)")
    print(f"DPO runs (tokens/s): ours {[round(r['tps']) for r in od]}, plain {[round(r['tps']) for r in pd]}; "
          f"pairwise ratios {[round(a['tps'] / b['tps'], 3) for a, b in zip(od, pd)]}")
    print(f"evaluation on the quickstart job: base {quick['base']:.2f} s (before training), tuned {quick['tuned']:.2f} s, "
          f"training {quick['train']:.2f} s")
    print(f"loop blocked (kubetune_trainer_checkpoint_blocked_seconds): background {bg['blocked']:.4f} s over {bg['checkpoints']} checkpoints, "
          f"sync {sync['blocked']:.4f} s over {sync['checkpoints']}")
    print("\n".join(stream_detail))
    print("\n".join(real_detail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
