"""Odds-ratio preference optimisation: TRL's `ORPOTrainer` (in `trl.experimental`
in TRL 1.x) on pairwise rows. ORPO adds an odds-ratio term to the SFT loss on
the chosen answer, so it needs no reference model at all, for any method."""

from __future__ import annotations

from pathlib import Path

from kubetune_contract.sections import PreferenceSpec

from ..config import TrainerConfig
from ..translate import to_lora_config, training_arguments


def to_orpo_config(cfg: TrainerConfig, *, output_dir: Path | str, has_eval: bool, cuda: bool = False, bf16_supported: bool = False):
    """trl ORPOConfig: the shared training arguments plus beta (the odds-ratio weight)."""
    from trl.experimental.orpo import ORPOConfig

    return ORPOConfig(
        **training_arguments(cfg, output_dir=output_dir, has_eval=has_eval, cuda=cuda, bf16_supported=bf16_supported),
        max_length=cfg.dataset.max_seq_length,
        beta=(cfg.preference or PreferenceSpec()).beta,
        dataset_num_proc=None,
        trust_remote_code=cfg.model.trust_remote_code,
    )


def build(session, model, callbacks: list):
    from trl.experimental.orpo import ORPOTrainer

    data = session.data
    args = to_orpo_config(session.cfg, output_dir=session.local_checkpoints, has_eval=data.eval is not None,
                          cuda=session.cuda, bf16_supported=session.bf16_supported)
    return ORPOTrainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                       processing_class=session.tokenizer, peft_config=to_lora_config(session.cfg), callbacks=callbacks)
