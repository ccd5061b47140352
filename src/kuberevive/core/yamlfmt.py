"""YAML the way kubeadm writes it (Go ``sigs.k8s.io/yaml``): keys sorted, block style, no anchors.

kubeadm marshals objects to JSON and converts that to YAML with go-yaml v2, a port of libyaml like
PyYAML's emitter. Where the two differ, this module follows Go:

* Key order is go-yaml's ``keyList.Less``: a non-letter sorts before a letter, and runs of digits
  compare as numbers (``a2`` < ``a10``). For keys made of letters only this is plain sorting.
* A string that a YAML 1.1 reader would take for another type (``"2"``, ``"true"``, ``""``, ``"y"``,
  ``"1e3"``) is written double-quoted, as Go does; PyYAML on its own would single-quote it.
* A string that cannot be written plain for syntactic reasons (``*.example.com``, ``a: b``) is
  single-quoted, like both emitters do.
* Strings with a newline use the literal block style; non-ASCII text is written as is.
* Lines are folded at spaces past column 80, libyaml's ``best_width`` that go-yaml keeps.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import yaml

from kuberevive.model import yamlload

_STR_TAG = "tag:yaml.org,2002:str"
_VALUE_TAG = "tag:yaml.org,2002:value"  # PyYAML-only resolution of "="; Go writes it plain

# go-yaml v2 (resolve.go) resolves these plain scalars to non-strings where PyYAML does not.
_GO_ONLY_SPECIALS = frozenset({"y", "Y", "n", "N"})
_GO_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_GO_INT = re.compile(r"^[-+]?(0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|[0-9][0-9_]*)$")


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _needs_double_quotes(dumper: yaml.SafeDumper, data: str) -> bool:
    if data in _GO_ONLY_SPECIALS or _GO_FLOAT.match(data) or _GO_INT.match(data):
        return True
    tag: str = dumper.resolve(yaml.ScalarNode, data, (True, False))  # type: ignore[no-untyped-call]
    return tag not in (_STR_TAG, _VALUE_TAG)


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar(_STR_TAG, data, style="|")
    if _needs_double_quotes(dumper, data):
        return dumper.represent_scalar(_STR_TAG, data, style='"')
    return dumper.represent_scalar(_STR_TAG, data)


def _isdigit(c: str) -> bool:
    return "0" <= c <= "9"


def go_key_less(a: str, b: str) -> bool:
    """go-yaml v2 ``keyList.Less`` for two string keys."""
    ar, br = a, b
    for i in range(min(len(ar), len(br))):
        if ar[i] == br[i]:
            continue
        al, bl = ar[i].isalpha(), br[i].isalpha()
        if al and bl:
            return ar[i] < br[i]
        if al or bl:
            return bl
        an = bn = 0
        if ar[i] == "0" or br[i] == "0":
            j = i - 1
            while j >= 0 and _isdigit(ar[j]):
                if ar[j] != "0":
                    an = bn = 1
                    break
                j -= 1
        ai = i
        while ai < len(ar) and _isdigit(ar[ai]):
            an = an * 10 + int(ar[ai])
            ai += 1
        bi = i
        while bi < len(br) and _isdigit(br[bi]):
            bn = bn * 10 + int(br[bi])
            bi += 1
        if an != bn:
            return an < bn
        if ai != bi:
            return ai < bi
        return ar[i] < br[i]
    return len(ar) < len(br)


def _go_key_cmp(a: Any, b: Any) -> int:
    sa, sb = str(a), str(b)
    if go_key_less(sa, sb):
        return -1
    if go_key_less(sb, sa):
        return 1
    return 0


def _item_cmp(x: tuple[Any, Any], y: tuple[Any, Any]) -> int:
    return _go_key_cmp(x[0], y[0])


def _dict_representer(dumper: yaml.SafeDumper, data: dict[Any, Any]) -> yaml.MappingNode:
    items = sorted(data.items(), key=functools.cmp_to_key(_item_cmp))
    return dumper.represent_mapping("tag:yaml.org,2002:map", items)


_Dumper.add_representer(str, _str_representer)
_Dumper.add_representer(dict, _dict_representer)


def dump(obj: Any) -> str:
    """Serialise ``obj`` with Go's key order and Go-like block style (sequences not indented)."""
    return yaml.dump(
        obj,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=80,  # go-yaml v2 (libyaml) best_width: long plain scalars fold at spaces
    )


def load(text: str | bytes) -> Any:
    return yamlload.load(text)
