"""Group-relative policy optimisation: TRL's `GRPOTrainer` on prompts, with the
rule-based rewards of `spec.grpo` (`rewards.py`) summed with their weights.
Completions are sampled by the policy itself (transformers' generate; no vLLM)."""

from __future__ import annotations

from pathlib import Path

from ..config import TrainerConfig
from ..rewards import check_answers, reward_functions
from ..translate import to_lora_config, training_arguments


def to_grpo_config(cfg: TrainerConfig, *, output_dir: Path | str, cuda: bool = False, bf16_supported: bool = False):
    """trl.GRPOConfig: the shared training arguments plus sampling and the reward weights."""
    from trl import GRPOConfig

    g = cfg.grpo
    return GRPOConfig(
        **training_arguments(cfg, output_dir=output_dir, has_eval=False, cuda=cuda, bf16_supported=bf16_supported),
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length,
        temperature=g.temperature,
        beta=g.beta,
        reward_weights=[r.weight for r in g.rewards],
        # The reward functions read the answer column.
        remove_unused_columns=False,
        shuffle_dataset=False,
        trust_remote_code=cfg.model.trust_remote_code,
    )


def build(session, model, callbacks: list):
    from trl import GRPOTrainer

    cfg, data = session.cfg, session.data
    check_answers(list(data.train), cfg.grpo.rewards, cfg.dataset.train_label)
    args = to_grpo_config(cfg, output_dir=session.local_checkpoints, cuda=session.cuda, bf16_supported=session.bf16_supported)
    return GRPOTrainer(model=model, reward_funcs=reward_functions(cfg.grpo.rewards), args=args, train_dataset=data.train,
                       processing_class=session.tokenizer, peft_config=to_lora_config(cfg), callbacks=callbacks)
