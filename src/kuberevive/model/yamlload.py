"""Reading YAML safely: ``safe_load`` with a nesting limit, and (for kubeadm configurations) no duplicate keys.

Every YAML the tool reads goes through here. A document nested deeper than :data:`MAX_DEPTH` (``[`` 100,000
times) is a ``yaml.YAMLError`` like any other malformed input, never a ``RecursionError`` (F9: G-C-deep-nesting,
D-21). With ``strict`` a mapping that repeats a key is an error, as kubeadm's strict decoding refuses it
(``mapping key "advertiseAddress" already defined``; F12: G-C-dupkey).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

#: Deepest nesting accepted; kubeadm's configurations, kubeconfigs and manifests nest about 10 levels.
MAX_DEPTH = 100


class _BoundedLoader(yaml.SafeLoader):
    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _StrictLoader(_BoundedLoader):
    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in seen:
                    raise ConstructorError(
                        "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def load(text: str | bytes) -> Any:
    """One YAML document (``yaml.safe_load`` with the nesting limit)."""
    return yaml.load(text, Loader=_BoundedLoader)


def load_all(text: str | bytes, strict: bool = False) -> list[Any]:
    """Every document of a YAML stream; ``strict``: a repeated key in a mapping is an error."""
    return list(yaml.load_all(text, Loader=_StrictLoader if strict else _BoundedLoader))
