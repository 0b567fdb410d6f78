"""Direct preference optimisation: TRL's `DPOTrainer` on pairwise rows
(prompt/chosen/rejected, strings or messages).

The reference model is TRL's choice for the model it is given: with a LoRA
config, the base with the adapter disabled (no second copy of the weights);
with a PEFT model that already carries an adapter, a frozen copy of that
adapter; with method full, a frozen copy of the base loaded from its path.
"""

from __future__ import annotations

from pathlib import Path

from kubetune_contract.sections import PreferenceSpec

from ..config import TrainerConfig
from ..translate import to_lora_config, training_arguments


def to_dpo_config(cfg: TrainerConfig, *, output_dir: Path | str, has_eval: bool, cuda: bool = False, bf16_supported: bool = False):
    """trl.DPOConfig: the shared training arguments plus the preference settings."""
    from trl import DPOConfig

    pref = cfg.preference or PreferenceSpec()
    return DPOConfig(
        **training_arguments(cfg, output_dir=output_dir, has_eval=has_eval, cuda=cuda, bf16_supported=bf16_supported),
        max_length=cfg.dataset.max_seq_length,
        beta=pref.beta,
        loss_type=[pref.loss_type or "sigmoid"],
        dataset_num_proc=None,
        trust_remote_code=cfg.model.trust_remote_code,
    )


def build(session, model, callbacks: list):
    from trl import DPOTrainer

    data = session.data
    args = to_dpo_config(session.cfg, output_dir=session.local_checkpoints, has_eval=data.eval is not None,
                         cuda=session.cuda, bf16_supported=session.bf16_supported)
    return DPOTrainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                      processing_class=session.tokenizer, peft_config=to_lora_config(session.cfg), callbacks=callbacks)
