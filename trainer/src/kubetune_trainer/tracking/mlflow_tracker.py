"""MLflow through its client (`mlflow-skinny`), against the server at tracking.uri.

The client's HTTP calls get a short timeout and no retry. MLflow's defaults
are 120 s and seven retries with backoff: minutes for a server that does not
answer; and a retried POST that had in fact gone through creates a second run
(seen on a loaded machine: an orphan run left RUNNING beside the real one). So
a server that does not answer degrades tracking after one timeout.
MLFLOW_TRACKING_TOKEN, from the job's tracking Secret, authenticates.
"""

from __future__ import annotations

import os
import time

from kubetune_contract.tracking import MLFLOW_REPORT_ARTIFACTS

# MLflow's batch limits: 100 params and 1000 metrics a call, 6000 characters a param value.
_PARAMS_PER_CALL = 100
_PARAM_VALUE_MAX = 6000


def limit_http(timeout_s: float) -> None:
    """Before the client is imported: MLflow reads these once."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(timeout_s))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


class MlflowTracker:
    name = "mlflow"

    def __init__(self, uri: str, experiment: str, run_name: str, tags: dict[str, str], timeout_s: float):
        limit_http(timeout_s)
        self.uri = uri.rstrip("/")
        self.experiment = experiment
        self.run_name = run_name
        self.tags = tags
        self.run_id: str | None = None
        self.run_url: str | None = None
        self._client = None

    def start(self) -> None:
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=self.uri)
        found = self._client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found else self._client.create_experiment(self.experiment)
        run = self._client.create_run(experiment_id, run_name=self.run_name, tags=self.tags)
        self.run_id = run.info.run_id
        self.run_url = f"{self.uri}/#/experiments/{experiment_id}/runs/{self.run_id}"

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:_PARAM_VALUE_MAX]) for k, v in params.items()]
        for i in range(0, len(items), _PARAMS_PER_CALL):
            self._client.log_batch(self.run_id, params=items[i:i + _PARAMS_PER_CALL])

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def log_report(self, report_dir) -> None:
        self._client.log_artifacts(self.run_id, str(report_dir), MLFLOW_REPORT_ARTIFACTS)

    def finish(self, ok: bool = True) -> None:
        if self.run_id:
            self._client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")
