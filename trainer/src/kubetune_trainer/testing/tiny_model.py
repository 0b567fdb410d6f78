"""A tiny Llama-style model and a learnable synthetic dataset, made on the spot.

Tests, the demo and the benches use these instead of a hub model: the model is
random-init (hidden 128, 2 layers) with a BPE tokenizer trained here on the same
synthetic language, saved with `save_pretrained` and loaded back through the
same `from_pretrained` path as real models. The dataset is a deterministic
lookup task (a made-up word → its code word), so eval loss falls clearly within
a few dozen steps.

The preference rows are another task: a word of the code tongue preferred over
a word of the source tongue, every row with a prompt word and two answer words
of its own (fresh words of three syllables, none repeated in the first 512
rows), so held-out rows share no prompt and no answer with the training rows:
what carries over is the preference, not a memorised pair.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

N_KEYS = 24
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}<|assistant|>{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{% else %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<pad>", "<s>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
PROMPTS = ["Translate {k}.", "What is the code for {k}?", "Code of {k}:", "Give the code word for {k}."]


def _words(seed: int, n: int, syllables: tuple[str, ...]) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        w = "".join(rng.choice(syllables) for _ in range(2))
        if w not in out:
            out.append(w)
    return out


SOURCE_SYLLABLES = ("ka", "zo", "ri", "mu", "te", "lo", "ba", "ne")
CODE_SYLLABLES = ("qi", "vu", "xe", "pa", "do", "gy", "hu", "sy")
KEYS = _words(1, N_KEYS, SOURCE_SYLLABLES)
VALUES = _words(2, N_KEYS, CODE_SYLLABLES)
# A fixed permutation: key i ↦ value (7i+3) mod N. Nothing a random init knows.
MAPPING = {k: VALUES[(7 * i + 3) % N_KEYS] for i, k in enumerate(KEYS)}
NUMERIC = {k: float((5 * i + 2) % N_KEYS) for i, k in enumerate(KEYS)}


def _corpus() -> list[str]:
    lines = []
    for k, v in MAPPING.items():
        for p in PROMPTS:
            lines.append(f"{p.format(k=k)} {v}")
        lines.append(f"### Instruction:\nTranslate the word.\n\n### Input:\n{k}\n\n### Response:\n{v}")
    lines += [" ".join(str(n) for n in range(i, i + 10)) for i in range(0, 100, 10)]
    return lines


def make_tiny_tokenizer(corpus: list[str] | None = None, split_digits: bool = False):
    """A fast BPE tokenizer (pad/eos/chat template) trained on `corpus` (default:
    the lookup task's text); with `split_digits` every digit is its own token,
    so numbers span several tokens (as in most real tokenizers' vocabularies
    for long numbers)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]) if split_digits else byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator((corpus or _corpus()) * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|end|>", pad_token="<pad>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 1024
    return fast


def make_tiny_model(directory: str | Path, *, hidden: int = 128, layers: int = 2, seed: int = 0,
                    corpus: list[str] | None = None, split_digits: bool = False) -> Path:
    """Write a random-init Llama model + `make_tiny_tokenizer(corpus, split_digits)` to directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fast = make_tiny_tokenizer(corpus, split_digits)
    fast.save_pretrained(directory)

    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Random init leaves logits within about ±2 (unit-norm hidden state times a
    # 0.02-std head), which caps how far LoRA (which leaves the head alone) can
    # push the loss. A pretrained head is peaky; scale ours like one.
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    model.generation_config.pad_token_id = fast.pad_token_id
    model.save_pretrained(directory)
    return directory


def make_rows(fmt: str, n: int, seed: int = 0) -> list[dict]:
    """n rows of the lookup task in one of the trainer's formats."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = KEYS[i % N_KEYS]
        v = MAPPING[k]
        p = rng.choice(PROMPTS).format(k=k)
        if fmt == "instruction":
            rows.append({"instruction": "Translate the word.", "input": k, "output": v})
        elif fmt == "completion":
            rows.append({"prompt": p, "completion": " " + v})
        elif fmt == "chat":
            rows.append({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": v}]})
        elif fmt == "text":
            rows.append({"text": f"{p} {v}"})
        elif fmt in ("preference", "unpaired"):
            return _preference_rows(fmt, n, rng)
        elif fmt == "prompts":  # GRPO: the numeric task's prompts, its number as the answer
            rows.append({"prompt": f"Number for {k}:", "answer": str(int(NUMERIC[k]))})
        elif fmt == "numeric":
            rows.append({"prompt": f"Number for {k}:", "completion": f" {int(NUMERIC[k])}"})
        else:
            raise ValueError(f"unknown format {fmt}")
    return rows


def _three_syllables(syllables: tuple[str, ...]) -> set[str]:
    return {"".join(w) for w in itertools.product(syllables, repeat=3)}


def _fresh(pool: set[str], n: int, rng: random.Random) -> list[str]:
    """n words of the pool in a random order, each once until all of them are
    used; the first n of a longer draw are the n-word draw (n within the pool)."""
    ordered = sorted(pool)
    out: list[str] = []
    while len(out) < n:
        out += rng.sample(ordered, len(ordered))
    return out[:n]


def _preference_rows(fmt: str, n: int, rng: random.Random) -> list[dict]:
    """The code tongue preferred over the source tongue, a rule of the answer
    alone: a random-init model learns it within a few dozen steps and it holds on
    rows whose words it never saw. "preference": one pair a row; "unpaired" (KTO):
    rows in couples of one prompt, its code word desirable, its source word not.
    The prompt's word mixes both tongues' syllables, so it hints at neither.
    The rows of make_rows(fmt, n + m, seed)[n:] share no word with
    make_rows(fmt, n, seed) (up to 512 pairs): a held-out set by construction."""
    pairs = (n + 1) // 2 if fmt == "unpaired" else n
    source, code = _three_syllables(SOURCE_SYLLABLES), _three_syllables(CODE_SYLLABLES)
    topics = _fresh(_three_syllables(SOURCE_SYLLABLES + CODE_SYLLABLES) - source - code, pairs, rng)
    chosen, rejected = _fresh(code, pairs, rng), _fresh(source, pairs, rng)
    rows: list[dict] = []
    for topic, good, bad in zip(topics, chosen, rejected):
        p = rng.choice(PROMPTS).format(k=topic)
        if fmt == "preference":
            rows.append({"prompt": p, "chosen": " " + good, "rejected": " " + bad})
        else:
            rows += [{"prompt": p, "completion": " " + good, "label": True}, {"prompt": p, "completion": " " + bad, "label": False}]
    return rows[:n]


def make_tiny_dataset(path: str | Path, fmt: str = "completion", n: int = 192, seed: int = 0) -> Path:
    """Write make_rows(fmt, n) as JSONL (or .json/.csv/.parquet by suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = make_rows(fmt, n, seed)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix in (".csv", ".parquet"):
        import pandas as pd

        df = pd.DataFrame(rows)
        df.to_csv(path, index=False) if path.suffix == ".csv" else df.to_parquet(path)
    else:
        raise ValueError(f"unsupported suffix {path.suffix}")
    return path
