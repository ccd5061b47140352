"""``kuberevive quorum-restore``: a stacked etcd that lost quorum (two of three members' data gone or corrupt, or
every member down with one usable data directory) restored from the best surviving member (pure planning).

The safe order (operators-needs §1.5, §2; etcd's disaster-recovery guide, with what fails in practice: a restored
member with unwiped peers is a cluster-ID mismatch, a split brain):

1. stop etcd and the API server on every master (their static-pod manifests moved aside, so the kubelet stops
   them and nothing writes while the data is kept and restored);
2. keep every member's data directory aside (renamed to ``<data-dir>.kuberevive-<stamp>``, never deleted);
3. restore on the donor, the member whose db holds the highest revision, from its own db
   (``etcdutl snapshot restore --skip-hash-check``) as a one-member cluster, with ``--bump-revision`` and
   ``--mark-compacted`` so that watchers (API servers, controllers, kubelets) relist instead of seeing time go
   backwards;
4. start etcd and the API server on the donor;
5. re-grow the other members one at a time: each added as a learner, started with an empty data directory and
   ``--initial-cluster-state=existing``, promoted once it has caught up, then its API server started;
6. restart the controller-managers and schedulers of the masters and every node's kubelet.

Pure: each master's facts in (its member, data directory, db revision, health); the verdict, the donor and the
step list out. :mod:`kuberevive.run.quorum` reads the facts and executes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from kuberevive.core import yamlfmt
from kuberevive.core.backup import EtcdMember
from kuberevive.core.manifests import manifest_command, parse_manifest
from kuberevive.errors import PlanError

#: The static pods stopped on every master while the data is kept and restored (etcd first back).
STOPPED = ("etcd", "kube-apiserver")
#: The components restarted at the end (their watches relist from the bumped revision).
RESTARTED = ("kube-controller-manager", "kube-scheduler")

STEP_TITLES = {
    "stop-control-plane": "stop etcd and the API server on every master (manifests moved aside)",
    "keep-data": "keep every member's data directory aside (renamed, never deleted)",
    "restore-donor": "restore the donor's db as a one-member etcd (revision bump, marked compacted)",
    "start-donor": "start etcd and the API server on the donor",
    "regrow": "add a member back as a learner with an empty data directory, promote it, start its API server",
    "restart-components": "restart the controller-manager and scheduler of every master and every node's kubelet",
}


@dataclass(frozen=True)
class MasterEtcd:
    """One master's etcd member as the command found it."""

    node: str
    address: str
    member: str
    """etcd's ``--name`` (kubeadm: the node name)."""
    peer_url: str
    client_url: str
    data_dir: str
    has_data: bool
    """Its data directory holds a ``member/`` directory."""
    revision: int | None
    """The current revision of its ``member/snap/db``; None without a db that reads as one."""
    healthy: bool = False
    why: str = ""
    """Why it is not healthy (``/health``'s reason, "unreachable")."""

    @property
    def db(self) -> PurePosixPath:
        return PurePosixPath(self.data_dir) / "member" / "snap" / "db"


@dataclass(frozen=True)
class Step:
    id: str
    node: str
    """The master it acts on ("" for every master)."""
    title: str

    @property
    def key(self) -> str:
        """Its journal key: ``regrow:<node>`` for a re-grown member, else its id."""
        return f"{self.id}:{self.node}" if self.id == "regrow" else self.id


@dataclass(frozen=True)
class Snapshot:
    """An etcd snapshot file on this node (``etcdctl snapshot save``: with its sha256 trailer) to restore on the
    donor instead of a member's own db."""

    path: str
    revision: int | None
    backup: str = ""
    """The kuberevive backup the snapshot was decrypted from (``--backup``; then ``path`` is the tool's own temporary
    file), "" for a plain snapshot."""

    @property
    def shown(self) -> str:
        """How the plan names it: the backup's file, else the snapshot's."""
        return f"the etcd snapshot of the backup {self.backup}" if self.backup else f"the snapshot {self.path}"


@dataclass(frozen=True)
class QuorumPlan:
    masters: tuple[MasterEtcd, ...]
    donor: MasterEtcd
    steps: tuple[Step, ...]
    notes: tuple[str, ...]
    snapshot: Snapshot | None = None

    def source(self, stamp: str) -> tuple[str, bool]:
        """What the donor restores and whether without the hash check: the snapshot, else its own kept db."""
        if self.snapshot is not None:
            return self.snapshot.path, False
        return str(kept_name(self.donor.data_dir, stamp) / "member" / "snap" / "db"), True

    def document(self) -> dict[str, Any]:
        revision = self.snapshot.revision if self.snapshot else self.donor.revision
        return {
            "donor": {
                "node": self.donor.node,
                "revision": revision,
                "data_dir": self.donor.data_dir,
                "snapshot": self.snapshot.path if self.snapshot else None,
                "backup": self.snapshot.backup or None if self.snapshot else None,
            },
            "members": [
                {
                    "node": m.node,
                    "member": m.member,
                    "peer_url": m.peer_url,
                    "client_url": m.client_url,
                    "healthy": m.healthy,
                    "why": m.why,
                    "data": m.has_data,
                    "revision": m.revision,
                }
                for m in self.masters
            ],
            "steps": [{"id": s.key, "node": s.node, "title": s.title} for s in self.steps],
            "notes": list(self.notes),
        }


def quorum(voters: int) -> int:
    return voters // 2 + 1


def _health(masters: Sequence[MasterEtcd]) -> str:
    return "; ".join(f"{m.node}: {'healthy' if m.healthy else m.why or 'unhealthy'}" for m in masters)


def require_lost(masters: Sequence[MasterEtcd]) -> None:
    """PlanError unless the members have lost quorum: a restore of a cluster that has one would throw away every
    write since the donor's revision on the others and is never the fix."""
    healthy = [m for m in masters if m.healthy]
    if len(healthy) >= quorum(len(masters)):
        raise PlanError(
            f"etcd has quorum: {len(healthy)} of {len(masters)} members healthy ({_health(masters)}); "
            "quorum-restore is only for an etcd that lost it, and nothing was changed",
            "replace a lost member with 'kuberevive replace-control-plane NODE', or recover a master's files with "
            "'kuberevive recover'",
        )


def choose_donor(masters: Sequence[MasterEtcd], local: str) -> MasterEtcd:
    """The member whose db holds the highest revision (ties: this node, then the first in member order);
    PlanError when no member has a db that reads as an etcd store."""
    usable = [m for m in masters if m.revision is not None]
    if not usable:
        raise PlanError(
            "no member has an etcd db to restore from ("
            + "; ".join(f"{m.node}: {'no member/snap/db' if m.has_data else 'no data'}" for m in masters)
            + "); nothing was changed",
            "restore from a snapshot or a kuberevive backup with 'kuberevive restore-etcd' on one master, then "
            "re-grow the others with 'kuberevive replace-control-plane'",
        )
    order = {m.node: i for i, m in enumerate(masters)}
    return max(usable, key=lambda m: (m.revision or 0, m.node == local, -order[m.node]))


def plan(
    masters: Sequence[MasterEtcd], local: str, *, resumed: bool = False, snapshot: Snapshot | None = None
) -> QuorumPlan:
    """The verdict (quorum lost), the donor and every step; PlanError when the restore is not the fix. ``resumed``:
    the facts are those a stopped run planned with (the verdict was made then). ``snapshot``: restored on this node
    (the donor then) instead of the best member's db."""
    if len({m.node for m in masters}) != len(masters) or len(masters) < 2:
        raise PlanError(
            f"quorum-restore needs the members of a multi-member etcd, found {len(masters)}",
            "run it on a master of a stacked-etcd HA control plane",
        )
    if not resumed:
        require_lost(masters)
    donor = _snapshot_donor(masters, local, snapshot) if snapshot is not None else choose_donor(masters, local)
    others = [m for m in masters if m is not donor]
    steps = [
        Step("stop-control-plane", "", STEP_TITLES["stop-control-plane"]),
        Step("keep-data", "", STEP_TITLES["keep-data"]),
        Step("restore-donor", donor.node, STEP_TITLES["restore-donor"]),
        Step("start-donor", donor.node, STEP_TITLES["start-donor"]),
        *(Step("regrow", m.node, STEP_TITLES["regrow"]) for m in others),
        Step("restart-components", "", STEP_TITLES["restart-components"]),
    ]

    def revisions(of: Sequence[MasterEtcd]) -> str:
        return ", ".join(f"{m.node}: {m.revision if m.revision is not None else 'no db'}" for m in of)

    if snapshot is None:
        first = f"donor {donor.node}: revision {donor.revision} (the highest; {revisions(others)})"
    else:
        first = (
            f"donor {donor.node} (this node) restores {snapshot.shown} (revision {snapshot.revision}), "
            f"not a member's db ({revisions(masters)})"
        )
    notes = [
        first,
        "every data directory is kept as <data-dir>.kuberevive-<stamp> on its node; nothing is deleted",
        "the API is down until the donor's API server answers; running pods keep running and serving",
    ]
    notes.append(
        "the other members start empty and copy the donor's data; what only their data held is not used (it stays "
        "kept aside)"
    )
    newer = [m.node for m in masters if snapshot and (m.revision or 0) > (snapshot.revision or 0)]
    if newer:
        notes.append(f"the db of {', '.join(newer)} is newer than the snapshot: what was written since it is lost")
    return QuorumPlan(tuple(masters), donor, tuple(steps), tuple(notes), snapshot)


def _snapshot_donor(masters: Sequence[MasterEtcd], local: str, snapshot: Snapshot) -> MasterEtcd:
    donor = next((m for m in masters if m.node == local), None)
    if donor is None:
        raise PlanError(
            f"this node ({local}) is not a member of the etcd: the snapshot must be restored on a member",
            "run quorum-restore --snapshot on a master",
        )
    if snapshot.revision is None:
        raise PlanError(
            f"{snapshot.path} is not an etcd snapshot (no etcd v3 store in it); nothing was changed",
            "pass a file written by 'etcdctl snapshot save' (or a member's member/snap/db)",
        )
    return donor


def kept_name(data_dir: str, stamp: str) -> PurePosixPath:
    """Where a member's data directory is kept: ``<data-dir>.kuberevive-<stamp>`` beside it (a rename)."""
    p = PurePosixPath(data_dir)
    return p.with_name(f"{p.name}.kuberevive-{stamp}")


def restore_args(
    donor: MasterEtcd, source_db: str, target_dir: str, token: str | None = None, *, skip_hash_check: bool = True
) -> list[str]:
    """``etcdutl`` arguments restoring ``source_db`` (the donor's kept db: no hash trailer, or a snapshot) as a
    one-member cluster of the donor alone."""
    member = EtcdMember(
        name=donor.member,
        data_dir=PurePosixPath(donor.data_dir),
        initial_cluster=f"{donor.member}={donor.peer_url}",
        initial_advertise_peer_urls=donor.peer_url,
        initial_cluster_token=token,
        client_url="",
    )
    return member.restore_args(source_db, target_dir, skip_hash_check=skip_hash_check)


def rejoin_manifest(manifest: bytes, initial_cluster: Sequence[tuple[str, str]]) -> bytes:
    """A member's etcd manifest to join the restored cluster: ``--initial-cluster`` the members now (the joining
    one included) and ``--initial-cluster-state=existing``; every other flag as it was."""
    pod = parse_manifest(manifest)
    command = manifest_command(pod)
    set_to = {
        "--initial-cluster": ",".join(f"{n}={u}" for n, u in initial_cluster),
        "--initial-cluster-state": "existing",
    }
    out = [c for c in command if c.split("=", 1)[0] not in set_to]
    out += [f"{k}={v}" for k, v in set_to.items()]
    pod["spec"]["containers"][0]["command"] = out
    return yamlfmt.dump(pod).encode()
