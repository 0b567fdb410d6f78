"""`python -m kubetune_trainer.merge_adapters --spec FILE`: merge LoRA adapters
trained on one base into one (PEFT's `add_weighted_adapter`), reading and
writing s3://, pvc:// or local paths, with a model card listing its sources
and weights. `kubetune merge-adapters` (the operator's CLI) runs this with the
trainer's Python.

Exit codes as the trainer's: 0 merged, 2 bad input (a spec, an adapter that is
not one, adapters of different ranks for a method that needs one rank).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from kubetune_contract.merging import MergeSpec

from .errors import EXIT_BAD_INPUT, EXIT_OK, TrainerError
from .storage import fetch, local_path, open_store, put_tree

log = logging.getLogger("kubetune.merge")
SAME_RANK_METHODS = ("linear", "ties", "dare_linear")


class InvalidMerge(TrainerError):
    reason = "InvalidMerge"
    exit_code = EXIT_BAD_INPUT


def local_copy(uri: str, work: Path, spec: MergeSpec) -> Path:
    if uri.startswith("s3://"):
        return fetch(uri, work, s3_endpoint=spec.s3.endpoint, s3_region=spec.s3.region)
    if uri.startswith("hf://"):
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(uri.removeprefix("hf://"), cache_dir=str(work)))
    return local_path(uri)


def check_ranks(spec: MergeSpec, adapters: list[Path]) -> list[int]:
    ranks = []
    for uri, path in zip((a.uri for a in spec.adapters), adapters):
        config = path / "adapter_config.json"
        if not config.is_file():
            raise InvalidMerge(f"{uri}: not a LoRA adapter (no adapter_config.json)")
        ranks.append(int(json.loads(config.read_text()).get("r", 0)))
    if spec.method in SAME_RANK_METHODS and len(set(ranks)) > 1:
        raise InvalidMerge(f"method {spec.method} needs adapters of one rank, got ranks {ranks}; use method cat")
    return ranks


def merge(spec: MergeSpec, base: Path, adapters: list[Path], out: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype="float32")
    names = [f"source{i}" for i in range(len(adapters))]
    model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name=names[0])
    for name, path in zip(names[1:], adapters[1:]):
        model.load_adapter(str(path), adapter_name=name)
    extra = {"density": spec.resolved_density} if spec.resolved_density is not None else {}
    model.add_weighted_adapter(names, [a.weight for a in spec.adapters], spec.name, combination_type=spec.method, **extra)
    saved = out.parent / "peft-save"
    model.save_pretrained(str(saved), selected_adapters=[spec.name])
    shutil.copytree(saved / spec.name, out, dirs_exist_ok=True)  # PEFT saves a named adapter in its own directory
    tokenizer_from = adapters[0] if (adapters[0] / "tokenizer_config.json").is_file() else base
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(str(out))


def model_card(spec: MergeSpec, ranks: list[int], merged_rank: int) -> str:
    rows = "\n".join(f"| {a.uri} | {a.weight:g} | {r} |" for a, r in zip(spec.adapters, ranks))
    density = f", density {spec.resolved_density:g}" if spec.resolved_density is not None else ""
    return (f"# {spec.name}\n\nA LoRA adapter merged by `kubetune merge-adapters` from {len(spec.adapters)} adapters "
            f"trained on `{spec.base}`, with PEFT's `{spec.method}` combination{density}. Rank {merged_rank}.\n\n"
            f"| source adapter | weight | rank |\n|---|---|---|\n{rows}\n")


def run(spec: MergeSpec) -> str:
    with tempfile.TemporaryDirectory(prefix="kubetune-merge-") as tmp:
        work = Path(tmp)
        base = local_copy(spec.base, work / "base", spec)
        adapters = [local_copy(a.uri, work / f"adapter-{i}", spec) for i, a in enumerate(spec.adapters)]
        ranks = check_ranks(spec, adapters)
        out = work / "merged"
        merge(spec, base, adapters, out)
        merged_rank = int(json.loads((out / "adapter_config.json").read_text())["r"])
        (out / "README.md").write_text(model_card(spec, ranks, merged_rank))
        store = open_store(spec.output, spec.s3.endpoint, spec.s3.region)
        for path in sorted(out.iterdir()):
            put_tree(store, path, path.name)
    return spec.output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubetune_trainer.merge_adapters")
    parser.add_argument("--spec", required=True, help="a MergeSpec JSON file (kubetune merge-adapters writes it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        spec = MergeSpec.model_validate_json(Path(args.spec).read_text(), by_alias=True, by_name=False)
        uri = run(spec)
    except TrainerError as exc:
        print(f"merge-adapters: {exc.reason}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    print(f"merge-adapters: merged {len(spec.adapters)} adapters ({spec.method}) into {uri}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
