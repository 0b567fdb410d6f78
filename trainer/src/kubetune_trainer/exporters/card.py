"""The model card (`README.md`) written beside an exported adapter or merged
model, in the Hugging Face card format: YAML front matter (`base_model`,
`library_name`, tags, datasets, the evaluation in `model-index` form) and a
body with the evaluation table, the hyper-parameters and the training data's
content hash. Tools that read cards (the Hub, huggingface_hub's ModelCard)
read ours.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import yaml

from kubetune_contract.evaluation_metrics import METRICS, format_value, metric

if TYPE_CHECKING:
    from .inputs import ExportInputs


def base_model_name(uri: str) -> str:
    """The base model as its users know it: the Hub id for hf:// (org/name, or
    org/name/file.gguf for a GGUF file in a repository), else the URI."""
    return uri.removeprefix("hf://") if uri.startswith("hf://") else uri


def _model_index(inputs: ExportInputs) -> list[dict]:
    results = inputs.evaluation or {}
    # The test split's results only: a validation number was used to steer training.
    rows = {n: r for n, r in (results.get("metrics") or {}).items() if r.get("tuned") is not None and metric(n).split == "test"}
    if not rows:
        return []
    test = inputs.cfg.evaluation.test_uri or f"{inputs.cfg.dataset.train_label} (testSplit {inputs.cfg.evaluation.test_split})"
    metrics = [{"type": n, "value": round(float(r["tuned"]), 6), "name": metric(n).label} for n, r in rows.items()]
    return [{"name": inputs.cfg.job.name, "results": [{
        "task": {"type": "text-generation", "name": "Text generation"},
        "dataset": {"type": test, "name": f"held-out test set ({results.get('testRows')} rows)", "split": "test"},
        "metrics": metrics,
    }]}]


def front_matter(inputs: ExportInputs, library: str) -> dict:
    cfg = inputs.cfg
    meta = {
        "base_model": base_model_name(cfg.model.uri),
        "library_name": library,
        "pipeline_tag": "text-generation",
        "tags": list(dict.fromkeys(["kubetune", cfg.method, "sft", "text-generation", *(["lora", "peft"] if cfg.method != "full" else [])])),
        "datasets": [s.uri for s in cfg.dataset.training_sources],
    }
    index = _model_index(inputs)
    if index:
        meta["model-index"] = index
    return meta


def _evaluation_table(results: dict) -> list[str]:
    rows = results.get("metrics") or {}
    if not rows:
        return ["No evaluation data was given (spec.evaluation, dataset.evalSplit)."]
    lines = [f"On {results.get('testRows')} held-out test rows. {results.get('verdict', '')}", "",
             "| metric | base | tuned | change |", "|---|---|---|---|"]
    for name in METRICS:
        if name in rows:
            r = rows[name]
            gain = r.get("improvement")
            change = "" if gain is None else f"{abs(100 * gain):.0f}% {'better' if gain >= 0 else 'worse'}"
            lines.append(f"| {metric(name).label} | {format_value(name, r.get('base'))} | {format_value(name, r.get('tuned'))} | {change} |")
    return lines


def _hyper_parameters(inputs: ExportInputs) -> list[str]:
    cfg, t = inputs.cfg, inputs.cfg.training
    items = [("method", cfg.method), ("learning rate", t.learning_rate), ("schedule", t.lr_scheduler),
             ("epochs" if t.epochs else "steps", t.epochs or t.max_steps), ("batch size", t.batch_size),
             ("gradient accumulation", t.gradient_accumulation_steps), ("seed", t.seed), ("precision", inputs.precision)]
    if cfg.lora:
        items += [("LoRA rank", cfg.lora.r), ("LoRA alpha", cfg.lora.alpha), ("LoRA dropout", cfg.lora.dropout),
                  ("LoRA modules", ", ".join(cfg.lora.target_modules))]
    if cfg.quantization:
        items.append(("quantisation", f"{cfg.quantization.bits}-bit {cfg.quantization.quant_type}"))
    return ["| setting | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in items]]


def card_text(inputs: ExportInputs, library: str) -> str:
    cfg, stats = inputs.cfg, inputs.data_stats or {}
    what = f"A {'QLoRA' if cfg.method == 'qlora' else 'LoRA'} adapter for" if library == "peft" else "A fine-tune of"
    body = [
        f"# {cfg.job.name}", "",
        f"{what} `{base_model_name(cfg.model.uri)}`"
        f"{f' (a GGUF file, dequantised to {inputs.precision} to train on)' if cfg.model.gguf else ''}, trained with kubetune "
        f"(FineTuneJob `{cfg.job.namespace}/{cfg.job.name}`).", "",
        "## Evaluation", "", *_evaluation_table(inputs.evaluation or {}), "",
        "## Training", "", *_hyper_parameters(inputs), "",
        "## Data", "",
        f"Training data `{cfg.dataset.train_label}`: {stats.get('trainRows', '?')} training rows, "
        f"{stats.get('evalRows', 0)} validation rows, {stats.get('testRows', 0)} test rows; content sha256 `{stats.get('sha256', 'unknown')}`.",
    ]
    return "---\n" + yaml.safe_dump(front_matter(inputs, library), sort_keys=False) + "---\n\n" + "\n".join(body) + "\n"
