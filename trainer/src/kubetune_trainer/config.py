"""Reading the trainer config.

The config model is the contract's (`kubetune_contract.config.TrainerConfig`):
declared once, rendered fully explicit by the operator, validated here as it
arrives. This module only turns a file into that model, with every problem as
one `InvalidConfig` line (exit code 2), and masks secrets for the one log line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from kubetune_contract.config import ConfigError, TrainerConfig
from kubetune_contract.config import parse_config as _parse_contract

from .errors import InvalidConfig

__all__ = ["TrainerConfig", "load_config", "parse_config", "redact"]


def parse_config(data: object, source: str = "<config>") -> TrainerConfig:
    """Validate a loaded JSON object; errors become one line naming the field."""
    try:
        return _parse_contract(data, source)
    except ConfigError as exc:
        raise InvalidConfig(str(exc)) from None


def load_config(path: str | Path) -> TrainerConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidConfig(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidConfig(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    return parse_config(data, str(path))


_SECRET_KEY = re.compile(r"(secret|token|password|key|credential)", re.I)
_URL_USERINFO = re.compile(r"(\w+://)[^/@\s]+:[^/@\s]+@")


def redact(value):
    """A copy with anything secret-looking masked (for the one config log line)."""
    if isinstance(value, dict):
        return {k: ("***" if _SECRET_KEY.search(k) and v not in (None, "") and not isinstance(v, (dict, list, bool, int, float)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _URL_USERINFO.sub(r"\1***@", value)
    return value
