"""Pure builders: (FineTuneJob, Settings) -> Kubernetes object dicts. No I/O."""

from .meta import config_map_name, headless_service_name, serving_name, training_job_name
from .serving import build_serving_deployment, build_serving_objects, build_serving_service, serving_endpoint
from .training import (
    build_configmap,
    build_headless_service,
    build_pod_template,
    build_training_job,
    build_training_objects,
)

__all__ = [
    "build_configmap", "build_headless_service", "build_pod_template", "build_serving_deployment",
    "build_serving_objects", "build_serving_service", "build_training_job", "build_training_objects",
    "config_map_name", "headless_service_name", "serving_endpoint", "serving_name", "training_job_name",
]
