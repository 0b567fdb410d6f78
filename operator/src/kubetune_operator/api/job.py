"""The whole `FineTuneJob` object, as a manifest or as the API server returns it."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from kubetune_contract.base import ApiModel
from .spec import DNS_LABEL, FineTuneJobSpec
from .status import FineTuneJobStatus

GROUP = "kubetune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FineTuneJob"
PLURAL = "finetunejobs"
SINGULAR = "finetunejob"
SHORT_NAMES = ["ftj"]


class ObjectMeta(ApiModel):
    """The metadata fields a manifest may set; server-filled ones are tolerated."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    # FineTuneJob names become Job, Service and Pod names: keep them DNS labels.
    name: str = Field(max_length=63, pattern=DNS_LABEL)
    namespace: str | None = Field(None, max_length=63, pattern=DNS_LABEL)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class FineTuneJob(ApiModel):
    api_version: Literal["kubetune.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["FineTuneJob"]
    metadata: ObjectMeta
    spec: FineTuneJobSpec
    status: FineTuneJobStatus | None = None
