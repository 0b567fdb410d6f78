"""A random-init Llama of a given shape, saved like a real checkpoint, for the
GPU benchmarks (bench/gpu_bench.py, bench/gpu_dpo_bench.py): bf16 on a GPU,
fp32 on CPU (their --smoke runs), with the tiny BPE tokenizer (vocabulary rows
above its size simply go unused)."""

from __future__ import annotations

from pathlib import Path


def make_random_llama(out: Path, tokenizer_root: Path, shape: dict, **config) -> Path:
    """Write the model to `out` once (a later call reuses it); `config` adds LlamaConfig fields."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from kubetune_trainer.testing.tiny_model import make_tiny_model

    if (out / "config.json").exists():
        return out
    tok = AutoTokenizer.from_pretrained(make_tiny_model(tokenizer_root))
    llama = LlamaConfig(**shape, tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id, **config)
    cuda = torch.cuda.is_available()
    with torch.device("cuda" if cuda else "cpu"):
        model = LlamaForCausalLM(llama).to(torch.bfloat16 if cuda else torch.float32)
    model.save_pretrained(out, max_shard_size="5GB")
    tok.save_pretrained(out)
    del model
    if cuda:
        torch.cuda.empty_cache()
    return out
