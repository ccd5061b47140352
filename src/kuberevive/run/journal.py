"""The journals of resumable commands and the lock that keeps two runs apart.

A journal is a typed dataclass saved as JSON (schema :data:`VERSION`, file 0600, written atomically with
``fsync`` through :class:`NodeRoot`) after every change. :class:`Journal` holds what every resumable command
records (status, each step's state, the exact files a step writes before it writes them, timings);
:class:`RecoveryJournal` (``/var/lib/kuberevive/recover/journal.json``) adds what ``recover`` decides once and
must find again after a kill: the node identity, the stored configuration read from etcd, the new bootstrap
token, the trust changes, the eviction guard and the per-node re-trust states; :class:`RenewJournal` adds the
targets of ``certs renew``. A run killed at any point (SIGKILL, power loss) therefore resumes with the same
keys and certificates and converges to the same result. Because a journal holds private keys while a run
goes on, the file contents (and the token) are dropped when it completes (paths and SHA-256 stay).

A journal whose JSON has a key this code does not know, or lacks one it needs, is refused with one line
(:class:`~kuberevive.errors.PlanError`): it was written by another version.

``/var/lib/kuberevive/recover/lock`` is held with ``flock(LOCK_EX | LOCK_NB)`` for the whole run;
the kernel releases it when the process dies, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, ClassVar, Self

from kuberevive.errors import PlanError
from kuberevive.io.host import Host
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.model.paths import NODE_LOCK, RECOVER_DIR
from kuberevive.model.recover import NodeIdentity, TrustFlags

JOURNAL = RECOVER_DIR / "journal.json"
LOCK = NODE_LOCK
VERSION = 1


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextmanager
def recovery_lock(host: Host) -> Iterator[None]:
    """The node's lock (:meth:`Host.lock`, shared with ``generate``, ``certs renew`` and ``ca extend``) for a
    recovery."""
    with host.lock("recover", error=PlanError):
        yield


# ------------------------------------------------------------------------------------- records


@dataclass
class StepRecord:
    state: str
    started_at: str | None = None
    done_at: str | None = None
    seconds: float | None = None


@dataclass
class ArtifactRecord:
    """One file a step writes: everything but ``content`` stays after the run completes."""

    path: str
    mode: int
    kind: str
    description: str
    sha256: str
    content: str | None = None
    """Base64; dropped when the run completes."""

    @classmethod
    def of(cls, a: Artifact) -> ArtifactRecord:
        return cls(
            str(a.path),
            a.mode,
            a.kind.value,
            a.description,
            hashlib.sha256(a.content).hexdigest(),
            base64.b64encode(a.content).decode("ascii"),
        )

    def artifact(self) -> Artifact:
        assert self.content is not None
        return Artifact(
            PurePosixPath(self.path),
            self.mode,
            ArtifactKind(self.kind),
            self.description,
            base64.b64decode(self.content),
        )

    def content_bytes(self) -> bytes | None:
        return base64.b64decode(self.content) if self.content is not None else None


def artifact_to_json(a: Artifact) -> dict[str, Any]:
    return dataclasses.asdict(ArtifactRecord.of(a))


def artifact_from_json(d: dict[str, Any]) -> Artifact:
    rec = ArtifactRecord(**d)
    if rec.content is None:
        raise ValueError("no content")
    return rec.artifact()


@dataclass
class StoredConfig:
    """The ClusterConfiguration (and kubelet configuration) read from etcd."""

    cluster: str
    kubelet: str | None = None


@dataclass
class NodeRetrust:
    """One other node's re-trust state: ``done``, ``failed``, ``kept`` or ``skipped``."""

    state: str
    message: str | None = None
    seconds: float | None = None


def _json_value(value: Any) -> Any:
    """A record as JSON values: a dataclass's fields that are not None (what is inside them as
    :func:`dataclasses.asdict` gives it), dicts and lists item by item."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
        return {k: _plain(v) for k, v in items if v is not None}
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """What :func:`dataclasses.asdict` makes of a field's value, without its deep copy of every leaf (the journal
    is saved at every step: asdict was half of a save's time)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# ------------------------------------------------------------------------------------- journal


@dataclass(kw_only=True)
class Journal:
    """The fields every resumable command records; subclasses add theirs. ``root`` and ``path`` say where it
    lives and are not part of the document."""

    root: NodeRoot = field(repr=False, compare=False)
    path: PurePosixPath = field(default=JOURNAL, compare=False)
    version: int = VERSION
    status: str = "running"
    started_at: str = field(default_factory=now_text)
    finished_at: str | None = None
    steps: dict[str, StepRecord] = field(default_factory=dict)
    artifact_records: dict[str, list[ArtifactRecord]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    _JSON_NAMES: ClassVar[dict[str, str]] = {"artifact_records": "artifacts"}
    _NOT_SAVED: ClassVar[frozenset[str]] = frozenset({"root", "path"})

    # -- JSON --------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in self._NOT_SAVED:
                continue
            value = getattr(self, f.name)
            if value is None:
                continue
            out[self._JSON_NAMES.get(f.name, f.name)] = _json_value(value)
        return out

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        """A JSON value of field ``name`` as the field's type (subclasses decode their records)."""
        if name == "steps":
            return {k: StepRecord(**v) for k, v in value.items()}
        if name == "artifact_records":
            return {k: [ArtifactRecord(**i) for i in items] for k, items in value.items()}
        if name == "timings":
            return {k: float(v) for k, v in value.items()}
        return value

    @classmethod
    def from_json(cls, root: NodeRoot, data: Any, path: PurePosixPath = JOURNAL) -> Self:
        unknown = PlanError(f"the journal {path} has an unknown format", "move it aside and run again")
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise unknown
        by_json = {cls._JSON_NAMES.get(f.name, f.name): f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            name = by_json.get(key)
            if name is None or name in cls._NOT_SAVED:
                raise PlanError(
                    f"the journal {path} has an unknown format (field {key!r}): another kuberevive version wrote it",
                    "finish the run with that version, or move the journal aside and run again",
                )
            values[name] = value
        try:
            decoded = {k: cls._decode(k, v) for k, v in values.items()}
            return cls(root=root, path=path, **decoded)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise unknown from exc

    # -- file --------------------------------------------------------------------------------

    @classmethod
    def load(cls, root: NodeRoot, path: PurePosixPath = JOURNAL) -> Self | None:
        raw = root.read(path)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise PlanError(
                f"the journal {path} is not valid JSON",
                "move it aside and run again (the recovery then starts over, reusing the files already written)",
            ) from exc
        return cls.from_json(root, data, path)

    @classmethod
    def new(cls, root: NodeRoot, path: PurePosixPath = JOURNAL, **values: Any) -> Self:
        j = cls(root=root, path=path, **values)
        j.save()
        return j

    def save(self) -> None:
        text = json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n"
        self.root.atomic_write(self.path, text.encode(), 0o600)

    # -- steps -------------------------------------------------------------------------------

    def step_done(self, step_id: str) -> bool:
        rec = self.steps.get(step_id)
        return rec is not None and rec.state == "done"

    def done_steps(self) -> tuple[str, ...]:
        return tuple(k for k, v in self.steps.items() if v.state == "done")

    def mark(self, step_id: str, state: str, seconds: float | None = None) -> None:
        rec = self.steps.setdefault(step_id, StepRecord(state))
        rec.state = state
        if state == "started":
            rec.started_at = now_text()
        elif state == "done":
            rec.done_at = now_text()
        if seconds is not None:
            rec.seconds = seconds
        self.save()

    def artifacts(self, step_id: str) -> list[Artifact] | None:
        items = self.artifact_records.get(step_id)
        if items is None or any(i.content is None for i in items):
            return None
        return [i.artifact() for i in items]

    def record_artifacts(self, step_id: str, artifacts: list[Artifact]) -> None:
        self.artifact_records[step_id] = [ArtifactRecord.of(a) for a in artifacts]
        self.save()

    def timing(self, name: str, value: float | None = None) -> float | None:
        if value is not None:
            self.timings[name] = value
            self.save()
            return value
        return self.timings.get(name)

    def _drop_secrets(self) -> None:
        for items in self.artifact_records.values():
            for i in items:
                i.content = None

    def finish(self) -> None:
        """Mark the run complete and drop file contents (keys) from the journal."""
        self._drop_secrets()
        self.status = "done"
        self.finished_at = now_text()
        self.save()


@dataclass(kw_only=True)
class RecoveryJournal(Journal):
    """``recover``'s journal."""

    identity: NodeIdentity | None = None
    token: str | None = None
    """The new bootstrap token (dropped at the end)."""
    certificate_key: str | None = None
    """The key the kubeadm-certs Secret is sealed with, with a controlPlaneEndpoint (dropped at the end)."""
    kubelet_stamp: str = ""
    """As the kubelet names ``kubelet-client-<stamp>.pem``."""
    kept: dict[str, str] = field(default_factory=dict)
    """Trust material kept (pki-relative name -> base64) while running; names only (values empty) when done."""
    config: StoredConfig | None = None
    cluster_ca: str | None = None
    """Base64 of the CA ``kube-public/cluster-info`` in etcd carries (the CA the cluster trusts)."""
    early_config: bool | None = None
    """``config``, ``cluster_ca`` and ``identity`` were read from etcd's data files before etcd ran: the plan writes
    every file before the kubelet starts etcd and the control plane together, read-config checks them against etcd."""
    trust: TrustFlags | None = None
    guard: str | None = None
    """``on`` while kube-controller-manager runs with the eviction guard, ``off`` otherwise."""
    changed_files: list[str] = field(default_factory=list)
    salvage_from: list[str] | None = None
    """Healthy control-plane peers (names) whose trust material this recovery takes (empty: none)."""
    salvage_peer: str | None = None
    """The peer the trust material was taken from, once the salvage-trust step checked it."""
    peer_api: str | None = None
    """That peer's API server (host:port), which the kubelet reaches until this node's own runs again."""
    peer_etcd_url: str | None = None
    """That peer's etcd client URL (its manifest's advertise-client-urls), to read the member list."""
    etcd_members: list[list[str]] | None = None
    """(name, peer URL) of every etcd member, as this member's --initial-cluster (it rejoins them)."""
    masters: list[NodeIdentity] | None = None
    """The other control-plane nodes, when every one lost its files too (the all-masters case)."""
    retrust: dict[str, NodeRetrust] = field(default_factory=dict)
    csrs: dict[str, Any] | None = None
    trust_objects: dict[str, Any] | None = None
    sa_tokens: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    result_timings: dict[str, float] | None = None

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        if name == "identity":
            return NodeIdentity.from_dict(value)
        if name == "config":
            return StoredConfig(**value)
        if name == "trust":
            return TrustFlags(**value)
        if name == "retrust":
            return {k: NodeRetrust(**v) for k, v in value.items()}
        if name == "masters" and value is not None:
            return [NodeIdentity.from_dict(v) for v in value]
        if name == "kept" and isinstance(value, list):  # a finished journal keeps the names only
            return {str(k): "" for k in value}
        return super()._decode(name, value)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.identity is not None:
            out["identity"] = self.identity.as_dict()
        if self.masters is not None:
            out["masters"] = [m.as_dict() for m in self.masters]
        if self.status == "done":
            out["kept"] = sorted(self.kept)
        return out

    def nothing_done(self) -> bool:
        """No step done, no file recorded to write and none written: the run changed nothing yet."""
        return not self.done_steps() and not self.artifact_records and not self.changed_files

    def kept_bytes(self) -> dict[str, bytes]:
        return {k: base64.b64decode(v) for k, v in self.kept.items() if v}

    def cluster_ca_bytes(self) -> bytes | None:
        return base64.b64decode(self.cluster_ca) if self.cluster_ca else None

    def require_token(self) -> str:
        if not self.token:
            raise PlanError(f"the journal {self.path} has no bootstrap token", "move it aside and run again")
        return self.token

    def finish_with(self, result_timings: dict[str, float]) -> None:
        self.token = None
        self.certificate_key = None
        self.result_timings = result_timings
        for name in self.kept:
            self.kept[name] = ""
        self.finish()


@dataclass(kw_only=True)
class RenewJournal(Journal):
    """``certs renew``'s journal."""

    targets: list[dict[str, Any]] = field(default_factory=list)
    node_name: str = ""
    config_source: str = ""
    stamp: str = ""
    all_nodes: bool = False
    """``--all-nodes``: the other nodes' kubelets too (``certs renew``: their client certificates)."""
    everything: bool = False
    warning_days: int = 30
    validity_seconds: float | None = None
    """``certs renew``: the renewed certificates' validity, decided once (``validity_source`` says from where)."""
    validity_source: str = ""
    other_nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``certs renew --all-nodes``: per other node ``{"state": "started"|"done", "new_serving": bool}``; its files
    are recorded as the artifacts of ``node:<name>`` before anything is written there."""


@dataclass(kw_only=True)
class CaExtendJournal(RenewJournal):
    """``ca extend``'s journal: the CAs (old and new certificate, PEM; no keys) and the nodes already done."""

    cas: list[dict[str, str]] = field(default_factory=list)
    nodes_done: list[str] = field(default_factory=list)
    repair: bool = False
    """A CA had expired when the extension started (``peer-repair`` is one of its steps)."""
