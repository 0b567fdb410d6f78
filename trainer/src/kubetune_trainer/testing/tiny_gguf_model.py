"""A tiny Llama that llama.cpp's converter and quantizer take: a SentencePiece
tokenizer (the converter identifies home-made BPE tokenizers by a hash of
their pre-tokenizer and refuses ours) and every tensor width a multiple of
256 (K-quants such as q4_k_m quantize rows in blocks of 256).

Same synthetic lookup task and chat template as `tiny_model`, so the trainer's
tiny datasets train it; the tokenizer is trained here with `sentencepiece`
(a GGUF-export dependency) and loaded back through `from_pretrained`.
"""

from __future__ import annotations

import io
from pathlib import Path

from .tiny_model import CHAT_TEMPLATE, _corpus

ROLE_TOKENS = ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
WIDTH = 256


def train_sentencepiece(path: Path, vocab_size: int = 512) -> Path:
    """A byte-fallback BPE SentencePiece model (as Llama 2's) written to `path`."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus() * 4), model_writer=model, model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, character_coverage=1.0, split_digits=True, add_dummy_prefix=True,
        pad_id=0, unk_id=1, bos_id=2, eos_id=3, user_defined_symbols=ROLE_TOKENS, minloglevel=2)
    path.write_bytes(model.getvalue())
    return path


def make_tiny_spm_model(directory: str | Path, *, layers: int = 2, seed: int = 0) -> Path:
    """Write a random-init Llama (hidden 256, MLP 512, head dim 64) with a
    SentencePiece tokenizer (tokenizer.model and its tokenizer.json, pad/eos,
    the chat template) to `directory`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    train_sentencepiece(directory / "tokenizer.model")
    (directory / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "<|end|>", "unk_token": "<unk>", "pad_token": "<pad>"}')
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)  # a peaky head like a pretrained one (see tiny_model)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    return directory
