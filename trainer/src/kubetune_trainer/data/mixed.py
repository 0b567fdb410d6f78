"""`dataset.sources`: each source read and pre-flighted on its own (`source_rows.read_source`,
the same checks as trainUri, with its own file:line errors), split per source
(testSplit, then evalSplit) so no held-out row can reach training through any
source, then mixed by weight (`mixing.plan`).

Formats mix when they make one training shape: instruction and completion
rows are both prompt/completion; mixed with chat sources they become a user
turn and an assistant turn, so every row goes through the chat template. Text
mixes only with text (it trains on every token, the others on the answers).
"""

from __future__ import annotations

from pathlib import Path

from kubetune_contract.sections import DatasetSpec, EvaluationSpec

from ..errors import InvalidDataset
from . import mixing
from .held_out import held_out_file_rows, held_out_test_rows, hold_out_test, split
from .normalise import dedupe, has_generation_markers
from .preflight import dataset_format
from .prepared import PreparedData, finish
from .read import load_table
from .source_rows import read_source

# Formats that train on one shape: the training rows they normalise to.
FAMILY = {"instruction": "prompt/completion", "completion": "prompt/completion", "chat": "chat"}
MIXABLE = {"prompt/completion", "chat"}


def family(fmt: str) -> str:
    return FAMILY.get(fmt, fmt)


def source_seed(seed: int, index: int) -> int:
    """Each source's splits draw apart from the others' (the first source's: the job's seed)."""
    return seed + 7_919 * index


def mixed_format(formats: list[str], uris: list[str]) -> str:
    """The format the mix trains as (chat when any source is chat), or a refusal naming the two sources that cannot be one shape."""
    for i, fmt in enumerate(formats):
        for j in range(i):
            a, b = family(formats[j]), family(fmt)
            if a != b and not {a, b} <= MIXABLE:
                raise InvalidDataset(
                    f"dataset.sources[{j}] ({uris[j]}, {formats[j]} rows) and dataset.sources[{i}] ({uris[i]}, {fmt} rows) cannot be "
                    f"trained as one shape: {_what(formats[j])}, {_what(fmt)}; instruction, completion and chat sources mix, "
                    "text mixes only with text")
    if "chat" in formats:
        return "chat"
    return formats[0] if len(set(formats)) == 1 or family(formats[0]) != "prompt/completion" else "completion"


def _what(fmt: str) -> str:
    if fmt == "text":
        return "text trains on every token"
    if family(fmt) in MIXABLE:
        return f"{fmt} trains on the answers"
    return f"{fmt} rows are their own shape"


def as_chat(row: dict, use_messages: bool) -> dict:
    """A string prompt/completion row as one user and one assistant turn (chat rows stay as they are)."""
    if "messages" in row or isinstance(row.get("prompt"), list):
        return row
    user, assistant = {"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}
    return {"messages": [user, assistant]} if use_messages else {"prompt": [user], "completion": [assistant]}


def prepare_mixed(cfg: DatasetSpec, tokenizer, *, seed: int, cache_dir: Path, s3_endpoint=None, s3_region=None,
                  evaluation: EvaluationSpec | None = None, objective: str = "sft") -> PreparedData:
    sources = cfg.training_sources
    reads = [_read(i, src, tokenizer, cache_dir, s3_endpoint, s3_region, evaluation, objective) for i, src in enumerate(sources)]
    fmt = mixed_format([r.format for r in reads], [s.uri for s in sources])
    use_messages = fmt == "chat" and has_generation_markers(getattr(tokenizer, "chat_template", None))
    conform = (lambda rows: [as_chat(r, use_messages) for r in rows]) if fmt == "chat" else (lambda rows: rows)

    train, valid, test, per_source = _split_sources(cfg, reads, evaluation, seed, conform)

    plan = mixing.plan([len(rows) for rows in train], [s.weight for s in sources], seed)
    for entry, share, count in zip(per_source, plan.shares, plan.counts):
        entry.update(shareAsked=round(share, 4), rowsInEpoch=count)
    mixed = [train[source][row] for source, row in plan.order]

    if cfg.eval_uri:
        valid = conform(_held_out_file(cfg.eval_uri, cfg, fmt, use_messages, objective, cache_dir, s3_endpoint, s3_region))
    if evaluation is not None and evaluation.test_uri:
        test_fmt = _file_format(evaluation.test_uri, cfg, fmt, objective, cache_dir, s3_endpoint, s3_region)
        _, rows = held_out_test_rows(evaluation, [], test_fmt, cfg, use_messages, seed, cache_dir, s3_endpoint, s3_region)
        test = conform(rows)

    stats = {"format": "+".join(dict.fromkeys(r.format for r in reads)), "rows": sum(r.rows_read for r in reads),
             "droppedBlank": sum(r.dropped for r in reads), "duplicatesDropped": sum(e["duplicatesDropped"] for e in per_source),
             "sha256": _combined_hash([r.sha256 for r in reads]), "sources": per_source}
    data = finish(mixed, valid, test, fmt=fmt, use_messages=use_messages, cfg=cfg, tokenizer=tokenizer, stats=stats)
    data.mix = plan
    return data


def _split_sources(cfg: DatasetSpec, reads: list, evaluation: EvaluationSpec | None, seed: int, conform):
    """Each source deduplicated and split on its own (testSplit, then evalSplit):
    (training rows per source, validation rows, test rows, each source's statistics)."""
    train, valid, test, per_source = [], [], [], []
    for i, (src, read) in enumerate(zip(cfg.training_sources, reads)):
        rows, duplicates = dedupe(read.rows) if cfg.dedupe else (read.rows, 0)
        if not rows:
            raise InvalidDataset(f"dataset.sources[{i}] ({src.uri}): no usable rows ({read.dropped} had a blank required field)")
        where = f"dataset.sources[{i}] ({src.uri})"
        if evaluation is not None and evaluation.test_split:
            rows, held = hold_out_test(rows, evaluation.test_split, source_seed(seed, i), where)
            test += conform(held)
        if cfg.eval_split and not cfg.eval_uri:
            rows, held = split(rows, cfg.eval_split, source_seed(seed, i))
            valid += conform(held)
        train.append(conform(rows))
        per_source.append({"uri": src.uri, "format": read.format, "weight": src.weight, "rowsRead": read.rows_read,
                           "droppedBlank": read.dropped, "duplicatesDropped": duplicates, "trainRows": len(rows)})
    return train, valid, test, per_source


def _read(i: int, src, tokenizer, cache_dir, s3_endpoint, s3_region, evaluation, objective):
    """One source pre-flighted as trainUri is; its problems say which source (and its file:line)."""
    try:
        return read_source(src.uri, src, tokenizer, cache_dir=cache_dir, s3_endpoint=s3_endpoint, s3_region=s3_region,
                           evaluation=evaluation, objective=objective)
    except InvalidDataset as exc:
        raise InvalidDataset(f"dataset.sources[{i}]: {exc}".replace("set dataset.format and dataset.columns",
                                                                       f"set dataset.sources[{i}].format and .columns")) from None


def _file_format(uri: str, cfg: DatasetSpec, mix_format: str, objective: str, cache_dir, s3_endpoint, s3_region) -> str:
    """A held-out file's format (dataset.format, or detected with dataset.columns); it must train as the mix does."""
    raw = load_table(uri, cache_dir, s3_endpoint, s3_region)
    if len(raw) == 0:
        raise InvalidDataset(f"{uri}: the dataset is empty")
    fmt = dataset_format(cfg, raw.column_names, uri, objective)
    if family(fmt) != family(mix_format) and not ({family(fmt), family(mix_format)} <= MIXABLE and mix_format == "chat"):
        raise InvalidDataset(f"{uri}: {fmt} rows cannot be scored with dataset.sources, which train as {mix_format}")
    return fmt


def _held_out_file(uri: str, cfg: DatasetSpec, mix_format: str, use_messages: bool, objective: str, cache_dir, s3_endpoint,
                   s3_region) -> list[dict]:
    fmt = _file_format(uri, cfg, mix_format, objective, cache_dir, s3_endpoint, s3_region)
    return held_out_file_rows(uri, fmt, cfg.columns, use_messages, cache_dir, s3_endpoint, s3_region)


def _combined_hash(hashes: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def record_consumption(stats: dict, plan: mixing.MixPlan, examples: int) -> list[dict]:
    """Each source's rows consumed by `examples` training examples (mixing.consumed)
    and the share of the training they were, into stats["sources"]; returns that list."""
    used = mixing.consumed(plan, examples)
    total = sum(used) or 1
    for entry, count in zip(stats["sources"], used):
        entry.update(rowsConsumed=count, shareGot=round(count / total, 4))
    return stats["sources"]
