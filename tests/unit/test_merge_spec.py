"""`kubetune merge-adapters`' spec (the contract both sides read) and the
merger's own checks of the adapters it is given, before anything loads."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from kubetune_contract.merging import MergeSpec


def spec(**over) -> dict:
    return {"base": "hf://org/base", "output": "file:///tmp/out",
            "adapters": [{"uri": "s3://bucket-one/a"}, {"uri": "file:///b", "weight": 0.5}], **over}


def test_defaults_and_density():
    s = MergeSpec.model_validate(spec())
    assert s.method == "linear" and s.resolved_density is None and [a.weight for a in s.adapters] == [1.0, 0.5]
    assert MergeSpec.model_validate(spec(method="ties")).resolved_density == 0.5
    assert MergeSpec.model_validate(spec(method="dare_linear", density=0.2)).resolved_density == 0.2


@pytest.mark.parametrize("over,message", [
    ({"adapters": [{"uri": "file:///a"}]}, "at least 2 items"),
    ({"method": "svd"}, "'linear', 'cat', 'ties' or 'dare_linear'"),
    ({"density": 0.3}, "density applies only to methods ties and dare_linear"),
    ({"method": "ties", "density": 1.5}, "less than or equal to 1"),
    ({"adapters": [{"uri": "file:///a", "weight": 0}, {"uri": "file:///b"}]}, "greater than 0"),
    ({"output": "hf://org/out"}, "unsupported URI"),
])
def test_bad_specs_are_refused(over, message):
    with pytest.raises(ValidationError) as info:
        MergeSpec.model_validate(spec(**over))
    assert message in str(info.value)


def _adapter(path, r: int):
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"r": r, "peft_type": "LORA"}))
    return path


def test_methods_that_combine_matrices_need_one_rank(tmp_path):
    from kubetune_trainer.merge_adapters import InvalidMerge, check_ranks

    a, b = _adapter(tmp_path / "a", 8), _adapter(tmp_path / "b", 16)
    two = [{"uri": f"file://{a}"}, {"uri": f"file://{b}"}]
    with pytest.raises(InvalidMerge, match=r"method ties needs adapters of one rank, got ranks \[8, 16\]; use method cat"):
        check_ranks(MergeSpec.model_validate(spec(adapters=two, method="ties")), [a, b])
    assert check_ranks(MergeSpec.model_validate(spec(adapters=two, method="cat")), [a, b]) == [8, 16]
    (tmp_path / "c").mkdir()
    with pytest.raises(InvalidMerge, match="not a LoRA adapter"):
        check_ranks(MergeSpec.model_validate(spec(adapters=two, method="cat")), [a, tmp_path / "c"])
