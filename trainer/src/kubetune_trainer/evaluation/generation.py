"""Answers from a model for a list of prompts: batched, left-padded generation
(greedy unless a temperature is set, then sampled with the job's seed so the
base and the tuned model draw from the same random stream), and, for numeric
metrics, the number each answer gives (`numeric.read_number`).

Generation runs on the KV cache (the training model has it switched off) in
batches of up to GENERATION_TOKENS prompt-and-answer tokens, at least the
training batch: a decoding step costs about as much for 8 rows as for 40 on
a CPU or a GPU that is not full, so fewer, wider batches finish sooner. A
batch stops as soon as every row has ended its answer (end of sequence).
For top-k numeric decoding it keeps its KV cache and logits, from which the
decoder reads on at each answer's position (`numeric.Prefilled`).

Every rank calls this with the same prompts: under DeepSpeed ZeRO-3 each
forward gathers parameters from all ranks, so generation is collective, and
`generate` keeps the ranks in step (synced_gpus) while they finish.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kubetune_contract.sections import GenerationSpec, NumericSpec

from . import numeric

# The most prompt-and-answer tokens generated for at once: the KV cache it
# needs is small next to training's activations (0.5 GB for an 8B model in bf16).
GENERATION_TOKENS = 4096


@dataclass
class Answers:
    texts: list[str]
    numbers: list[float | None] = field(default_factory=list)  # with numeric decoding: each answer's number, None if it had none


def _left_padded(tokenizer, prompts: Sequence[str], device):
    import torch

    encoded = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    width = max(len(e) for e in encoded)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=device)
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
    return encoded, ids, mask


def _synced() -> bool:
    """ZeRO-3 across ranks: each rank keeps stepping until all have finished."""
    import torch.distributed as dist
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled() and dist.is_initialized() and dist.get_world_size() > 1


def generate_answers(model, tokenizer, prompts: Sequence[str], *, generation: GenerationSpec, numeric_spec: NumericSpec | None,
                     batch_size: int, seed: int) -> Answers:
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = Answers(texts=[])
    torch.manual_seed(seed)
    rows = rows_per_batch(tokenizer, prompts, generation.max_new_tokens, batch_size)
    try:
        with torch.no_grad():
            for start in range(0, len(prompts), rows):
                encoded, ids, mask = _left_padded(tokenizer, prompts[start:start + rows], device)
                sampled = generation.temperature > 0
                sampling = {"do_sample": True, "temperature": generation.temperature} if sampled else {"do_sample": False}
                keep = _keep_for_decoder(numeric_spec, len(encoded), len(tokenizer), generation.max_new_tokens)
                output = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=generation.max_new_tokens,
                                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                        use_cache=True, synced_gpus=_synced(), return_dict_in_generate=keep, output_logits=keep,
                                        **sampling)
                seqs = output.sequences if keep else output
                generated = [_strip(seqs[row, ids.shape[1]:].tolist(), tokenizer) for row in range(len(encoded))]
                out.texts += [tokenizer.decode(g, skip_special_tokens=True) for g in generated]
                if numeric_spec is not None:
                    out.numbers += numeric.read_numbers(model, tokenizer, encoded, generated, k=numeric_spec.top_k,
                                                        max_tokens=generation.max_new_tokens,
                                                        prefilled=numeric.Prefilled.of(output, mask) if keep else None)
                del output  # the KV cache, before the next batch makes its own
    finally:
        model.train(was_training)
    return out


def _keep_for_decoder(numeric_spec: NumericSpec | None, rows: int, vocabulary: int, max_new_tokens: int) -> bool:
    """Whether generation keeps its KV cache and logits for the top-k numeric
    decoder, which then reads on from them instead of running over the prompts again."""
    return numeric_spec is not None and numeric_spec.top_k > 1 and numeric.Prefilled.fits(rows, vocabulary, max_new_tokens)


def rows_per_batch(tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int) -> int:
    """Rows generated for at once: as many as GENERATION_TOKENS hold at the longest
    prompt plus the answer, never fewer than the training batch."""
    if not prompts:
        return batch_size
    longest = max(len(tokenizer(p, add_special_tokens=True)["input_ids"]) for p in prompts)
    return max(batch_size, GENERATION_TOKENS // (longest + max_new_tokens))


def _strip(generated: list[int], tokenizer) -> list[int]:
    """The answer's tokens: up to the first end-of-sequence (the rest is padding)."""
    eos = tokenizer.eos_token_id
    return generated[: generated.index(eos)] if eos in generated else generated
