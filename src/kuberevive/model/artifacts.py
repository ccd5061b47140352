"""A file the tool would write on a node: where, with which mode, what it is, and its bytes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath


class ArtifactKind(StrEnum):
    CERTIFICATE = "certificate"
    PRIVATE_KEY = "private-key"
    PUBLIC_KEY = "public-key"
    KUBECONFIG = "kubeconfig"
    MANIFEST = "static-pod-manifest"
    CONFIG = "config"


@dataclass(frozen=True)
class Artifact:
    path: PurePosixPath
    """Absolute path on the node, e.g. ``/etc/kubernetes/pki/ca.crt`` (the root prefix is added by io)."""
    mode: int
    kind: ArtifactKind
    description: str
    content: bytes

    def __post_init__(self) -> None:
        if not self.path.is_absolute():
            raise ValueError(f"artifact path must be absolute: {self.path}")
