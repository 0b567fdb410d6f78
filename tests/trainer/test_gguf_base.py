"""GGUF files as base models: what the trainer refuses before any training.

A model.uri ending in .gguf is read before anything else (`gguf_base.inspect`):
a text file named .gguf, a file cut short, an architecture transformers cannot
load as a causal LM and a tensor type it cannot dequantise are each refused as
InvalidModel (exit 2), in one line naming the file as the user gave it, with no
traceback, and nothing is written under the checkpoint or output prefixes.
The files are served from MinIO (s3://), the way a cluster job reads them.
That a good file trains and evaluates is tests/trainer/test_real_model.py's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from .helpers import base_config

pytestmark = pytest.mark.trainer


def _writer_file(path, architecture: str, tensor: np.ndarray) -> None:
    """A well-formed GGUF file (the `gguf` package's writer) holding one tensor."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def make_bad_file(case: str, tmp_path, real_model):
    path = tmp_path / f"{case}.gguf"
    if case == "text-file":
        path.write_text("This is a README saved under a .gguf name.\n")
    elif case == "truncated":  # the package's file, cut in the middle of its tensor data
        with open(real_model.gguf, "rb") as src:
            path.write_bytes(src.read(20 << 20))
    elif case == "unsupported-architecture":
        _writer_file(path, "rwkv7", np.zeros((4, 8), dtype=np.float32))
    elif case == "unsupported-tensor-type":  # integers: nothing transformers dequantises
        _writer_file(path, "llama", np.zeros((4, 8), dtype=np.int32))
    return path


CASES = {
    "text-file": "not a GGUF file (it starts with b'This'",
    "truncated": "not a complete GGUF file (20,971,520 bytes",
    "unsupported-architecture": "GGUF architecture 'rwkv7' cannot be loaded by transformers as a causal language model; "
                                "supported architectures: ",
    "unsupported-tensor-type": "GGUF tensor type I32 cannot be dequantised by transformers for architecture 'llama'; "
                               "supported types: ",
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_gguf_is_refused_naming_the_file_with_no_traceback_and_nothing_uploaded(
        case, real_model, dataset, minio, bucket, tmp_path, monkeypatch, capsys):
    from kubetune_trainer.__main__ import main
    from kubetune_trainer.config import parse_config

    s3 = minio.client()
    s3.upload_file(str(make_bad_file(case, tmp_path, real_model)), bucket, f"models/{case}.gguf")
    uri = f"s3://{bucket}/models/{case}.gguf"
    cfg = base_config(tmp_path, dataset("completion", 16), model={"uri": uri},
                      checkpoint={"uri": f"s3://{bucket}/checkpoints"}, output={"uri": f"s3://{bucket}/output"})
    monkeypatch.setenv("KUBETUNE_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(tmp_path / "termination.json"))

    assert main(parse_config(cfg)) == 2
    result = json.loads((tmp_path / "termination.json").read_text())
    assert result["reason"] == "InvalidModel" and result["message"].startswith(f"{uri}: "), result
    assert CASES[case] in result["message"] and "\n" not in result["message"], result["message"]
    if case == "unsupported-architecture":  # what is supported, in transformers' own words
        assert "llama" in result["message"] and "qwen2" in result["message"]
    if case == "unsupported-tensor-type":
        assert "Q4_1" in result["message"] and "Q8_0" in result["message"]
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1] == f"kubetune-train: InvalidModel: {result['message']}"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])] == [f"models/{case}.gguf"]
    assert result["step"] in (None, 0), result
