"""The FineTuneJob API (kubetune.io/v1alpha1): models, CRD generation, parsing."""

from .errors import Problem
from .job import API_VERSION, GROUP, KIND, PLURAL, VERSION, FineTuneJob
from .manifest import ParsedManifest, load_manifests, parse_job
from .spec import FineTuneJobSpec
from .status import PHASES, ConditionType, FineTuneJobStatus, Reason

__all__ = [
    "API_VERSION", "GROUP", "KIND", "PLURAL", "VERSION", "PHASES",
    "ConditionType", "FineTuneJob", "FineTuneJobSpec", "FineTuneJobStatus",
    "ParsedManifest", "Problem", "Reason", "load_manifests", "parse_job",
]
