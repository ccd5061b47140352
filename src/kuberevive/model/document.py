"""The one JSON contract of every machine-readable document (``--json``, ``-o json|yaml``).

Every document is a JSON object that starts with ``schema`` (``kuberevive.<name>/v<N>``) and ``kind`` (what it
is: ``RecoveryPlan``, ``RecoveryResult``, ...), made only by :func:`stamp`; times are RFC 3339 UTC with a ``Z``
(:func:`rfc3339`); booleans, numbers and lists are JSON's own, never strings of them. Each
:class:`DocumentType` has a JSON Schema (draft 2020-12) in ``kuberevive/schemas/<kind>.schema.json``, which the
tests check the real outputs of every command against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class DocumentType:
    """One kind of document: its schema id ``kuberevive.<name>/v<version>`` and its ``kind``."""

    name: str
    kind: str
    version: int = 1

    @property
    def schema(self) -> str:
        return f"kuberevive.{self.name}/v{self.version}"

    @property
    def schema_file(self) -> str:
        """The JSON Schema's file name in the ``kuberevive.schemas`` package."""
        return f"{self.kind}.schema.json"


class Document(dict[str, Any]):
    """A stamped document (only :func:`stamp` makes one): what ``Environment.json`` prints."""


def stamp(doc_type: DocumentType, body: Mapping[str, Any]) -> Document:
    """``body`` as a :class:`Document` of ``doc_type``: ``schema`` and ``kind`` first, then ``body``'s keys."""
    clash = {"schema", "kind"} & set(body)
    if clash:
        raise ValueError(f"a document body may not set {sorted(clash)}: stamp() does")
    return Document({"schema": doc_type.schema, "kind": doc_type.kind, **body})


def rfc3339(t: datetime) -> str:
    """``t`` as RFC 3339 UTC to the whole second, as kubectl writes times: ``2026-12-05T01:02:03Z``. The one
    formatter of a time in a document, an API object or a message; a naive ``t`` is refused (which zone?)."""
    if t.tzinfo is None:
        raise ValueError("the time must be timezone-aware")
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_or_none(t: datetime | None) -> str | None:
    return None if t is None else rfc3339(t)


DIAGNOSE = DocumentType("diagnose", "DiagnoseReport", 2)
CERTS_CHECK = DocumentType("certs", "CertificatesReport")
CERTS_RENEW_PLAN = DocumentType("certs-renew", "RenewPlan")
CERTS_RENEW_RESULT = DocumentType("certs-renew", "RenewResult")
CA_EXTEND_PLAN = DocumentType("ca-extend", "CAExtendPlan")
CA_EXTEND_RESULT = DocumentType("ca-extend", "CAExtendResult")
RECOVERY_PLAN = DocumentType("recover", "RecoveryPlan")
RECOVERY_RESULT = DocumentType("recover", "RecoveryResult")
GENERATE = DocumentType("generate", "GenerateResult")
BACKUP_CREATE = DocumentType("backup", "BackupCreated")
BACKUP_VERIFY = DocumentType("backup", "BackupVerification")
BACKUP_LIST = DocumentType("backup", "BackupList")
BACKUP_PRUNE = DocumentType("backup", "BackupPruneResult")
BACKUP_RESTORE = DocumentType("backup", "BackupRestoreResult")
RESTORE_ETCD = DocumentType("restore-etcd", "EtcdRestoreResult")
VERSION = DocumentType("version", "Version")
REPLACE_PLAN = DocumentType("replace-control-plane", "ReplacePlan")
REPLACE_RESULT = DocumentType("replace-control-plane", "ReplaceResult")
QUORUM_PLAN = DocumentType("quorum-restore", "QuorumPlan")
QUORUM_RESULT = DocumentType("quorum-restore", "QuorumResult")
LAB_STATUS = DocumentType("lab", "LabStatus")
LAB_DEMO = DocumentType("lab", "LabDemoReport")

#: Every document kuberevive prints (each has its schema file; the tests check both ways).
DOCUMENT_TYPES: tuple[DocumentType, ...] = (
    DIAGNOSE,
    CERTS_CHECK,
    CERTS_RENEW_PLAN,
    CERTS_RENEW_RESULT,
    CA_EXTEND_PLAN,
    CA_EXTEND_RESULT,
    RECOVERY_PLAN,
    RECOVERY_RESULT,
    GENERATE,
    BACKUP_CREATE,
    BACKUP_VERIFY,
    BACKUP_LIST,
    BACKUP_PRUNE,
    BACKUP_RESTORE,
    RESTORE_ETCD,
    VERSION,
    REPLACE_PLAN,
    REPLACE_RESULT,
    QUORUM_PLAN,
    QUORUM_RESULT,
    LAB_STATUS,
    LAB_DEMO,
)
