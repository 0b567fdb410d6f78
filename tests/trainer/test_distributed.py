"""`torchrun --nproc-per-node 2` on CPU (gloo): DDP, DeepSpeed ZeRO-2 and ZeRO-3 + LoRA
each train, checkpoint (rank 0 uploads every rank's state) and resume after kill -9.

FSDP is not here: the HF Trainer silently falls back to DDP on CPU, so a CPU
test would prove nothing about FSDP (docs/trainer.md says so).
"""

from __future__ import annotations

import json
import re
import signal

import pytest

from .helpers import base_config, wait_for

pytestmark = [pytest.mark.trainer, pytest.mark.slow]


def _committed(store) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in store.glob("step-*/COMMITTED.json"))


@pytest.mark.parametrize(
    "method,strategy,zero",
    [("lora", "ddp", None), ("full", "deepspeed", 2), ("lora", "deepspeed", 3)],
    ids=["ddp-lora", "zero2-full", "zero3-lora"],
)
def test_torchrun_two_processes_train_checkpoint_and_resume_after_kill(method, strategy, zero, tiny_model, dataset, tmp_path, launch):
    store = tmp_path / "ckpt"
    distributed = {"strategy": strategy, **({"deepspeed": {"zeroStage": zero}} if zero else {})}
    over = dict(method=method, distributed=distributed, dataset={"evalSplit": None},
                training={"maxSteps": 24, "batchSize": 4, "logEverySteps": 1, "learningRate": 0.003 if method == "lora" else 0.001},
                checkpoint={"uri": f"file://{store}", "everySteps": 4, "keepLast": 2})
    if method == "full":
        over["lora"] = None
    if zero == 3:
        # Generation under ZeRO-3 is collective: every rank answers the same test rows, rank 0 reports.
        over["evaluation"] = {"testSplit": 0.05, "metrics": ["exactMatch", "tokenF1"], "generation": {"maxNewTokens": 3}}
    cfg = base_config(tiny_model, dataset("completion"), **over)

    first = launch(cfg, tmp_path / "first", torchrun=2)
    wait_for(lambda: _committed(store), 400, "the first committed checkpoint", first, interval=0.05)
    first.kill(signal.SIGKILL)
    first.proc.wait()
    at_kill = _committed(store)
    assert at_kill and max(at_kill) < 24, at_kill

    manifest = json.loads((store / f"step-{max(at_kill):08d}" / "COMMITTED.json").read_text())
    files = [f["path"] for f in manifest["files"]]
    assert {"rng_state_0.pth", "rng_state_1.pth", "trainer_state.json"} <= set(files), files
    if strategy == "deepspeed":
        # Each rank's ZeRO partition of the optimizer state is in the checkpoint.
        shards = [f for f in files if re.search(r"global_step\d+/.*rank_1.*optim_states", f)]
        assert shards, files
        if zero == 3:
            assert any(re.search(r"global_step\d+/zero_pp_rank_1_mp_rank_00_model_states.pt", f) for f in files), files

    second = launch(cfg, tmp_path / "second", torchrun=2)
    assert second.wait(600) == 0, second.output()[-4000:]
    assert f"resuming from committed checkpoint step {max(at_kill)}" in second.output()
    result = second.result()
    assert result["reason"] == "Completed" and result["step"] == 24, result
    losses = [float(x) for x in re.findall(r"step \d+/24 loss (\S+)", second.output())]
    assert losses and losses[-1] < 3.0, losses  # still learning after the resume (base ≈ 8)
    assert _committed(store)[-1] == 24
    if zero == 3:
        ev = result["evaluation"]
        assert ev["testRows"] == 10 and {"testLoss", "exactMatch", "tokenF1"} <= set(ev["metrics"]), ev
        assert ev["metrics"]["testLoss"]["tuned"] < ev["metrics"]["testLoss"]["base"]
