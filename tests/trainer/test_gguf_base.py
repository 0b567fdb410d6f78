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


def test_bad_gguf_files_are_refused_naming_the_file_with_no_traceback_and_nothing_uploaded(
        real_model, dataset, minio, bucket, tmp_path, launch):
    """Each bad file in a trainer process of its own (all at once), as a pod runs it."""
    s3 = minio.client()
    train = dataset("completion", 16)
    runs = {}
    for case in CASES:
        s3.upload_file(str(make_bad_file(case, tmp_path, real_model)), bucket, f"models/{case}.gguf")
        uri = f"s3://{bucket}/models/{case}.gguf"
        cfg = base_config(tmp_path, train, model={"uri": uri}, checkpoint={"uri": f"s3://{bucket}/{case}/checkpoints"},
                          output={"uri": f"s3://{bucket}/{case}/output"})
        runs[case] = (uri, launch(cfg, tmp_path / case))
    for case, (uri, proc) in runs.items():
        assert proc.wait(timeout=300) == 2, proc.output()
        result = proc.result()
        assert result["reason"] == "InvalidModel" and result["message"].startswith(f"{uri}: "), result
        assert CASES[case] in result["message"] and "\n" not in result["message"], result["message"]
        if case == "unsupported-architecture":  # what is supported, in transformers' own words
            assert "llama" in result["message"] and "qwen2" in result["message"], result["message"]
        if case == "unsupported-tensor-type":
            assert "Q4_1" in result["message"] and "Q8_0" in result["message"], result["message"]
        log = proc.output()
        assert "Traceback" not in log and log.rstrip().splitlines()[-1] == f"kubetune-train: InvalidModel: {result['message']}", log
        assert result.get("step") in (None, 0), result
    # Nothing written under any job's checkpoint or output prefix: the models alone are in the bucket.
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])) == sorted(f"models/{c}.gguf" for c in CASES)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """The tiny SentencePiece Llama written as a GGUF file (f16) by llama.cpp's
    own converter, as a user's .gguf would have been made."""
    from kubetune_trainer.exporters import gguf as exporter
    from kubetune_trainer.testing.tiny_gguf_model import make_tiny_spm_model

    root = tmp_path_factory.mktemp("tiny-gguf")
    path = root / "tiny.f16.gguf"
    exporter.convert(make_tiny_spm_model(root / "hf"), path, "f16")
    return path


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_every_method_trains_from_a_gguf_base(method, tiny_gguf, dataset, tmp_path, monkeypatch):
    """LoRA, QLoRA (bitsandbytes quantises the dequantised weights) and full
    fine-tuning start from the file as from any base; the adapter and the
    merged model's card name the file the user gave."""
    from .test_train import train

    out = tmp_path / "out"
    uri = f"file://{tiny_gguf}"
    formats = ["merged"] if method == "full" else ["adapter"]
    cfg = base_config(tmp_path, dataset("completion", 32), model={"uri": uri}, method=method, training={"maxSteps": 2},
                      output={"uri": f"file://{out}", "formats": formats}, **({"lora": None} if method == "full" else {}))
    code, result, _ = train(cfg, tmp_path, monkeypatch)
    assert code == 0 and result["reason"] == "Completed" and result["step"] == 2, result
    if method == "full":
        assert f"base_model: {uri}" in (out / "merged" / "README.md").read_text()
    else:
        assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == uri
