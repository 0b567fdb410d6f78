"""A throw-away Prometheus (the Debian binary from hack/cluster-tools) that
scrapes given targets every second, with a PromQL query helper."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from . import procs
from .cluster import tools_bin


def promtool_path() -> Path:
    """promtool next to the harness's Prometheus (for rule/config checks)."""
    return tools_bin() / "promtool"


class Prometheus:
    """``Prometheus(["127.0.0.1:9100"]).start()``; ``query("up")``; ``stop()``.

    Targets live in a file_sd file, so ``set_targets`` changes them without a
    restart (Prometheus re-reads it within a second or so)."""

    def __init__(self, targets: list[str], run_dir: Path | None = None,
                 scrape_interval: str = "1s", job: str = "kubetune-test",
                 die_with_parent: bool = True):
        self.dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="kubetune-prom-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.job = job
        self.scrape_interval = scrape_interval
        self.die_with_parent = die_with_parent
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self._targets_file = self.dir / "targets.json"
        self.set_targets(targets)

    @property
    def log_path(self) -> Path:
        return self.dir / "prometheus.log"

    def set_targets(self, targets: list[str], labels: dict[str, str] | None = None) -> None:
        tmp = self._targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": list(targets), "labels": labels or {}}]))
        tmp.replace(self._targets_file)

    def start(self, timeout: float = 60) -> "Prometheus":
        config = self.dir / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{
                "job_name": self.job, "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "file_sd_configs": [{"files": [str(self._targets_file)], "refresh_interval": "1s"}],
            }],
        }))
        self.proc = procs.spawn([
            str(tools_bin() / "prometheus"), f"--config.file={config}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ], self.log_path, die_with_parent=self.die_with_parent)
        procs.wait_until(lambda: _get(self.url + "/-/ready").startswith("Prometheus"), timeout,
                         "prometheus", self.proc, self.log_path)
        return self

    def query(self, promql: str) -> list[dict]:
        """Instant query; the ``result`` list (``[{"metric": {...}, "value": [t, "v"]}]``)."""
        body = json.loads(_get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})))
        if body.get("status") != "success":
            raise RuntimeError(f"PromQL {promql!r} failed: {body}")
        return body["data"]["result"]

    def wait_for_value(self, promql: str, timeout: float = 30) -> float:
        """Poll until ``promql`` returns a sample; its value (first series)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return float(result[0]["value"][1])
            if time.monotonic() > deadline:
                targets = _get(self.url + "/api/v1/targets")
                raise TimeoutError(f"no sample for {promql!r} after {timeout}s; targets: {targets}")
            time.sleep(0.5)

    def stop(self, remove_data: bool = True) -> None:
        if self.proc is not None:
            procs.stop_group(self.proc.pid)
            self.proc.wait()
            self.proc = None
        if remove_data:
            shutil.rmtree(self.dir, ignore_errors=True)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()
