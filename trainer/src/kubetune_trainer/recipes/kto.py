"""Kahneman-Tversky optimisation: TRL's `KTOTrainer` on unpaired rows
(prompt/completion/label). The reference model follows the same rules as DPO's
(`recipes/dpo.py`). KTO estimates its KL term from mismatched pairs within a
batch, so it needs a per-device batch of at least two rows."""

from __future__ import annotations

from pathlib import Path

from kubetune_contract.sections import KtoSpec

from ..config import TrainerConfig
from ..translate import to_lora_config, training_arguments


def to_kto_config(cfg: TrainerConfig, *, output_dir: Path | str, has_eval: bool, cuda: bool = False, bf16_supported: bool = False):
    """trl.KTOConfig: the shared training arguments plus beta and the two weights."""
    from trl import KTOConfig

    kto = cfg.kto or KtoSpec()
    return KTOConfig(
        **training_arguments(cfg, output_dir=output_dir, has_eval=has_eval, cuda=cuda, bf16_supported=bf16_supported),
        max_length=cfg.dataset.max_seq_length,
        beta=kto.beta,
        desirable_weight=kto.desirable_weight,
        undesirable_weight=kto.undesirable_weight,
        dataset_num_proc=None,
        trust_remote_code=cfg.model.trust_remote_code,
    )


def build(session, model, callbacks: list):
    from trl import KTOTrainer

    data = session.data
    args = to_kto_config(session.cfg, output_dir=session.local_checkpoints, has_eval=data.eval is not None,
                         cuda=session.cuda, bf16_supported=session.bf16_supported)
    return KTOTrainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                      processing_class=session.tokenizer, peft_config=to_lora_config(session.cfg), callbacks=callbacks)
