"""Write what ``generate`` produced so that a kill at any point converges on the next run.

Under the node's lock, taken through the host (:meth:`LocalHost.lock`, shared with ``recover``, ``certs renew`` and
``ca extend``; :func:`apply_generate`), the set of files is first recorded in :data:`PENDING`
(``/var/lib/kuberevive/generate/pending.json``, directory 0700, file 0600: it holds the private keys being written),
then written (:meth:`NodeRoot.write_all`), then the record is removed. A run killed in between leaves the record: the
next run finishes that set first (a key whose certificate was not written yet is written with exactly that
certificate), then generates as usual, so it sees a complete, consistent set and keeps it. A file changed by someone
else since then is never overwritten: the record is dropped with a warning.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import PurePosixPath

from kuberevive.core.generate import GenerateResult
from kuberevive.errors import ExistingFileError, NodeFsError
from kuberevive.io.host import LocalHost
from kuberevive.io.noderoot import NodeRoot, WriteAction, WriteResult
from kuberevive.model import paths
from kuberevive.model.artifacts import Artifact
from kuberevive.run.journal import artifact_from_json, artifact_to_json

PENDING = paths.GENERATE_PENDING


def finish_interrupted(root: NodeRoot) -> list[str]:
    """Finish the set an interrupted run recorded (see the module docstring); notes for the operator."""
    try:
        data = root.read(PENDING)
    except NodeFsError as exc:
        return [f"the record of an interrupted run cannot be read ({exc.message}); it was ignored"]
    if data is None:
        return []
    try:
        doc = json.loads(data)
        artifacts = [artifact_from_json(a) for a in doc["artifacts"]]
        force = bool(doc["force"])
    except (ValueError, KeyError, TypeError):
        root.remove_own(PENDING)
        return [f"the record of an interrupted run ({PENDING}) is damaged; it was dropped"]
    try:
        done = root.write_all(artifacts, force=force)
    except ExistingFileError:
        root.remove_own(PENDING)
        return ["files of an interrupted run were changed since; they are left as they are (its record was dropped)"]
    root.remove_own(PENDING)
    written = sum(1 for r in done if r.action is not WriteAction.UNCHANGED)
    return [f"finished an interrupted run: {written} of its {len(artifacts)} file(s) were still to write"]


def write_set(root: NodeRoot, artifacts: list[Artifact], force: bool) -> list[WriteResult]:
    """Record, write all or nothing, and drop the record (conflicts are refused before anything is recorded)."""
    planned = root.plan(artifacts, force=force)
    if all(r.action is WriteAction.UNCHANGED for r in planned):
        return planned
    record = {"force": force, "artifacts": [artifact_to_json(a) for a in artifacts]}
    root.atomic_write(PENDING, json.dumps(record).encode(), 0o600)
    try:
        done = root.write_all(artifacts, force=force)
    except NodeFsError:
        root.remove_own(PENDING)  # rolled back: nothing to finish
        raise
    root.remove_own(PENDING)
    return done


def apply_generate(
    host: LocalHost, certificates_dir: str, make: Callable[[], GenerateResult], force: bool
) -> tuple[GenerateResult, list[WriteResult], list[str]]:
    """One writing ``generate`` run under the node's lock, held through ``host`` (refused at once while another
    run holds it): the temporary files a killed run left are removed and its recorded set finished, then ``make()``
    generates from the node's files as they are now and its set is written. Returns the result, what was written
    and notes for the operator."""
    root = host.root
    with host.lock("generate"):
        own_dirs = [
            PENDING.parent,
            paths.KUBERNETES_DIR,
            paths.MANIFESTS_DIR,
            PurePosixPath(certificates_dir),
            PurePosixPath(certificates_dir) / "etcd",
        ]
        notes = [f"removed {p}, left by an interrupted run" for p in root.remove_stale_tmp(own_dirs)]
        notes += finish_interrupted(root)
        result = make()
        written = write_set(root, result.artifacts, force=force)
    return result, written, notes
