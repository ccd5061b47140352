"""YAML the way kubeadm writes it (Go ``sigs.k8s.io/yaml``): keys sorted, block style, no anchors."""

from __future__ import annotations

from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_representer)


def dump(obj: Any) -> str:
    """Serialise ``obj`` with sorted keys and Go-like block style (sequences not indented)."""
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=1 << 30)


def load(text: str | bytes) -> Any:
    return yaml.safe_load(text)
