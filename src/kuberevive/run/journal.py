"""The recovery journal and the lock that keeps two recoveries apart.

``/var/lib/kuberevive/recover/journal.json`` (directory 0700, file 0600, written atomically with
``fsync``) records: the node identity, the stored configuration read from etcd, the new bootstrap
token, every step's state and, before a step writes files, the exact files it will write. A recovery
killed at any point (SIGKILL, power loss) therefore resumes with the same keys and certificates and
converges to the same result. Because it holds private keys while a recovery runs, the file contents
are dropped from the journal when the recovery completes (paths and SHA-256 stay).

``/var/lib/kuberevive/recover/lock`` is held with ``flock(LOCK_EX | LOCK_NB)`` for the whole run;
the kernel releases it when the process dies, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from kuberevive.errors import PlanError
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.model.paths import NODE_LOCK

RECOVER_DIR = PurePosixPath("/var/lib/kuberevive/recover")
JOURNAL = RECOVER_DIR / "journal.json"
LOCK = NODE_LOCK
VERSION = 1


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextmanager
def recovery_lock(root: NodeRoot) -> Iterator[None]:
    """The node's lock (:meth:`NodeRoot.lock`, shared with ``generate`` and ``certs renew``) for a recovery."""
    with root.lock("recover", error=PlanError):
        yield


def artifact_to_json(a: Artifact) -> dict[str, Any]:
    return {
        "path": str(a.path),
        "mode": a.mode,
        "kind": a.kind.value,
        "description": a.description,
        "sha256": hashlib.sha256(a.content).hexdigest(),
        "content": base64.b64encode(a.content).decode("ascii"),
    }


def artifact_from_json(d: dict[str, Any]) -> Artifact:
    return Artifact(
        PurePosixPath(d["path"]),
        int(d["mode"]),
        ArtifactKind(d["kind"]),
        str(d["description"]),
        base64.b64decode(d["content"]),
    )


class Journal:
    """The journal document, saved atomically after every change."""

    def __init__(self, root: NodeRoot, data: dict[str, Any], path: PurePosixPath = JOURNAL) -> None:
        self.root = root
        self.data = data
        self.path = path

    @classmethod
    def load(cls, root: NodeRoot, path: PurePosixPath = JOURNAL) -> Journal | None:
        raw = root.read(path)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            raise PlanError(
                f"the journal {path} is not valid JSON",
                "move it aside and run again (the recovery then starts over, reusing the files already written)",
            ) from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise PlanError(f"the journal {path} has an unknown format", "move it aside and run again")
        return cls(root, data, path)

    @classmethod
    def new(cls, root: NodeRoot, journal_path: PurePosixPath = JOURNAL, **values: Any) -> Journal:
        data: dict[str, Any] = {
            "version": VERSION,
            "status": "running",
            "started_at": now_text(),
            "steps": {},
            "artifacts": {},
            "timings": {},
        }
        data.update(values)
        j = cls(root, data, journal_path)
        j.save()
        return j

    def save(self) -> None:
        self.root.atomic_write(self.path, (json.dumps(self.data, indent=1, sort_keys=True) + "\n").encode(), 0o600)

    @property
    def status(self) -> str:
        return str(self.data.get("status", ""))

    def step_done(self, step_id: str) -> bool:
        return bool(self.data["steps"].get(step_id, {}).get("state") == "done")

    def done_steps(self) -> tuple[str, ...]:
        return tuple(k for k, v in self.data["steps"].items() if v.get("state") == "done")

    def mark(self, step_id: str, state: str, **extra: Any) -> None:
        entry = self.data["steps"].setdefault(step_id, {})
        entry.update({"state": state, f"{state}_at": now_text(), **extra})
        self.save()

    def artifacts(self, step_id: str) -> list[Artifact] | None:
        items = self.data["artifacts"].get(step_id)
        if items is None or any("content" not in i for i in items):
            return None
        return [artifact_from_json(i) for i in items]

    def record_artifacts(self, step_id: str, artifacts: list[Artifact]) -> None:
        self.data["artifacts"][step_id] = [artifact_to_json(a) for a in artifacts]
        self.save()

    def timing(self, name: str, value: float | None = None) -> float | None:
        if value is not None:
            self.data["timings"][name] = value
            self.save()
            return value
        v = self.data["timings"].get(name)
        return float(v) if v is not None else None

    def finish(self, **values: Any) -> None:
        """Mark the recovery complete and drop file contents (keys) from the journal."""
        for items in self.data["artifacts"].values():
            for i in items:
                i.pop("content", None)
        self.data.pop("token", None)
        self.data["kept"] = sorted(self.data.get("kept") or {})  # names only: the keys are on the node
        self.data.update(values)
        self.data["status"] = "done"
        self.data["finished_at"] = now_text()
        self.save()
