"""YAML output that reads like hand-written Kubernetes manifests."""

from __future__ import annotations

import yaml


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(obj: object) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


def dump_yaml_all(objs: list) -> str:
    return yaml.dump_all(objs, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)
