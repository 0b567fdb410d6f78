"""Supervised fine-tuning: TRL's `SFTTrainer` on the rows `data.prepare` made
(prompt/completion, messages or text), with loss on the answers only."""

from __future__ import annotations

from pathlib import Path

from ..config import TrainerConfig
from ..translate import to_lora_config, training_arguments


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
    overrides: dict | None = None,
):
    """trl.SFTConfig: the shared training arguments plus SFT's data handling
    (`overrides`: what a streamed dataset changes, `stream_train.sft_overrides`)."""
    from trl import SFTConfig

    fields = dict(
        **training_arguments(cfg, output_dir=output_dir, has_eval=has_eval, cuda=cuda, bf16_supported=bf16_supported),
        max_length=cfg.dataset.max_seq_length,
        packing=cfg.dataset.packing,
        # bfd packing is padding-free: sequences are concatenated with
        # position_ids restarting per example, so no pad tokens at all.
        packing_strategy="bfd",
        dataset_text_field=dataset_text_field,
        completion_only_loss=completion_only_loss,
        assistant_only_loss=assistant_only_loss,
        # Our data module already shuffles/splits by seed; TRL must not reorder.
        shuffle_dataset=False,
        dataset_num_proc=None,
        trust_remote_code=cfg.model.trust_remote_code,
    )
    return SFTConfig(**{**fields, **(overrides or {})})


def build(session, model, callbacks: list):
    """SFTTrainer on the session's data; the adapter (if any) from the config."""
    from trl import SFTTrainer

    from ..data import stream_train

    data = session.data
    args = to_sft_config(session.cfg, output_dir=session.local_checkpoints, has_eval=data.eval is not None,
                         cuda=session.cuda, bf16_supported=session.bf16_supported,
                         completion_only_loss=data.completion_only_loss if data.shape == "prompt_completion" else None,
                         assistant_only_loss=data.assistant_only_loss,
                         overrides=stream_train.sft_overrides(session.cfg, data, session.topo.world_size) if data.stream else None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                         processing_class=session.tokenizer, peft_config=to_lora_config(session.cfg), callbacks=callbacks)
    if data.stream:
        stream_train.attach(trainer, data, session.cfg)
    return trainer
