"""What ``kuberevive generate`` writes: the artifacts of ``kubeadm init`` for one configuration.

Pure: the caller passes the files already on the node (``existing``) and the time. Existing files
are treated as kubeadm treats them: a valid CA and valid leaves are reused (not regenerated), a
kubeconfig whose embedded CA equals ``ca.crt`` is kept; the static Pod manifests are deterministic,
so an identical one is left as it is by the writer.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import PurePosixPath

import yaml

from kuberevive.core.kubeconfig import build_kubeconfigs, first_cluster_ca
from kuberevive.core.manifests import build_manifests
from kuberevive.core.pki import (
    PkiBundle,
    build_certificates,
    is_expired,
    key_matches_certificate,
    load_certificate,
    load_private_key,
)
from kuberevive.errors import ConfigError, PkiError
from kuberevive.model import yamlload
from kuberevive.model.artifacts import Artifact
from kuberevive.model.config import DEFAULT_KUBERNETES_DIR, KubeadmConfig, NodeFacts

KUBECONFIG_NAMES = ("admin.conf", "super-admin.conf", "kubelet.conf", "controller-manager.conf", "scheduler.conf")


class Target(StrEnum):
    CERTS = "certs"
    KUBECONFIGS = "kubeconfigs"
    MANIFESTS = "manifests"
    ALL = "all"


@dataclass
class GenerateResult:
    artifacts: list[Artifact] = field(default_factory=list)
    reused: list[PurePosixPath] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    expired: list[PurePosixPath] = field(default_factory=list)
    """Reused files whose certificate has expired (never "kept (valid)")."""


def paths_to_read(cfg: KubeadmConfig) -> tuple[PurePosixPath, ...]:
    """Directories whose files the generator needs to see (PKI) plus the kubeconfigs."""
    return (PurePosixPath(cfg.cluster.certificates_dir),)


def kubeconfig_paths() -> tuple[PurePosixPath, ...]:
    return tuple(PurePosixPath(DEFAULT_KUBERNETES_DIR) / n for n in KUBECONFIG_NAMES)


def _embedded_ca(data: bytes) -> bytes | None:
    try:
        return first_cluster_ca(data)
    except ConfigError:
        return None


def _client_cert_expired(data: bytes, now: datetime) -> bool:
    """The kubeconfig's embedded client certificate has expired (False when there is none to judge)."""
    try:
        doc = yamlload.load(data)
        raw = doc["users"][0]["user"]["client-certificate-data"]
        return is_expired(load_certificate(base64.b64decode(raw), "kubeconfig"), now)
    except (yaml.YAMLError, PkiError, AttributeError, LookupError, TypeError, ValueError):
        return False


def generate(
    target: Target,
    cfg: KubeadmConfig,
    facts: NodeFacts,
    now: datetime,
    existing: Mapping[PurePosixPath, bytes],
    renew_expired: bool = False,
) -> GenerateResult:
    """``renew_expired`` (``--force``): expired leaf certificates and kubeconfigs are issued again."""
    result = GenerateResult()
    bundle: PkiBundle | None = None
    if target in (Target.CERTS, Target.ALL):
        bundle = build_certificates(cfg, now, existing, renew_expired)
        result.warnings += bundle.warnings
        result.artifacts += bundle.artifacts
        result.reused += bundle.reused
        result.expired += bundle.expired

    if target in (Target.KUBECONFIGS, Target.ALL):
        if bundle is not None:
            ca_cert, ca_key = bundle.ca_cert_pem, bundle.ca_key_pem
        else:
            ca_cert, ca_key = _existing_ca(cfg, existing)
        if ca_key is None:
            result.warnings.append(
                "external CA mode (ca.key is absent): kubeconfigs are not generated; supply them yourself"
            )
        else:
            for a in build_kubeconfigs(cfg, ca_cert, ca_key, now):
                current = existing.get(a.path)
                if current is None or _embedded_ca(current) != ca_cert:
                    result.artifacts.append(a)
                elif not _client_cert_expired(current, now):
                    result.reused.append(a.path)  # kubeadm keeps a kubeconfig that trusts the same CA
                elif renew_expired:
                    result.artifacts.append(a)
                else:
                    result.reused.append(a.path)
                    result.expired.append(a.path)
                    result.warnings.append(
                        f"the client certificate in {a.path} has expired and was kept; "
                        "run again with --force to renew it (the old file is moved aside)"
                    )

    if target in (Target.MANIFESTS, Target.ALL):
        external_ca = "ca" in bundle.external_cas if bundle is not None else _external_ca(cfg, existing)
        result.artifacts += build_manifests(cfg, facts, external_ca=external_ca)
    return result


def _existing_ca(cfg: KubeadmConfig, existing: Mapping[PurePosixPath, bytes]) -> tuple[bytes, bytes | None]:
    """The cluster CA already on the node (for ``generate kubeconfigs`` alone), checked to match its key."""
    d = PurePosixPath(cfg.cluster.certificates_dir)
    cert_pem, key_pem = existing.get(d / "ca.crt"), existing.get(d / "ca.key")
    if cert_pem is None:
        raise PkiError(
            f"the cluster CA {d / 'ca.crt'} does not exist", "run 'kuberevive generate certs' first, or 'generate all'"
        )
    cert = load_certificate(cert_pem, str(d / "ca.crt"))
    if key_pem is None:
        return cert_pem, None
    if not key_matches_certificate(load_private_key(key_pem, str(d / "ca.key")), cert):
        raise PkiError(
            f"{d / 'ca.key'} does not belong to {d / 'ca.crt'} (their public keys differ)",
            "restore the matching pair (from a backup) or move both aside to create a new CA",
        )
    return cert_pem, key_pem


def _external_ca(cfg: KubeadmConfig, existing: Mapping[PurePosixPath, bytes]) -> bool:
    d = PurePosixPath(cfg.cluster.certificates_dir)
    return d / "ca.crt" in existing and d / "ca.key" not in existing
