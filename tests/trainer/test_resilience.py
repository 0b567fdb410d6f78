"""The trainer as a real process against MinIO: kill -9 and resume, SIGTERM,
a store outage mid-run, Prometheus scraping, bad input."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from .helpers import base_config, committed_steps, free_port, wait_for

pytestmark = pytest.mark.trainer

# Slow enough steps (~0.1-0.3 s) that a test can act between checkpoints.
SLOW = {"maxSteps": 30, "batchSize": 8, "gradientAccumulationSteps": 2, "logEverySteps": 2}


def _steps_logged(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"step (\d+)/\d+ loss", text)]


def _final_metrics(bucket_client, bucket: str, key: str) -> dict:
    return json.loads(bucket_client.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_kill9_resumes_from_last_committed_and_matches_uninterrupted(tiny_model, dataset, tmp_path, minio, bucket, launch):
    client = minio.client()
    train = dataset("completion")

    def cfg(name: str) -> dict:
        return base_config(tiny_model, train, training=SLOW, dataset={"evalSplit": None},
                           checkpoint={"uri": f"s3://{bucket}/{name}/ckpt", "everySteps": 10, "keepLast": 2},
                           output={"uri": f"s3://{bucket}/{name}/out"},
                           evaluation={"testSplit": 0.05, "metrics": ["exactMatch"], "generation": {"maxNewTokens": 3}})

    # The reference: the same job, never interrupted.
    ref = launch(cfg("ref"), tmp_path / "ref")
    assert ref.wait() == 0, ref.output()[-3000:]

    first = launch(cfg("job"), tmp_path / "first")
    wait_for(lambda: committed_steps(client, bucket, "job/ckpt/"), 240, "the first committed checkpoint", first, interval=0.05)
    first.kill(signal.SIGKILL)
    first.wait()
    at_kill = committed_steps(client, bucket, "job/ckpt/")
    assert at_kill and max(at_kill) < 30, at_kill

    second = launch(cfg("job"), tmp_path / "second")
    assert second.wait() == 0, second.output()[-3000:]
    assert f"resuming from committed checkpoint step {max(at_kill)}" in second.output()
    # The base model was evaluated once, before the kill, and the resumed run reused it.
    assert "base model: " in first.output() and "base model evaluation reused from base-eval.json" in second.output()
    logged = _steps_logged(second.output())
    assert logged and min(logged) > max(at_kill), logged  # no step before the checkpoint is retrained
    result = second.result()
    assert result["reason"] == "Completed" and result["step"] == 30 and result["totalSteps"] == 30

    ref_m = _final_metrics(client, bucket, "ref/out/metrics.json")
    job_m = _final_metrics(client, bucket, "job/out/metrics.json")
    assert job_m["train"]["resumedFrom"] == max(at_kill)
    assert job_m["base"] == ref_m["base"] and job_m["evaluation"]["testRows"] == ref_m["evaluation"]["testRows"] > 0
    ref_loss = [h["trainLoss"] for h in ref_m["history"] if "trainLoss" in h][-1]
    job_loss = [h["trainLoss"] for h in job_m["history"] if "trainLoss" in h][-1]
    assert job_loss == pytest.approx(ref_loss, rel=0.05, abs=0.02), (ref_loss, job_loss)
    # Retention kept the newest two committed steps, nothing partial.
    assert committed_steps(client, bucket, "job/ckpt/") == [20, 30]


def test_sigterm_commits_a_checkpoint_then_exits_143(tiny_model, dataset, tmp_path, minio, bucket, launch):
    client = minio.client()
    cfg = base_config(tiny_model, dataset("completion"), training={**SLOW, "maxSteps": 200}, dataset={"evalSplit": None},
                      checkpoint={"uri": f"s3://{bucket}/ckpt", "everySteps": 50})
    proc = launch(cfg, tmp_path / "run")
    wait_for(lambda: [s for s in _steps_logged(proc.output()) if s >= 6], 240, "step 6", proc)
    proc.kill(signal.SIGTERM)
    assert proc.wait(120) == 143, proc.output()[-3000:]
    result = proc.result()
    assert result["reason"] == "Interrupted", result
    step = result["step"]
    assert 6 <= step < 50  # stopped between periodic checkpoints...
    assert result["checkpoint"] == {"uri": f"s3://{bucket}/ckpt/step-{step:08d}", "step": step}
    assert committed_steps(client, bucket, "ckpt/") == [step]  # ...and committed that very step


def _scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def _upload_failures(port: int) -> float:
    return float(re.search(r"kubetune_trainer_checkpoint_upload_failures_total\{[^}]*\} (\S+)", _scrape(port)).group(1))


def _published_checkpoint(port: int) -> str | None:
    """The uri label of kubetune_trainer_last_committed_checkpoint_info (None before a commit)."""
    match = re.search(r'kubetune_trainer_last_committed_checkpoint_info\{[^}]*uri="([^"]+)"', _scrape(port))
    return match.group(1) if match else None


def _assert_committed_in_minio(client, bucket: str, uri: str) -> None:
    """The published URI names a checkpoint prefix of this bucket whose commit marker exists."""
    assert re.fullmatch(rf"s3://{bucket}/ckpt/step-\d{{8}}", uri), uri
    client.head_object(Bucket=bucket, Key=f"{uri.removeprefix(f's3://{bucket}/')}/COMMITTED.json")  # raises if absent


def test_store_outage_training_continues_uploads_catch_up_prometheus_scrapes(tiny_model, dataset, tmp_path, minio, bucket, launch):
    """MinIO down mid-run: a failing upload is visible in the metrics while steps
    keep coming, uploads catch up once it is back, every committed step is
    complete, and /metrics publishes the newest committed checkpoint's URI. The
    run is open-ended and ends by SIGTERM, so machine load cannot make it finish
    before the outage is over."""
    from tests.harness.prometheus import Prometheus

    client = minio.client()
    port = free_port()
    cfg = base_config(tiny_model, dataset("completion"), training={**SLOW, "maxSteps": 100000}, dataset={"evalSplit": None},
                      checkpoint={"uri": f"s3://{bucket}/ckpt", "everySteps": 10, "keepLast": 3},
                      metrics={"port": port})
    proc = launch(cfg, tmp_path / "run", env={"POD_IP": "127.0.0.1"})
    prom = Prometheus([f"127.0.0.1:{port}"], run_dir=tmp_path / "prom", scrape_interval="1s").start()
    try:
        wait_for(lambda: committed_steps(client, bucket, "ckpt/"), 240, "the first commit", proc, interval=0.05)
        # The trainer publishes where the committed checkpoint is (the operator reports that URI).
        _assert_committed_in_minio(client, bucket, wait_for(lambda: _published_checkpoint(port), 30, "a published checkpoint", proc))
        first_step = prom.wait_for_value('kubetune_trainer_step{exported_job="tiny",namespace="test",rank="0"}', timeout=30)
        minio.stop()
        # Training never waits for the store: once an upload is seen failing (it
        # retries for minutes), the loop still logs new steps while the store is down.
        wait_for(lambda: _upload_failures(port) > 0, 120, "an upload failure in the metrics", proc)
        failing_at = max(_steps_logged(proc.output()))
        wait_for(lambda: max(_steps_logged(proc.output())) > failing_at, 120, "a step logged while an upload is failing", proc)
        steps_during = max(_steps_logged(proc.output()))
        minio.start()
        assert proc.proc.poll() is None, proc.output()[-3000:]
        # Catch-up: a checkpoint taken after the store came back gets committed.
        wait_for(lambda: [s for s in committed_steps(client, bucket, "ckpt/") if s > steps_during], 180, "a commit after the outage", proc)

        def published_after_outage() -> str | None:
            uri = _published_checkpoint(port)
            return uri if uri and int(uri.rsplit("step-", 1)[1]) > steps_during else None

        _assert_committed_in_minio(client, bucket, wait_for(published_after_outage, 30, "the catch-up commit published", proc))
        later_step = prom.wait_for_value('max_over_time(kubetune_trainer_step{namespace="test"}[5m])', timeout=30)
        assert later_step > first_step  # Prometheus saw training move...
        loss = prom.query('kubetune_trainer_loss{namespace="test"}')
        assert loss and float(loss[0]["value"][1]) > 0  # ...and the loss
        proc.kill(signal.SIGTERM)
        assert proc.wait(120) == 143, proc.output()[-3000:]
    finally:
        prom.stop()
        if minio.proc is None:
            minio.start()
    # No partial step is left behind and every committed one is complete.
    dirs = {k.split("/")[1] for k in (o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="ckpt/step-").get("Contents", []))}
    steps = committed_steps(client, bucket, "ckpt/")
    assert len(steps) == 3 and dirs == {f"step-{s:08d}" for s in steps}, (steps, dirs)
    assert steps[-1] == proc.result()["step"]
    assert proc.result()["checkpoint"]["uri"] == f"s3://{bucket}/ckpt/step-{steps[-1]:08d}"
    for s in steps:
        manifest = json.loads(client.get_object(Bucket=bucket, Key=f"ckpt/step-{s:08d}/COMMITTED.json")["Body"].read())
        sizes = {o["Key"]: o["Size"] for o in client.list_objects_v2(Bucket=bucket, Prefix=f"ckpt/step-{s:08d}/")["Contents"]}
        for f in manifest["files"]:
            assert sizes[f"ckpt/step-{s:08d}/{f['path']}"] == f["size"]


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "config.json"
    rendered = base_config(tmp_path / "model", tmp_path / "train.jsonl")
    config.write_text(json.dumps({**rendered, "trainig": {}}))
    term = tmp_path / "term.json"
    out = subprocess.run([sys.executable, "-m", "kubetune_trainer", "--config", str(config)], capture_output=True, text=True,
                         env={"KUBETUNE_TERMINATION_LOG": str(term), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == [f"kubetune-train: InvalidConfig: {config}: trainig: Extra inputs are not permitted"], out.stderr
    assert json.loads(term.read_text())["reason"] == "InvalidConfig"
