"""``kuberevive ca extend``, the pure part: which CAs to extend, their new certificates (:func:`pki.extend_ca`),
and every file that holds an old CA certificate rewritten to hold the new one (PEM bundles such as a kubelet's
``clientCAFile``, and kubeconfigs' ``certificate-authority-data``). Nothing here reads the node or the clock."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

import yaml
from cryptography import x509

from kuberevive.core import certs, pki, yamlfmt
from kuberevive.errors import PkiError, PlanError
from kuberevive.model import yamlload
from kuberevive.model.artifacts import Artifact, ArtifactKind

#: The CAs kubeadm makes (names as ``certs check`` shows them).
CA_NAMES = ("ca", "front-proxy-ca", "etcd-ca")
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----\r?\n?", re.S)


@dataclass(frozen=True)
class Extended:
    """One CA: its old certificate and the new one (same key)."""

    name: str
    path: PurePosixPath
    old: x509.Certificate
    new: x509.Certificate

    @property
    def new_pem(self) -> bytes:
        return pki.encode_certificate_pem(self.new)


def select(report: certs.CertsReport, wanted: Sequence[str], everything: bool) -> list[certs.CertItem]:
    """The CA rows of ``report`` to extend: ``wanted`` (names), or every CA when ``everything``, or else the ones
    that are expiring or expired. A CA without its key on the node (external CA) cannot be extended."""
    cas = [i for i in report.items if i.group is certs.Group.CA and i.status is not certs.Status.MISSING]
    unknown = sorted(set(wanted) - set(CA_NAMES))
    if unknown:
        raise PlanError(f"unknown CA {', '.join(unknown)}", f"name one of {', '.join(CA_NAMES)}")
    if wanted:
        chosen = [i for i in cas if i.name in wanted]
        absent = sorted(set(wanted) - {i.name for i in chosen})
        if absent:
            raise PlanError(f"{', '.join(absent)}: no such CA certificate on this node", "check --root")
    elif everything:
        chosen = cas
    else:
        chosen = [i for i in cas if i.status in (certs.Status.EXPIRING, certs.Status.EXPIRED)]
    external = [i.name for i in chosen if i.externally_managed]
    if external:
        raise PlanError(
            f"{', '.join(external)}: the CA key is not on this node (external CA); kuberevive cannot extend it",
            "extend that CA where its key is kept",
        )
    return chosen


def extend(
    items: Sequence[certs.CertItem], files: Mapping[PurePosixPath, bytes], now: datetime, validity: timedelta
) -> list[Extended]:
    """The new certificate of each CA in ``items`` (``files``: node path -> bytes, holding each cert and key)."""
    out = []
    for item in items:
        path, key_path = PurePosixPath(item.path), PurePosixPath(item.key_path or "")
        cert_data, key_data = files.get(path), files.get(key_path)
        if cert_data is None or key_data is None:
            raise PlanError(f"{path} or {key_path} is missing", "restore the CA from a backup")
        old = pki.load_certificate(cert_data, str(path))
        try:
            new = pki.extend_ca(old, pki.load_private_key(key_data, str(key_path)), now, validity)
        except PkiError as exc:
            raise PlanError(f"{path}: {exc.message}", "put back the CA's own key") from None
        out.append(Extended(item.name, path, old, new))
    return out


def same_ca(a: x509.Certificate, b: x509.Certificate) -> bool:
    """The same CA (subject and public key), whatever its validity and serial."""
    return a.subject == b.subject and pki.same_public_key(a, b)


def replace_in_bundle(data: bytes, extended: Sequence[Extended]) -> bytes | None:
    """``data`` (PEM, maybe several certificates and other text) with every certificate of an extended CA, old
    or any other copy with the same subject and key, replaced by the new one; None when nothing changes."""
    changed = False

    def swap(m: re.Match[bytes]) -> bytes:
        nonlocal changed
        try:
            cert = x509.load_pem_x509_certificate(m.group(0))
        except ValueError:
            return m.group(0)
        for e in extended:
            if same_ca(cert, e.old) and cert != e.new:
                changed = True
                return e.new_pem
        return m.group(0)

    out = _PEM_CERT.sub(swap, data)
    return out if changed else None


def replace_in_kubeconfig(path: PurePosixPath, data: bytes, extended: Sequence[Extended]) -> bytes | None:
    """``data`` with every cluster's ``certificate-authority-data`` passed through :func:`replace_in_bundle`
    (everything else as it was); None when no cluster holds an extended CA."""
    try:
        doc: Any = yamlload.load(data)
    except yaml.YAMLError as exc:
        raise PlanError(f"{path} is not a readable kubeconfig: {exc}", f"repair or regenerate {path}") from None
    changed = False
    for entry in (doc.get("clusters") or []) if isinstance(doc, dict) else []:
        cluster = entry.get("cluster") if isinstance(entry, dict) else None
        value = cluster.get("certificate-authority-data") if isinstance(cluster, dict) else None
        if not isinstance(value, str):
            continue
        try:
            pem = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        new = replace_in_bundle(pem, extended)
        if new is not None:
            assert isinstance(cluster, dict)
            cluster["certificate-authority-data"] = base64.b64encode(new).decode()
            changed = True
    return yamlfmt.dump(doc).encode() if changed else None


def rewrites(
    files: Mapping[PurePosixPath, tuple[bytes, int]], extended: Sequence[Extended], with_cas: bool = True
) -> list[Artifact]:
    """The files of ``files`` (node path -> content and mode) that hold an extended CA, rewritten (same mode):
    ``*.conf``/kubeconfigs through :func:`replace_in_kubeconfig`, anything else as a PEM bundle. With
    ``with_cas`` (the node that holds the CA keys) the CA certificates themselves come first."""
    out: list[Artifact] = []
    for e in extended if with_cas else ():
        out.append(
            Artifact(
                e.path,
                pki.MODE_CERT,
                ArtifactKind.CERTIFICATE,
                f"{e.name} extended to {e.new.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC (same key)",
                e.new_pem,
            )
        )
    own = {e.path for e in extended} if with_cas else set()
    for path, (data, mode) in sorted(files.items()):
        if path in own:
            continue
        if path.suffix == ".conf":
            new = replace_in_kubeconfig(path, data, extended)
            kind, what = ArtifactKind.KUBECONFIG, f"{path.name} trusting the extended CA"
        else:
            new = replace_in_bundle(data, extended)
            kind, what = ArtifactKind.CERTIFICATE, f"{path.name} holding the extended CA"
        if new is not None:
            out.append(Artifact(path, mode & 0o7777, kind, what, new))
    return out
