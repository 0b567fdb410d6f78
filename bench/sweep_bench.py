"""`make bench-sweep`: what a FineTuneSweep costs on top of its trials.

A sweep of 50 trials (random sampler, parallelism 5) whose trainer command
finishes at once (it reports an evalLoss computed from its learning rate), in
the trainer image on the local cluster's real node (kubelet, containerd and
kube-proxy at nice 19: worker nodes do not share the control plane's cores).
Printed, from the benchmark's own watch streams:

- slot freed -> next trial created: from a trial's FineTuneJob showing Succeeded
  to the sweep's next trial existing (the sweep controller's reaction);
- trial created -> its Job created (the FineTuneJob controller, as for any job);
- per trial: the operator's wall time beyond the trial's own pod (sweep wall
  time x parallelism / trials, against the same pods' running time), and API
  requests (the operator's client + every non-LIST/WATCH request on
  finetunejobs and finetunesweeps the API server saw, minus the sweep's create).

    python bench/sweep_bench.py [--trials 50] [--parallelism 5]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from operator_bench import (REPO, Watcher, _bench_namespace, _port_open, apiserver_counter, cpu_seconds, free_port,  # noqa: E402
                            node_niced, operator_counters, percentile, running_cluster)

from tests.harness.fixtures import make_kube_clients  # noqa: E402
from tests.harness.operator_fixture import CRD_FILES  # noqa: E402
from tests.harness.waiting import wait_for  # noqa: E402

SWEEP_PATH = "/apis/kubetune.io/v1alpha1/namespaces/{ns}/finetunesweeps"
FTJ_PATH = "/apis/kubetune.io/v1alpha1/namespaces/{ns}/finetunejobs"
TRAINER = json.dumps(["python", "-c", (
    "import json, math; c = json.load(open('/etc/kubetune/config.json')); lr = c['training']['learningRate']; "
    "open('/dev/termination-log', 'w').write(json.dumps({'reason': 'Completed', 'message': 'done', "
    "'metrics': {'evalLoss': (math.log10(lr) + 2.5) ** 2}, 'checkpoint': {}, 'output': {}}))")])


def sweep_doc(trials: int, parallelism: int) -> dict:
    template = {"model": {"uri": "s3://bench/models/tiny"}, "dataset": {"trainUri": "s3://bench/data/train.jsonl", "evalSplit": 0.1},
                "method": "lora", "training": {"maxSteps": 1}, "resources": {"gpusPerNode": 0}, "backoffLimit": 0}
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneSweep", "metadata": {"name": "bench"},
            "spec": {"template": template, "maxTrials": trials, "parallelism": parallelism, "algorithm": {"type": "random", "seed": 1},
                     "parameters": [{"path": "training.learningRate", "min": 1e-5, "max": 1e-2, "scale": "log"}]}}


def measure(c, kube, trials: int, parallelism: int, log_dir: Path) -> dict:
    from tests.harness import built_images

    raw = kube.raw
    trainer_image = built_images.load(c.network.containerd_socket, "trainer")["trainer"]
    ns = _bench_namespace(raw, "bench-sweep")
    port = free_port()
    env = dict(os.environ, **c.env(), KUBETUNE_TRAINER_IMAGE=trainer_image, KUBETUNE_TRAINER_COMMAND=TRAINER,
               KUBETUNE_DEFAULT_BUCKET_URI="s3://bench", KUBETUNE_METRICS_PORT=str(port), PYTHONUNBUFFERED="1")
    log = open(log_dir / "operator-sweep.log", "wb")
    op = subprocess.Popen([sys.executable, "-m", "kopf", "run", "-m", "kubetune_operator.handlers", f"--namespace={ns}", "--standalone", "-q"],
                          env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    seen: dict[str, dict[str, float]] = {"created": {}, "done": {}, "job": {}, "job_done": {}}

    def on_ftj(kind, obj, now):
        name = obj["metadata"]["name"]
        seen["created"].setdefault(name, now)
        if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            seen["done"].setdefault(name, now)

    def on_job(kind, obj, now):
        owner = obj["metadata"].get("labels", {}).get("kubetune.io/job")
        if owner:
            seen["job"].setdefault(owner, now)
            if any(x.get("type") == "Complete" and x.get("status") == "True" for x in (obj.get("status") or {}).get("conditions") or []):
                seen["job_done"].setdefault(owner, now)

    try:
        wait_for(lambda: _port_open(port), timeout=60, what="operator metrics port")
        watchers = [Watcher(raw, FTJ_PATH.format(ns=ns), on_ftj), Watcher(raw, f"/apis/batch/v1/namespaces/{ns}/jobs", on_job)]
        for w in watchers:
            w.start()
        before = (apiserver_counter(c.kubeconfig, "finetunejobs") + apiserver_counter(c.kubeconfig, "finetunesweeps"), operator_counters(port), cpu_seconds(op.pid))
        t0 = time.monotonic()
        raw.request("POST", SWEEP_PATH.format(ns=ns), sweep_doc(trials, parallelism))
        wait_for(lambda: ((raw.get(f"{SWEEP_PATH.format(ns=ns)}/bench").get("status") or {}).get("phase") in ("Succeeded", "Failed")),
                 timeout=1800, interval=0.5, what="the sweep to end", describe=lambda: f"{len(seen['done'])} trials done")
        wall = time.monotonic() - t0
        time.sleep(1.0)
        requests = apiserver_counter(c.kubeconfig, "finetunejobs") + apiserver_counter(c.kubeconfig, "finetunesweeps") - before[0] - 1
        client = sum(v - before[1].get(k, 0) for k, v in operator_counters(port).items() if not k.startswith(("FineTuneJob:", "FineTuneSweep:")))
        cpu = cpu_seconds(op.pid) - before[2]
        for w in watchers:
            w.stop.set()
        return _summary(seen, trials, parallelism, wall, requests + client, cpu)
    finally:
        os.killpg(op.pid, signal.SIGTERM)
        op.wait(30)
        log.close()
        raw.request("DELETE", f"/api/v1/namespaces/{ns}")


def _summary(seen: dict, trials: int, parallelism: int, wall: float, requests: float, cpu: float) -> dict:
    names = sorted(seen["created"], key=lambda n: seen["created"][n])
    done = sorted(seen["done"].values())
    # The k-th trial after the first `parallelism` takes the slot the (k - parallelism)-th finished trial freed.
    react = [seen["created"][n] - done[i] for i, n in enumerate(names[parallelism:]) if i < len(done) and seen["created"][n] >= done[i]]
    to_job = [seen["job"][n] - seen["created"][n] for n in names if n in seen["job"]]
    status_lag = [seen["done"][n] - seen["job_done"][n] for n in names if n in seen["job_done"] and n in seen["done"]]
    pods = [seen["job_done"][n] - seen["job"][n] for n in names if n in seen["job_done"]]
    return {"trials": trials, "wall_s": wall, "react_p50": percentile(react, 0.5), "react_p99": percentile(react, 0.99),
            "job_p50": percentile(to_job, 0.5), "job_p99": percentile(to_job, 0.99),
            "lag_p50": percentile(status_lag, 0.5), "lag_p99": percentile(status_lag, 0.99),
            "slot_s": wall * parallelism / trials, "pod_s": sum(pods) / len(pods) if pods else float("nan"),
            "requests_per_trial": requests / trials, "cpu_ms_per_trial": cpu * 1000 / trials}


def _lists(raw) -> bool:
    try:
        raw.get("/apis/kubetune.io/v1alpha1/finetunesweeps")
        return True
    except Exception:  # 429 while the API server initialises the new resource's storage
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--parallelism", type=int, default=5)
    ap.add_argument("--runner-nice", type=int, default=19)
    ap.add_argument("--skip-first-step", action="store_true", help="skip the cold vs warm real-trainer measurement")
    args = ap.parse_args()
    c = running_cluster()
    kube = make_kube_clients(c)
    for path in CRD_FILES:
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    for name in ("finetunejobs.kubetune.io", "finetunesweeps.kubetune.io"):
        kube.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    wait_for(lambda: _lists(kube.raw), timeout=60, what="the new resources served")
    log_dir = Path(c.run_dir) / "bench"
    log_dir.mkdir(exist_ok=True)
    with node_niced(c, args.runner_nice):
        r = measure(c, kube, args.trials, args.parallelism, log_dir)
    print(f"\nsweep benchmark: {r['trials']} trials, parallelism {args.parallelism}, trainer command finishes at once "
          f"(node at nice {args.runner_nice})")
    print(f"  sweep wall time                     {r['wall_s']:.1f} s")
    print(f"  slot freed -> next trial created    p50 {r['react_p50']:.2f} s  p99 {r['react_p99']:.2f} s")
    print(f"  trial created -> its Job created    p50 {r['job_p50']:.2f} s  p99 {r['job_p99']:.2f} s")
    print(f"  Job complete -> trial Succeeded     p50 {r['lag_p50']:.2f} s  p99 {r['lag_p99']:.2f} s")
    print(f"  per trial: slot held {r['slot_s']:.2f} s, its pod ran {r['pod_s']:.2f} s: operator adds {r['slot_s'] - r['pod_s']:.2f} s "
          f"(ratio slot/pod {r['slot_s'] / r['pod_s']:.2f})")
    print(f"  API requests per trial              {r['requests_per_trial']:.1f}")
    print(f"  operator CPU per trial              {r['cpu_ms_per_trial']:.0f} ms")
    if not args.skip_first_step:
        from first_step import cold_vs_warm

        t = cold_vs_warm()
        print("\nreal tiny trials, one after the other (trainer start -> its first step; the base model measured once per sweep):")
        print(f"  cold trial (measures the base)      {t['cold_s']:.1f} s (its base evaluation {t['base_eval_s']:.1f} s)")
        print(f"  warm trial (reuses that)            {t['warm_s']:.1f} s   warm/cold {t['warm_s'] / t['cold_s']:.2f}"
              f"   (medians of {len(t['runs'])} sweeps, cold and warm alternating)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
