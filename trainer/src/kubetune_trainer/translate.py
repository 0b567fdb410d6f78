"""Pure translators from `TrainerConfig` to the library configs.

No side effects and no training here, so each is unit-tested with plain
asserts. torch/peft/trl are imported inside the functions: the config module
and these signatures stay importable without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import TrainerConfig

DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


def to_bnb_config(cfg: TrainerConfig):
    """BitsAndBytesConfig for qlora (4-bit) or 8-bit lora; None when not quantising."""
    q = cfg.resolved_quantization
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
        bnb_4bit_compute_dtype=getattr(torch, DTYPES[q.compute_dtype]),
        # Keep non-quantised weights (norms, embeddings) in the compute dtype.
        bnb_4bit_quant_storage=torch.uint8,
    )


def to_lora_config(cfg: TrainerConfig):
    """peft.LoraConfig; None for full fine-tuning."""
    lora = cfg.resolved_lora
    if lora is None:
        return None
    from peft import LoraConfig

    targets: Any = "all-linear" if lora.target_modules == ["all-linear"] else list(lora.target_modules)
    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
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
    stage = ds.zero_stage if ds else 2
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
    if ds and ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if ds and ds.offload_params:
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


def to_sft_config(
    cfg: TrainerConfig,
    *,
    output_dir: Path | str,
    has_eval: bool,
    cuda: bool = False,
    bf16_supported: bool = False,
    completion_only_loss: bool | None = None,
    assistant_only_loss: bool = False,
    dataset_text_field: str = "text",
):
    """trl.SFTConfig for this run. Checkpoints are written locally every
    checkpoint.everySteps; the checkpoint callback uploads them."""
    from trl import SFTConfig

    t = cfg.training
    precision = resolve_precision(cfg, cuda, bf16_supported)
    strategy = cfg.distributed.strategy
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
        # transformers 5 renamed gradient_checkpointing; TRL's SFTConfig still
        # defaults the old alias to True, so both are set explicitly.
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
        report_to=[] if cfg.tracking.backend == "none" else [cfg.tracking.backend],
        disable_tqdm=True,
        dataloader_num_workers=0,
        max_length=cfg.data.max_seq_length,
        packing=cfg.data.packing,
        # bfd packing is padding-free: sequences are concatenated with
        # position_ids restarting per example, so no pad tokens at all.
        packing_strategy="bfd",
        dataset_text_field=dataset_text_field,
        completion_only_loss=completion_only_loss,
        assistant_only_loss=assistant_only_loss,
        # Our data module already shuffles/splits by seed; TRL must not reorder.
        shuffle_dataset=False,
        dataset_num_proc=None,
        run_name=f"{cfg.job.namespace}/{cfg.job.name}",
        trust_remote_code=cfg.model.trust_remote_code,
    )
    if t.max_steps is not None:
        kwargs["max_steps"] = t.max_steps
    else:
        kwargs["num_train_epochs"] = t.epochs if t.epochs is not None else 3.0
    if strategy in ("ddp", "deepspeed", "fsdp") and not cuda:
        kwargs["ddp_backend"] = "gloo"
    if strategy == "ddp":
        # LoRA leaves most parameters frozen; unused-parameter search is wasted work.
        kwargs["ddp_find_unused_parameters"] = False
    if strategy == "deepspeed":
        kwargs["deepspeed"] = render_deepspeed_config(cfg, precision)
    if strategy == "fsdp":
        kwargs["fsdp"] = "full_shard auto_wrap"
        kwargs["fsdp_config"] = {"version": 2, "reshard_after_forward": True, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "state_dict_type": "SHARDED_STATE_DICT", "activation_checkpointing": t.gradient_checkpointing}
        kwargs["gradient_checkpointing"] = kwargs["activation_checkpointing"] = False  # FSDP's own activation checkpointing does it
    return SFTConfig(**kwargs)
