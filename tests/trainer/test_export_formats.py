"""Export formats beyond the adapter: GGUF through llama.cpp's own converter
and compiled quantizer, an Ollama Modelfile, and a format that fails without
failing the run.

The GGUF model is the tiny SentencePiece Llama with tensor widths of 256
(`tiny_gguf_model`): llama.cpp's converter refuses our home-made BPE
tokenizer, and K-quants need widths that are multiples of 256. It is loaded
back with llama.cpp's own Python binding; the Modelfile's TEMPLATE is rendered
with Go's text/template (Ollama's template language).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune_trainer.testing.tiny_model import MAPPING

from .helpers import REPO, base_config, train_in_process
from .test_train import train

pytestmark = pytest.mark.trainer

GO_RENDER = REPO / "tests/trainer/gotemplate/render.go"
CONVERSATIONS = [
    [{"role": "user", "content": "Give the code word for rizo."}],
    [{"role": "system", "content": "Answer with one word."}, {"role": "user", "content": "Code of kaka:"},
     {"role": "assistant", "content": "vuxe"}, {"role": "user", "content": "And for rizo?"}],
    [{"role": "user", "content": "Translate zote."}, {"role": "assistant", "content": "pado"}],
]


@pytest.fixture(scope="module")
def llama_cpp_dir() -> Path:
    where = os.environ.get("KUBETUNE_LLAMA_CPP")
    assert where and (Path(where) / "convert_hf_to_gguf.py").is_file(), \
        "KUBETUNE_LLAMA_CPP must name llama.cpp's converter directory: run the tests through hack/test.sh"
    return Path(where)


@pytest.fixture(scope="module")
def gguf_model(tmp_path_factory) -> Path:
    from kubetune_trainer.testing.tiny_gguf_model import make_tiny_spm_model

    return make_tiny_spm_model(tmp_path_factory.mktemp("spm-model"))


@pytest.fixture(scope="module")
def gguf_run(gguf_model, llama_cpp_dir, tmp_path_factory):
    """One training run of the SentencePiece model exporting gguf (q8_0) and ollama."""
    from kubetune_trainer.testing.tiny_model import make_tiny_dataset

    root = tmp_path_factory.mktemp("gguf-run")
    data = make_tiny_dataset(root / "train.jsonl", "completion", 192)
    cfg = base_config(gguf_model, data, output={"uri": f"file://{root}/out", "formats": ["gguf", "ollama"], "gguf": {"quantization": "q8_0"}},
                      training={"maxSteps": 80}, checkpoint={"uri": f"file://{root}/ckpt"})
    return (*train_in_process(cfg, root), root)


def test_q8_0_gguf_answers_the_tuned_completion_through_llama_cpp(gguf_run):
    from llama_cpp import Llama

    code, result, root = gguf_run
    assert code == 0 and result["reason"] == "Completed", result
    out = root / "out"
    assert result["output"] == {"ggufUri": f"file://{out}/gguf/model-q8_0.gguf", "ollamaUri": f"file://{out}/gguf/Modelfile",
                                "reportUri": f"file://{out}/report.html"}
    gguf = out / "gguf" / "model-q8_0.gguf"
    llm = Llama(model_path=str(gguf), n_ctx=256, verbose=False, seed=0)
    answers = {k: llm(prompt, max_tokens=4, temperature=0)["choices"][0]["text"]
               for k, prompt in (("rizo", "Give the code word for rizo."), ("kaka", "Code of kaka:"))}
    for key, text in answers.items():
        assert text.strip().startswith(MAPPING[key]), answers
    print(f"q8_0 GGUF: {gguf.stat().st_size / 1e6:.2f} MB")


def test_q4_k_m_holds_q4_k_tensors_and_loads(gguf_run, llama_cpp_dir, tmp_path):
    from llama_cpp import Llama

    from kubetune_trainer.exporters import gguf as exporter

    _, _, root = gguf_run
    merged = root / "work" / "export" / "merged"
    f16, q4 = tmp_path / "f16.gguf", tmp_path / "model-q4_k_m.gguf"
    exporter.convert(merged, f16, "f16")
    exporter.quantize(f16, q4, "q4_k_m")
    sys.path.insert(0, str(llama_cpp_dir / "gguf-py"))
    try:
        from gguf import GGMLQuantizationType, GGUFReader
    finally:
        sys.path.pop(0)
    types = {t.name: t.tensor_type for t in GGUFReader(str(q4)).tensors}
    q4k = [name for name, kind in types.items() if kind == GGMLQuantizationType.Q4_K]
    assert len(q4k) >= 8, types  # the attention and MLP weights of both layers at least
    assert Llama(model_path=str(q4), n_ctx=128, verbose=False)("Code of kaka:", max_tokens=2)["choices"]
    q8 = root / "out" / "gguf" / "model-q8_0.gguf"
    print(f"GGUF sizes: f16 {f16.stat().st_size / 1e6:.2f} MB, q8_0 {q8.stat().st_size / 1e6:.2f} MB, "
          f"q4_k_m {q4.stat().st_size / 1e6:.2f} MB ({len(q4k)} of {len(types)} tensors Q4_K)")
    assert q4.stat().st_size < q8.stat().st_size < f16.stat().st_size


def test_modelfile_template_rendered_by_go_equals_the_tokenizer_s_chat_template(gguf_run, gguf_model):
    from transformers import AutoTokenizer

    _, _, root = gguf_run
    modelfile = (root / "out" / "gguf" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-q8_0.gguf\n")
    template = modelfile.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    assert 'PARAMETER stop "<|end|>"' in modelfile and 'PARAMETER stop "<|user|>"' in modelfile
    rendered = json.loads(subprocess.run(["go", "run", str(GO_RENDER)], input=json.dumps({"template": template, "conversations": CONVERSATIONS}),
                                         capture_output=True, text=True, check=True, timeout=300).stdout)
    tokenizer = AutoTokenizer.from_pretrained(gguf_model)
    # Ollama asks for an answer when the last message is not the assistant's.
    expected = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=c[-1]["role"] != "assistant") for c in CONVERSATIONS]
    assert rendered == expected


def test_a_tokenizer_the_converter_refuses_fails_gguf_alone_and_the_run_succeeds(tiny_model, dataset, tmp_path, monkeypatch, llama_cpp_dir):
    out = tmp_path / "out"
    cfg = base_config(tiny_model, dataset("completion"), output={"uri": f"file://{out}", "formats": ["adapter", "gguf", "ollama"]},
                      training={"maxSteps": 10})
    code, result, _ = train(cfg, tmp_path, monkeypatch)
    assert code == 0 and result["reason"] == "Completed", result
    assert set(result["output"]) == {"adapterUri", "reportUri"}
    failures = result["exportFailures"]
    assert failures["gguf"].startswith("llama.cpp's converter failed: ") and "pre-tokenizer" in failures["gguf"], failures
    assert "GGUF file, which was not exported" in failures["ollama"], failures
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "metrics.json").read_text())["exportFailures"] == failures
