"""Pure translators from `TrainerConfig` to the library configs every recipe shares.

`BitsAndBytesConfig`, `LoraConfig`, the precision, the DeepSpeed JSON and the
`TrainingArguments` fields common to all of TRL's trainer configs; each recipe
adds its objective's own fields (`recipes/sft.py`: `to_sft_config`). No side
effects and no training here, so each is unit-tested with plain asserts.
torch/peft are imported inside the functions: these signatures stay
importable without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubetune_contract.config import TrainerConfig


def to_bnb_config(cfg: TrainerConfig):
    """BitsAndBytesConfig for qlora (4-bit) or 8-bit lora; None when not quantising."""
    q = cfg.quantization
    if q is None:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if q.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype),
        # Keep non-quantised weights (norms, embeddings) in the compute dtype.
        bnb_4bit_quant_storage=torch.uint8,
    )


def to_lora_config(cfg: TrainerConfig):
    """peft.LoraConfig; None for full fine-tuning, and with model.adapterFrom
    (the model arrives with that adapter loaded, trainable: `adapter_source`)."""
    lora = cfg.lora
    if lora is None or cfg.model.adapter_from:
        return None
    from peft import LoraConfig

    targets: Any = "all-linear" if lora.target_modules == ["all-linear"] else list(lora.target_modules)
    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
        use_dora=lora.use_dora, modules_to_save=list(lora.modules_to_save) or None,
        bias="none", task_type="CAUSAL_LM",
    )


def resolve_precision(cfg: TrainerConfig, cuda: bool, bf16_supported: bool) -> str:
    """auto → bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    p = cfg.training.precision
    if p != "auto":
        return p
    if not cuda:
        return "fp32"
    return "bf16" if bf16_supported else "fp16"


def render_deepspeed_config(cfg: TrainerConfig, precision: str) -> dict | None:
    """The DeepSpeed JSON for strategy deepspeed, with "auto" where the HF Trainer fills values in."""
    if cfg.distributed.strategy != "deepspeed":
        return None
    ds = cfg.distributed.deepspeed
    stage = ds.zero_stage
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage >= 2:
        zero.update(reduce_bucket_size="auto", allgather_bucket_size=5e8 if stage == 2 else None)
        zero = {k: v for k, v in zero.items() if v is not None}
    if stage == 3:
        zero.update(
            stage3_prefetch_bucket_size="auto", stage3_param_persistence_threshold="auto",
            # Save a consolidated 16-bit model next to the sharded state so the
            # final adapter/model can be written without a conversion step.
            stage3_gather_16bit_weights_on_model_save=True,
        )
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        # "auto" lets the Trainer's bf16/fp16 flags decide; a literal here
        # mismatches them (STACK.md).
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
        # Use the model's own torch optimizer on CPU, not DeepSpeed's CPU Adam,
        # unless optimizer state is offloaded (that needs DeepSpeedCPUAdam).
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def training_arguments(cfg: TrainerConfig, *, output_dir: Path | str, has_eval: bool, cuda: bool = False,
                       bf16_supported: bool = False) -> dict[str, Any]:
    """The `transformers.TrainingArguments` fields of this run, for any TRL trainer
    config. Checkpoints are written locally every checkpoint.everySteps; the
    checkpoint callback uploads them."""
    t = cfg.training
    precision = resolve_precision(cfg, cuda, bf16_supported)
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float < 1 is a ratio of total steps (transformers 5)
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        # transformers 5 renamed gradient_checkpointing; TRL's configs still
        # default the old alias to True, so both are set explicitly.
        gradient_checkpointing=t.gradient_checkpointing,
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda,
        logging_strategy="steps",
        logging_steps=t.log_every_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.checkpoint.every_steps,
        # Local copies only; the store keeps `keepLast`. Two so the uploader's
        # hard-linked snapshot of the previous one is never the only copy.
        save_total_limit=2,
        eval_strategy=("steps" if t.eval_every_steps else "epoch") if has_eval else "no",
        eval_steps=t.eval_every_steps if has_eval and t.eval_every_steps else None,
        # Never the Trainer's own integrations: they call the tracker on the loop
        # (kubetune_trainer.tracking calls it off the loop, with short timeouts).
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        run_name=f"{cfg.job.namespace}/{cfg.job.name}",
    )
    if cfg.dataset.sources:
        # The mix is already shuffled by training.seed (mixing.plan); reading it in
        # that order makes each source's rows consumed exact. Otherwise each
        # trainer's own default stands (KTO's is sequential, and it needs it).
        kwargs["train_sampling_strategy"] = "sequential"
    if t.keep_best and has_eval:
        # The Trainer tracks the best validation loss and keeps that checkpoint
        # locally; best_checkpoint.KeepBest and .restore do the rest.
        kwargs.update(metric_for_best_model="eval_loss", greater_is_better=False)
    if t.max_steps is not None:
        kwargs["max_steps"] = t.max_steps
    else:
        kwargs["num_train_epochs"] = t.resolved_epochs
    return {**kwargs, **_parallelism(cfg, precision, cuda)}


def _parallelism(cfg: TrainerConfig, precision: str, cuda: bool) -> dict[str, Any]:
    strategy = cfg.distributed.strategy
    kwargs: dict[str, Any] = {}
    if strategy in ("ddp", "deepspeed") and not cuda:
        kwargs["ddp_backend"] = "gloo"
    if strategy == "ddp":
        # LoRA leaves most parameters frozen; unused-parameter search is wasted work.
        kwargs["ddp_find_unused_parameters"] = False
    if strategy == "deepspeed":
        kwargs["deepspeed"] = render_deepspeed_config(cfg, precision)
    return kwargs
