"""The trainer side of `kubetune generate` and `kubetune eval` (the operator's
CLI runs these with the trainer's python, as `kubetune run` does):

    python -m kubetune_trainer.model_tools generate --base URI (--adapter URI | --merged URI) --prompt TEXT ...
    python -m kubetune_trainer.model_tools eval --config CONFIG.json (--adapter URI | --merged URI) --out DIR

`generate` prompts the base and the tuned model side by side. `eval` runs a
config's evaluation section (the job's, rendered as the operator renders it)
against an existing output: the base and the tuned model on the same test
rows, with the same metrics, baselines and report as a training run. URIs are
file://, pvc:// or s3:// (AWS_* from the environment); everything runs on CPU
when there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

log = logging.getLogger("kubetune.tools")


def _local(uri: str, cache: Path) -> Path:
    """A model or adapter directory on this machine (s3:// downloaded once into `cache`;
    a base model's .gguf file dequantised once, as a training run does)."""
    from kubetune_contract.uris import is_gguf

    from .storage import fetch, local_path

    if is_gguf(uri):
        from .gguf_base import materialise

        path = local_path(uri) if uri.startswith(("file://", "pvc://")) else fetch(
            uri, cache / "gguf-files", s3_endpoint=os.environ.get("AWS_ENDPOINT_URL"), s3_region=os.environ.get("AWS_REGION"))
        return materialise(path, cache, "fp32", uri)
    if uri.startswith(("file://", "pvc://")):
        return local_path(uri)
    if uri.startswith("s3://"):
        return fetch(uri.rstrip("/"), cache / uri.removeprefix("s3://").replace("/", "_"),
                     s3_endpoint=os.environ.get("AWS_ENDPOINT_URL"), s3_region=os.environ.get("AWS_REGION"))
    return Path(uri)


class Pair:
    """The base and the tuned model: one PeftModel whose adapter is switched
    off for the base, or two models when the tuned one is merged."""

    def __init__(self, base_dir: Path, adapter: Path | None, merged: Path | None, cfg=None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(adapter or merged or base_dir))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        load = (lambda d: _training_model(d, cfg)) if cfg is not None else \
            (lambda d: AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32))
        if adapter is not None:
            from peft import PeftModel

            self.tuned = PeftModel.from_pretrained(load(base_dir), str(adapter))
            self.base = None
        else:
            self.tuned, self.base = load(merged), load(base_dir)

    def as_base(self):
        """(model, context) that answers as the base model."""
        if self.base is not None:
            return self.base, nullcontext()
        return self.tuned, self.tuned.disable_adapter()


def _training_model(directory: Path, cfg):
    from .model_loading import load_model

    return load_model(directory, cfg, precision="fp32", device_map="cpu")


# --------------------------------------------------------------------------- generate


def generate(args) -> int:
    from kubetune_contract.sections import GenerationSpec

    from .evaluation.generation import generate_answers

    cache = Path(args.cache)
    pair = Pair(_local(args.base, cache), _local(args.adapter, cache) if args.adapter else None,
                _local(args.merged, cache) if args.merged else None)
    prompts = [_prompt(pair.tokenizer, p, args.chat) for p in args.prompt]
    spec = GenerationSpec(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    model, context = pair.as_base()
    with context:
        base = generate_answers(model, pair.tokenizer, prompts, generation=spec, numeric_spec=None, batch_size=8, seed=args.seed)
    tuned = generate_answers(pair.tuned, pair.tokenizer, prompts, generation=spec, numeric_spec=None, batch_size=8, seed=args.seed)
    for prompt, b, t in zip(args.prompt, base.texts, tuned.texts):
        print(f"prompt: {prompt}\n  base : {b.strip()}\n  tuned: {t.strip()}\n")
    return 0


def _prompt(tokenizer, text: str, chat: bool) -> str:
    if chat and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    return text


# --------------------------------------------------------------------------- eval


def _trainer(cfg, model, tokenizer, data, scratch: Path):
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTTrainer

    from .recipes.sft import to_sft_config

    args = to_sft_config(cfg, output_dir=scratch, has_eval=data.eval is not None,
                         completion_only_loss=data.completion_only_loss if data.shape == "prompt_completion" else None,
                         assistant_only_loss=data.assistant_only_loss)
    args.eval_strategy = "no"  # evaluation only: nothing is trained
    trainer = SFTTrainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval, processing_class=tokenizer)
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    return trainer


def evaluate(args) -> int:
    from .config import load_config, redact
    from .data import prepare
    from .evaluation.diagnosis import Schedule
    from .evaluation.results import conclude
    from .evaluation.runner import measure, task_of
    from .model_loading import resolve_model_dir
    from .report import write_report

    cfg = load_config(args.config)
    cache = Path(args.cache)
    pair = Pair(resolve_model_dir(cfg, cache), _local(args.adapter, cache) if args.adapter else None,
                _local(args.merged, cache) if args.merged else None, cfg)
    data = prepare(cfg.dataset, pair.tokenizer, seed=cfg.training.seed, cache_dir=cache / "data", s3_endpoint=cfg.s3.endpoint,
                   s3_region=cfg.s3.region, evaluation=cfg.evaluation)
    task = task_of(data, pair.tokenizer, cfg.evaluation)
    tuned_trainer = _trainer(cfg, pair.tuned, pair.tokenizer, data, cache / "tuned")
    base_model, context = pair.as_base()
    base_trainer = tuned_trainer if base_model is pair.tuned else _trainer(cfg, base_model, pair.tokenizer, data, cache / "base")
    with context:  # the adapter switched off: the same model answers as the base
        base = measure(base_trainer, pair.tokenizer, task, cfg)
    tuned = measure(tuned_trainer, pair.tokenizer, task, cfg)
    done = conclude(task, base, tuned, [], Schedule(None, False), cfg.training.seed)
    summary = {"job": f"{cfg.job.namespace}/{cfg.job.name}", "model": cfg.model.uri, "evaluation": done.full,
               "base": base["metrics"], "final": tuned["metrics"], "data": data.stats}
    written = write_report(Path(args.out), summary, [], predictions=done.predictions, config=redact(cfg.to_json()))
    print(done.full["verdict"])
    print(_table(done.full))
    print(f"report: file://{Path(args.out).resolve() / 'report.html'} ({len(written)} files)")
    return 0


def _table(full: dict) -> str:
    from kubetune_contract.evaluation_metrics import format_value, metric

    lines = [f"{'metric':34} {'base':>10} {'tuned':>10}  better"]
    for name, row in full["metrics"].items():
        mark = {True: "yes", False: "no"}.get(row.get("better"), "")
        lines.append(f"{metric(name).label:34} {format_value(name, row.get('base')):>10} {format_value(name, row.get('tuned')):>10}  {mark}")
    for baseline, scores in full["baselines"].items():
        lines.append(f"{baseline + ' baseline':34} " + ", ".join(f"{metric(m).short} {format_value(m, v)}" for m, v in scores.items()))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kubetune_trainer.model_tools")
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("generate", "eval"):
        p = sub.add_parser(name)
        tuned = p.add_mutually_exclusive_group(required=True)
        tuned.add_argument("--adapter", help="the tuned LoRA adapter (file://, pvc:// or s3://)")
        tuned.add_argument("--merged", help="the tuned merged model")
        p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "kubetune-tools"), help="where downloads go")
    g = sub.choices["generate"]
    g.add_argument("--base", required=True, help="the base model")
    g.add_argument("--prompt", action="append", required=True)
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--chat", action="store_true", help="wrap each prompt in the tokenizer's chat template as a user turn")
    e = sub.choices["eval"]
    e.add_argument("--config", required=True, help="a trainer config (kubetune eval renders it from the manifest)")
    e.add_argument("--out", required=True, help="where the report, metrics.json and predictions.jsonl go")
    return ap


def main(argv: list[str] | None = None) -> int:
    from .errors import TrainerError

    import warnings

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("transformers", "datasets", "accelerate", "peft"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed, imported by transformers, would say so on stdout
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    args = parser().parse_args(argv)
    try:
        return generate(args) if args.command == "generate" else evaluate(args)
    except TrainerError as exc:
        print(f"kubetune {args.command}: {exc.reason}: {exc.message}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
