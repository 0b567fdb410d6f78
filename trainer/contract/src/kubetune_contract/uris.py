"""URI types for models, datasets, checkpoints and outputs.

One regex per scheme, shared by the pydantic validators and the CRD patterns, so
the API server and `kubetune validate` accept exactly the same strings.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from .base import no_expansion, no_expansion_field

_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_HF_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"

# A model file in a Hugging Face repository (base models given as one GGUF
# file): hf://org/name/path/to/file.gguf.
GGUF_SUFFIX = ".gguf"

SCHEME_PATTERNS: dict[str, str] = {
    "hf": rf"hf://{_HF_PART}(/{_HF_PART})?",
    "hf-gguf": rf"hf://{_HF_PART}/{_HF_PART}(/{_HF_PART})*\{GGUF_SUFFIX}",
    "s3": rf"s3://{_BUCKET}(/[^\s]*)?",
    "pvc": rf"pvc://{_DNS_LABEL}(/[^\s]*)?",
    "file": r"file://[^\s]+",
}

SCHEME_HINTS: dict[str, str] = {
    "hf": "hf://org/name",
    "hf-gguf": "hf://org/name/file.gguf",
    "s3": "s3://bucket/prefix",
    "pvc": "pvc://claim-name/path",
    "file": "file:///absolute/path or file://relative/path",
}


def is_gguf(uri: str) -> bool:
    """Whether a model URI names one GGUF file (rather than a model directory)."""
    return uri.endswith(GGUF_SUFFIX)


def split_hf_file(uri: str) -> tuple[str, str]:
    """hf://org/name/path/file.gguf -> ("org/name", "path/file.gguf")."""
    org, name, path = uri.removeprefix("hf://").split("/", 2)
    return f"{org}/{name}", path


def uri_pattern(schemes: tuple[str, ...]) -> str:
    """An anchored regex accepting any of `schemes`."""
    return "^(" + "|".join(SCHEME_PATTERNS[s] for s in schemes) + ")$"


def _uri_validator(schemes: tuple[str, ...]):
    compiled = re.compile(uri_pattern(schemes))

    def check(value: str) -> str:
        if compiled.match(value):
            return value
        scheme = value.split("://", 1)[0] if "://" in value else None
        valid = ", ".join(SCHEME_HINTS[s] for s in schemes)
        forms = [SCHEME_HINTS[s] for s in schemes if s.split("-")[0] == scheme]  # hf and hf-gguf are both hf://
        if forms:
            raise ValueError(f"malformed {scheme}:// URI {value!r}; expected {' or '.join(forms)}")
        raise ValueError(f"unsupported URI {value!r}; valid forms: {valid}")

    return check


def UriType(*schemes: str, description: str):  # noqa: N802 - reads as a type
    """A string URI restricted to `schemes`, with the same pattern in the CRD."""
    return Annotated[
        str,
        Field(description=description, max_length=2048, json_schema_extra=no_expansion_field(pattern=uri_pattern(schemes))),
        AfterValidator(_uri_validator(schemes)),
        AfterValidator(no_expansion),
    ]
