"""Guided salvage of an etcd that raised ``NOSPACE`` (etcd's own procedure, in order, each step checked):
compact the key history at the current revision, defragment every member (one at a time), and disarm the alarm
only when the database in use is back under the quota; when the keys themselves fill the quota, refuse and name
the fix (raise ``--quota-backend-bytes``). Without ``apply`` it only says what it would do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kuberevive.errors import EtcdError
from kuberevive.io.etcd import EtcdClient

#: Disarm only when the database in use is below this share of the quota (else the alarm comes straight back).
DISARM_BELOW = 0.9


@dataclass
class NospaceSalvage:
    alarms_before: list[tuple[str, str]]
    steps: list[str] = field(default_factory=list)
    applied: bool = False
    db_size_before: int = 0
    db_size_after: int = 0


def salvage_nospace(
    client: EtcdClient,
    quota: int,
    *,
    apply: bool,
    peer_client: Callable[[str], EtcdClient] | None = None,
    progress: Callable[[str], None] = lambda _s: None,
) -> NospaceSalvage:
    status = client.safety_status()
    nospace = [(m, a) for m, a in status.alarms if a == "NOSPACE"]
    result = NospaceSalvage(list(status.alarms), db_size_before=status.db_size, db_size_after=status.db_size)
    if not nospace and status.db_size < quota:
        result.steps.append(f"nothing to do: no NOSPACE alarm, the database is {status.db_size} of {quota} bytes")
        return result
    revision = client.revision()
    members = client.members()
    plan = [
        f"compact the key history at revision {revision}",
        *(f"defragment member {m.name or m.id}" for m in members),
        f"disarm NOSPACE on {', '.join(m for m, _ in nospace) or 'no member'} once the database in use is under "
        f"{int(DISARM_BELOW * 100)}% of --quota-backend-bytes={quota}",
    ]
    if not apply:
        result.steps = [f"would {s}" for s in plan]
        return result
    result.applied = True
    progress(plan[0])
    try:
        client.compact(revision)
    except EtcdError as exc:
        if "required revision has been compacted" not in exc.message:
            raise
    result.steps.append(f"compacted at revision {revision}")
    for m in members:
        target = client
        if peer_client is not None and m.id != status.member_id and m.client_urls:
            target = peer_client(m.client_urls[0])
        progress(f"defragmenting {m.name or m.id}")
        target.defragment()
        result.steps.append(f"defragmented {m.name or m.id}")
    after = client.safety_status()
    result.db_size_after = after.db_size
    in_use = after.db_size_in_use or after.db_size
    if in_use >= quota * DISARM_BELOW:
        raise EtcdError(
            f"after compaction and defragmentation the etcd database still uses {in_use} of {quota} bytes: the keys "
            f"themselves fill the quota, so the NOSPACE alarm stays armed (compacted and defragmented; nothing else "
            "was changed)",
            "raise --quota-backend-bytes in the etcd manifest (e.g. to 8589934592, etcd's suggested maximum), wait "
            "for etcd to restart, then run kuberevive etcd-salvage nospace --apply again",
        )
    for member_id, alarm in nospace:
        client.disarm(member_id, alarm)
        result.steps.append(f"disarmed {alarm} of member {member_id}")
    left = [a for a in client.alarms() if a[1] == "NOSPACE"]
    if left:
        raise EtcdError(f"the NOSPACE alarm is still raised after disarming: {left}", "check etcd's log")
    result.steps.append(
        f"database {result.db_size_before} -> {after.db_size} bytes ({in_use} in use), quota {quota}; writes accepted"
    )
    return result
