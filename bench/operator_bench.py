"""`make bench-operator`: N FineTuneJobs applied at once against the local control
plane, with a trainer command that finishes at once (this measures the operator,
not training). For N in (500, 2000) it prints p50/p99 apply -> Job created and
apply -> first status update, jobs reconciled per second, API requests per job
and the operator's peak RSS; then the floor (the same objects posted without an
operator) beside them, with the goals: first status p99 under 2 s, apply -> Job
p99 within 1.25x the floor's.

    python bench/operator_bench.py [--sizes 500,2000] [--qps 200] [--burst 400]

Times are taken by this process from its own watch streams (apply = just before
the POST, Job created = the Job's ADDED event, first status = the first event
with status.phase), so they include watch latency, as a user would see it.

Worker nodes are stood in for (bench/instant_nodes.py): the real node is
cordoned and two Node objects whose pods succeed the moment they are bound take
the pods (the trainer command is `true`: nothing of a container is measured),
for the operator rows and the floor rows alike. In a cluster the kubelets never
take the control plane's CPU; on two shared cores, one real node starting 2000
containers would.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.burst_profile import BurstProfile  # noqa: E402
from bench.instant_nodes import instant_nodes  # noqa: E402
from tests.harness import cluster as cluster_mod  # noqa: E402
from tests.harness.kubeapi import ApiError  # noqa: E402
from tests.harness.operator_fixture import CRD_FILES, free_port  # noqa: E402
from tests.harness.waiting import wait_for  # noqa: E402

PROFILED = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler")
FTJ_PATH = "/apis/kubetune.io/v1alpha1/namespaces/{ns}/finetunejobs"
INSTANT_TRAINER = json.dumps(["true"])
JOB_P99_GOAL = 1.25  # apply -> Job p99, as a multiple of the floor's
STATUS_P99_GOAL = 2.0  # seconds, apply -> the first status a user can read
# The admin policy lets the jobs read the shared model and data (the chart's
# default lets a namespace use only its own prefix of the bucket); an operator
# from before the policy ignores the setting.
BENCH_POLICY = {"storageRoots": ["s3://bench/{namespace}/"], "readOnlyRoots": ["s3://bench/models/", "s3://bench/data/"]}
OPERATOR_SETTINGS = {"KUBETUNE_TRAINER_IMAGE": "ghcr.io/kubetune/trainer:bench", "KUBETUNE_TRAINER_COMMAND": INSTANT_TRAINER,
                     "KUBETUNE_DEFAULT_BUCKET_URI": "s3://bench", "KUBETUNE_POLICY": json.dumps(BENCH_POLICY)}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def job_doc(name: str) -> dict:
    return {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name},
        "spec": {
            "model": {"uri": "s3://bench/models/tiny"}, "dataset": {"trainUri": "s3://bench/data/train.jsonl"},
            "method": "lora", "training": {"maxSteps": 1}, "resources": {"gpusPerNode": 0}, "backoffLimit": 0,
        },
    }


class Watcher(threading.Thread):
    """Records when each object is first seen (and first seen with a status phase)."""

    def __init__(self, raw, path: str, on_event):
        super().__init__(daemon=True)
        self.raw, self.path, self.on_event = raw, path, on_event
        self.stop = threading.Event()
        listing = raw.get(path)
        self.rv = listing["metadata"]["resourceVersion"]

    def run(self):
        while not self.stop.is_set():
            try:
                for event in self.raw.watch(self.path, self.rv, timeout_seconds=30):
                    now = time.monotonic()
                    obj = event.get("object") or {}
                    self.rv = obj.get("metadata", {}).get("resourceVersion", self.rv)
                    self.on_event(event.get("type"), obj, now)
                    if self.stop.is_set():
                        return
            except Exception:  # a dropped watch restarts from the last version
                time.sleep(0.2)


def apiserver_metrics(kubeconfig: str) -> str:
    from kubernetes import config

    api = config.new_client_from_config(config_file=kubeconfig)
    method, url, headers, _, _ = api.param_serialize(method="GET", resource_path="/metrics", auth_settings=["BearerToken"])
    return api.call_api(method, url, header_params=headers).read().decode()


def apiserver_counter(kubeconfig: str, resource: str, text: str | None = None) -> float:
    """Sum of the API server's apiserver_request_total for one resource, all verbs but WATCH/LIST."""
    text = apiserver_metrics(kubeconfig) if text is None else text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and f'resource="{resource}"' in line:
            verb = re.search(r'verb="([A-Z]+)"', line)
            if verb and verb.group(1) not in ("WATCH", "LIST"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def operator_metrics(port: int) -> str:
    import urllib.request

    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def operator_counters(port: int, text: str | None = None) -> dict[str, float]:
    text = operator_metrics(port) if text is None else text
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r'kubetune_operator_api_requests_total\{kind="([^"]+)",verb="([^"]+)"\} (\S+)', line)
        if m:
            out[f"{m.group(1)}:{m.group(2)}"] = float(m.group(3))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _set_nice(pid: int, value: int) -> None:
    """Every thread of the process: Linux keeps a niceness per thread, and a
    thread (or child process) started later inherits its starter's."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), value)
        except ProcessLookupError:
            pass  # a thread that ended meanwhile


NODE_PROCESSES = ("kubelet", "containerd", "kube-proxy")


@contextmanager
def node_niced(c: cluster_mod.Cluster, value: int):
    """The node's kubelet, containerd (and so the containers it starts from now
    on) and kube-proxy at niceness `value` while the block runs: in a cluster
    they run on worker nodes, not beside the control plane."""
    pids = [c.pids[name] for name in NODE_PROCESSES if name in c.pids]
    if not value or not pids:
        yield
        return
    before = {pid: os.getpriority(os.PRIO_PROCESS, pid) for pid in pids}
    for pid in pids:
        _set_nice(pid, value)
    try:
        yield
    finally:
        for pid, nice in before.items():
            try:
                _set_nice(pid, nice)
            except FileNotFoundError:
                pass  # the cluster is gone
            except PermissionError:  # raising priority back needs root
                print(f"note: pid {pid} stays at nice {value}; `make cluster-down` and up restores it", file=sys.stderr)


def _bench_namespace(raw, prefix: str) -> str:
    ns = f"{prefix}-{int(time.time())}"
    raw.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    wait_for(lambda: raw.get(f"/api/v1/namespaces/{ns}/serviceaccounts")["items"], timeout=30, what="default SA")
    # Labelled as the admin policy's default secretLabel asks (an operator before the policy ignores it).
    raw.request("POST", f"/api/v1/namespaces/{ns}/secrets", {"apiVersion": "v1", "kind": "Secret",
                                                             "metadata": {"name": "kubetune-s3", "labels": {"kubetune.io/usable": "true"}},
                                                             "stringData": {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}})
    return ns


def run_direct(c: cluster_mod.Cluster, kube, n: int) -> dict:
    """The floor under the same load, without the operator: this process posts
    each FineTuneJob and then, itself, the ConfigMap and Job the operator's own
    builders make for it (pods run as before). What is left of apply->Job here
    is the API server's, the watch's and this machine's share."""
    from kubetune_operator.api import parse_job
    from kubetune_operator.builders import build_training_objects
    from kubetune_operator.k8s import Kube
    from kubetune_operator.settings import load_settings

    cfg = load_settings(OPERATOR_SETTINGS)
    raw = kube.raw
    ns = _bench_namespace(raw, f"direct-{n}")
    applied: dict[str, float] = {}
    job_seen: dict[str, float] = {}
    completed: set[str] = set()

    def on_job(kind, obj, now):
        owner = obj["metadata"].get("labels", {}).get("kubetune.io/job")
        if owner and kind == "ADDED":
            job_seen.setdefault(owner, now)
        if owner and (obj.get("status") or {}).get("succeeded"):
            completed.add(owner)

    watcher = Watcher(raw, f"/apis/batch/v1/namespaces/{ns}/jobs", on_job)
    watcher.start()

    def apply(i: int) -> None:
        name = f"bench-{i:04d}"
        applied[name] = time.monotonic()
        stored = raw.request("POST", FTJ_PATH.format(ns=ns), job_doc(name))
        job = parse_job({k: stored[k] for k in ("apiVersion", "kind", "metadata", "spec")}).job
        for obj in build_training_objects(job, cfg):
            raw.request("POST", Kube.path(obj["kind"], ns), obj)

    profile = BurstProfile(lambda: apiserver_metrics(c.kubeconfig), lambda: "",
                           {**{k: v for k, v in c.pids.items() if k in PROFILED}, "bench": os.getpid()})
    try:
        profile.snap(time.monotonic())
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(apply, range(n)))
        t_applied = time.monotonic()
        wait_for(lambda: len(job_seen) >= n, timeout=600, interval=0.1, what=f"{n} Jobs", describe=lambda: f"jobs {len(job_seen)}")
        profile.snap(time.monotonic())
        to_job = [job_seen[k] - applied[k] for k in applied]
        # Let the pods finish, so the next run does not share the machine with them.
        wait_for(lambda: len(completed) >= n, timeout=900, interval=0.5, what=f"{n} Jobs complete",
                 describe=lambda: f"complete {len(completed)}")
        return {"n": n, "apply_s": t_applied - t0, "job_p50": percentile(to_job, 0.5), "job_p99": percentile(to_job, 0.99),
                "jobs_per_s": n / (max(job_seen.values()) - t0), "profile": profile.report(n)}
    finally:
        watcher.stop.set()
        _delete_namespace(raw, ns)


def run_one(c: cluster_mod.Cluster, kube, n: int, qps: float, burst: int, log_dir: Path) -> dict:
    raw = kube.raw
    ns = _bench_namespace(raw, f"bench-{n}")
    metrics_port = free_port()
    env = dict(os.environ, **c.env(), **OPERATOR_SETTINGS, KUBETUNE_CLIENT_QPS=str(qps), KUBETUNE_CLIENT_BURST=str(burst),
               KUBETUNE_METRICS_PORT=str(metrics_port), KUBETUNE_METRICS_SCRAPE_INTERVAL="30", PYTHONUNBUFFERED="1")
    log = open(log_dir / f"operator-{n}.log", "wb")
    op = subprocess.Popen([sys.executable, "-m", "kopf", "run", "-m", "kubetune_operator.handlers", f"--namespace={ns}", "--standalone", "-q"],
                          env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    try:
        wait_for(lambda: _port_open(metrics_port), timeout=60, what="operator metrics port")
        time.sleep(1.0)
        applied: dict[str, float] = {}
        job_seen: dict[str, float] = {}
        first_status: dict[str, float] = {}
        finished: dict[str, float] = {}
        job_done: dict[str, float] = {}  # when each Job was seen Complete
        answered: dict[str, float] = {}  # when the API server answered each FineTuneJob's POST
        ftj_seen: dict[str, float] = {}  # when its ADDED event reached this process's watch

        def on_job(kind, obj, now):
            owner = obj["metadata"].get("labels", {}).get("kubetune.io/job")
            if owner and kind == "ADDED":
                job_seen.setdefault(owner, now)
            conditions = (obj.get("status") or {}).get("conditions") or []
            if owner and any(cond.get("type") == "Complete" and cond.get("status") == "True" for cond in conditions):
                job_done.setdefault(owner, now)

        def on_ftj(kind, obj, now):
            name = obj["metadata"]["name"]
            if kind == "ADDED":
                ftj_seen.setdefault(name, now)
            phase = (obj.get("status") or {}).get("phase")
            if phase:
                first_status.setdefault(name, now)
            if phase in ("Succeeded", "Failed"):
                finished.setdefault(name, now)

        watchers = [Watcher(raw, f"/apis/batch/v1/namespaces/{ns}/jobs", on_job), Watcher(raw, FTJ_PATH.format(ns=ns), on_ftj)]
        for w in watchers:
            w.start()
        ftj_before = apiserver_counter(c.kubeconfig, "finetunejobs")
        ops_before = operator_counters(metrics_port)
        cpu_before = cpu_seconds(op.pid)
        profile = BurstProfile(lambda: apiserver_metrics(c.kubeconfig), lambda: operator_metrics(metrics_port),
                               {**{k: v for k, v in c.pids.items() if k in PROFILED}, "operator": op.pid, "bench": os.getpid()})

        def apply(i: int) -> None:
            name = f"bench-{i:04d}"
            applied[name] = time.monotonic()
            raw.request("POST", FTJ_PATH.format(ns=ns), job_doc(name))
            answered[name] = time.monotonic()

        profile.snap(time.monotonic())
        if os.environ.get("BENCH_ON_BURST"):  # a profiler, say: `py-spy record --pid $OPERATOR_PID ...`
            subprocess.Popen(os.environ["BENCH_ON_BURST"], shell=True, env=dict(os.environ, OPERATOR_PID=str(op.pid), BENCH_N=str(n)))
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(apply, range(n)))
        t_applied = time.monotonic()
        wait_for(lambda: len(job_seen) >= n, timeout=600, interval=0.1, what=f"{n} Jobs", describe=lambda: f"jobs {len(job_seen)}")
        cpu_to_jobs = cpu_seconds(op.pid) - cpu_before
        profile.snap(time.monotonic())
        wait_for(lambda: len(first_status) >= n, timeout=600, interval=0.5, what=f"{n} statuses", describe=lambda: f"statuses {len(first_status)}")
        t_jobs = max(job_seen.values())
        wait_for(lambda: len(finished) >= n, timeout=900, interval=0.5, what=f"{n} jobs finished", describe=lambda: f"finished {len(finished)}")
        t_done = max(finished.values())
        cpu_used = cpu_seconds(op.pid) - cpu_before
        time.sleep(1.0)
        ftj_requests = apiserver_counter(c.kubeconfig, "finetunejobs") - ftj_before - n  # minus our own creates
        ops_after = operator_counters(metrics_port)
        other = sum(v - ops_before.get(k, 0) for k, v in ops_after.items() if not k.startswith("FineTuneJob:"))
        for w in watchers:
            w.stop.set()
        to_job = [job_seen[k] - applied[k] for k in applied if k in job_seen]
        to_status = [first_status[k] - applied[k] for k in applied if k in first_status]
        done_lag = [finished[k] - job_done[k] for k in job_done if k in finished]
        return {
            "n": n,
            "apply_s": t_applied - t0,
            "job_p50": percentile(to_job, 0.5), "job_p99": percentile(to_job, 0.99),
            "status_p50": percentile(to_status, 0.5), "status_p99": percentile(to_status, 0.99),
            "jobs_per_s": n / (t_jobs - t0),
            "done_per_s": n / (t_done - t0),
            "done_lag_p50": percentile(done_lag, 0.5), "done_lag_p99": percentile(done_lag, 0.99),
            "requests_per_job": (ftj_requests + other) / n,
            "rss_mb": peak_rss_mb(op.pid),
            "cpu_ms_per_job": cpu_used * 1000 / n, "burst_cpu_ms_per_job": cpu_to_jobs * 1000 / n,
            "profile": profile.report(n), "backlog": _backlog(applied, job_seen, first_status, t0),
            "split": _split(applied, answered, ftj_seen, job_seen),
        }
    finally:
        os.killpg(op.pid, signal.SIGTERM)
        try:
            op.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(op.pid, signal.SIGKILL)
        log.close()
        _delete_namespace(raw, ns)


def _delete_namespace(raw, ns: str) -> None:
    """Delete a run's namespace and wait until it is gone: garbage collection of
    its N Jobs and pods would otherwise take the next run's CPU (measured: a
    floor run beside the deletion of the run before it made 62 Jobs/s, alone 116)."""
    try:
        raw.request("DELETE", f"/api/v1/namespaces/{ns}")
    except Exception:
        return
    started = time.monotonic()
    wait_for(lambda: not _exists(raw, f"/api/v1/namespaces/{ns}"), timeout=900, interval=1.0, what=f"namespace {ns} deleted")
    print(f"namespace {ns} deleted in {time.monotonic() - started:.0f} s", file=sys.stderr)


def _exists(raw, path: str) -> bool:
    try:
        raw.get(path)
        return True
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise


def _backlog(applied: dict, job_seen: dict, first_status: dict, t0: float) -> str:
    """Jobs applied but without their Job (and without a first status), each second of the burst."""
    end = max(list(job_seen.values()) + list(first_status.values()))
    cells = []
    for second in range(1, int(end - t0) + 2):
        t = t0 + second
        cells.append(f"{second}s:{sum(a <= t for a in applied.values()) - sum(s <= t for s in job_seen.values())}"
                     f"/{sum(a <= t for a in applied.values()) - sum(s <= t for s in first_status.values())}")
    return " ".join(cells)


def _split(applied: dict, answered: dict, ftj_seen: dict, job_seen: dict) -> str:
    """apply -> Job in three parts, each p50 / p99 over the jobs: the FineTuneJob's
    POST; from its answer to its ADDED event on a watch (the API server's watch
    of FineTuneJobs, which the operator's watch shares); from that event to the
    Job's (the operator's pass, the Job's create and the watch of Jobs)."""
    names = [k for k in applied if k in answered and k in ftj_seen and k in job_seen]
    parts = (("FineTuneJob POST answered", [answered[k] - applied[k] for k in names]),
             ("then its ADDED event on a watch", [ftj_seen[k] - answered[k] for k in names]),
             ("then the Job's ADDED event", [job_seen[k] - ftj_seen[k] for k in names]))
    return "; ".join(f"{label} {percentile(v, 0.5):.2f} / {percentile(v, 0.99):.2f} s" for label, v in parts)


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="500,2000")
    ap.add_argument("--qps", type=float, default=200.0, help="operator client QPS (KUBETUNE_CLIENT_QPS)")
    ap.add_argument("--burst", type=int, default=400)
    ap.add_argument("--no-floor", action="store_true", help="skip the floor runs (quicker, while working on the operator)")
    args = ap.parse_args()
    from tests.harness.fixtures import make_kube_clients

    rows, floors = [], []
    # The cluster of `make cluster-up`, else one of its own, stopped at the end
    # (its logs kept when $KUBETUNE_RUN_DIR is set).
    with cluster_mod.running(run_dir=cluster_mod.DEFAULT_RUN_DIR if os.environ.get("KUBETUNE_RUN_DIR") else None) as c:
        kube = make_kube_clients(c)
        for path in CRD_FILES:
            kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        kube.kubectl("wait", "--for=condition=Established", "crd/finetunejobs.kubetune.io", "--timeout=60s")
        log_dir = Path(c.run_dir) / "logs"
        with instant_nodes(kube.raw, c.real_node):
            for n in args.sizes.split(","):
                rows.append(run_one(c, kube, int(n), args.qps, args.burst, log_dir))
                if not args.no_floor:
                    floors.append(run_direct(c, kube, int(n)))
    header = f"{'N':>5} {'apply s':>8} {'->Job p50':>10} {'->Job p99':>10} {'->status p50':>13} {'->status p99':>13} {'Jobs/s':>8} {'done/s':>8} {'req/job':>8} {'RSS MB':>7} {'CPU ms/job':>16}"
    print(f"\noperator benchmark (client QPS {args.qps:g}, burst {args.burst}; trainer command: true; pods on instant stand-in nodes)")
    print(header)
    for r in rows:
        print(f"{r['n']:>5} {r['apply_s']:>8.2f} {r['job_p50']:>10.2f} {r['job_p99']:>10.2f} {r['status_p50']:>13.2f} {r['status_p99']:>13.2f} "
              f"{r['jobs_per_s']:>8.1f} {r['done_per_s']:>8.1f} {r['requests_per_job']:>8.1f} {r['rss_mb']:>7.0f} {r['burst_cpu_ms_per_job']:>7.1f} / {r['cpu_ms_per_job']:>6.1f}")
    print("\nJob Complete -> FineTuneJob Succeeded (the operator's status lag): "
          + ", ".join(f"N={r['n']} p50 {r['done_lag_p50']:.2f} s / p99 {r['done_lag_p99']:.2f} s" for r in rows))
    if floors:
        print("\nfloor: no operator; the benchmark posts each FineTuneJob, then the ConfigMap and Job the operator's builders make for it")
        print(f"{'N':>5} {'apply s':>8} {'->Job p50':>10} {'->Job p99':>10} {'Jobs/s':>8} {'ours/floor p99':>15} "
              f"{'ours ->status p99':>18}  goals (->Job p99 <= {JOB_P99_GOAL:g}x floor, ->status p99 < {STATUS_P99_GOAL:g} s)")
        for f, r in zip(floors, rows):
            ratio = r['job_p99'] / f['job_p99']
            met = ["met" if ratio <= JOB_P99_GOAL else "MISSED", "met" if r['status_p99'] < STATUS_P99_GOAL else "MISSED"]
            print(f"{f['n']:>5} {f['apply_s']:>8.2f} {f['job_p50']:>10.2f} {f['job_p99']:>10.2f} {f['jobs_per_s']:>8.1f} {ratio:>15.2f} "
                  f"{r['status_p99']:>18.2f}  {met[0]}, {met[1]}")
    for r in rows:
        print(f"\nN={r['n']}: where the burst's time went (first apply to last Job)")
        print("\n".join(r["profile"]))
        print(f"  backlog each second (applied without a Job / without a first status): {r['backlog']}")
        print(f"  apply -> Job in parts (p50 / p99): {r['split']}")
    for f in floors:
        print(f"\nfloor N={f['n']}: where the burst's time went (first apply to last Job)")
        print("\n".join(f["profile"]))
    print("\nreq/job: the operator's own client requests (kubetune_operator_api_requests_total, all kinds but FineTuneJob)"
          " + every non-LIST/WATCH request on finetunejobs seen by the API server (Kopf's and ours) minus the benchmark's creates."
          "\nCPU ms/job: the operator's user + system CPU per job, from the first apply until every Job was created / until every job finished.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
