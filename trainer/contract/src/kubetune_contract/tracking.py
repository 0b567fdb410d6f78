"""What the trainer reports about experiment tracking, and where its files go.

The trainer puts a `TrackingOutcome` under `tracking` in its termination
message; the operator copies it to `status.tracking` and turns it into the
`Tracking` condition. Tracking is best effort by design: a tracker that fails
or does not answer leaves `degraded` set and training goes on.
"""

from __future__ import annotations

from pydantic import Field

from .base import ApiModel

# Under the job's output URI: <output uri>/tracking/tensorboard, <output uri>/tracking/wandb
TRACKING_DIR = "tracking"
TENSORBOARD_DIR = f"{TRACKING_DIR}/tensorboard"
WANDB_DIR = f"{TRACKING_DIR}/wandb"
# The MLflow run's artifact folder that holds the report (metrics.json, report.html, ...)
MLFLOW_REPORT_ARTIFACTS = "report"

CONDITION = "Tracking"
LOGGED = "TrackingLogged"  # every tracker took what it was sent
DEGRADED = "TrackingDegraded"  # a tracker failed or did not answer; training went on without it
MAX_DEGRADED = 600


class TrackingOutcome(ApiModel):
    backend: str = Field(max_length=32, description="The tracker (tracking.backend): wandb, mlflow or none.")
    run_url: str | None = Field(None, max_length=2048, description="The run in the tracker's UI (MLflow; W&B once synced).")
    files_uri: str | None = Field(None, max_length=2048, description="W&B offline: where the run files were uploaded (`wandb sync` them).")
    tensorboard_uri: str | None = Field(None, max_length=2048, description="tracking.tensorboard: where the event files were uploaded.")
    degraded: str | None = Field(None, max_length=MAX_DEGRADED,
                                 description="Why tracking was degraded (a tracker failed or did not answer in time); unset when it was not.")
