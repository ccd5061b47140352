"""The eviction guard: a kube-controller-manager manifest with only taint-based eviction disabled.

While kubelets still hold client certificates from the lost CA, every node looks NotReady to the new
control plane; after the node-monitor grace period the node-lifecycle controller taints the nodes
``NoExecute`` and, from v1.29 on, the separate ``taint-eviction-controller`` deletes their pods.
Disabling just that controller (``--controllers=...,-taint-eviction-controller``; name checked in
kubernetes ``cmd/kube-controller-manager/names/controller_names.go``, ``TaintEvictionController``)
keeps every pod where it is, while CSR signing and approval, bootstrap signing, token cleaning,
ServiceAccount tokens and root-CA publishing — all needed to re-trust the nodes — keep running.

``guard(pod)`` and ``unguard(pod)`` are pure (dict in, new dict out), idempotent and inverse: the
original ``--controllers`` value (or its absence) is kept in the annotation
``kuberevive.io/eviction-guard`` of the guarded manifest, so ``unguard(guard(p)) == p``. A manifest
that carries ``-taint-eviction-controller`` without the annotation (guarded by hand) is recognised
too; unguarding it removes that one entry.

Controller enablement follows kube-controller-manager's ``IsControllerEnabled``: an explicit name
enables, ``-name`` disables, otherwise ``*`` enables the controllers that are on by default
(``bootstrap-signer-controller`` and ``token-cleaner-controller`` are off by default).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kuberevive.core.restarts import parse_time
from kuberevive.errors import ConfigError

GUARD_ANNOTATION = "kuberevive.io/eviction-guard"
#: Value stored in the annotation when the original manifest had no ``--controllers`` flag.
ABSENT = "<absent>"
TAINT_EVICTION = "taint-eviction-controller"
#: kube-controller-manager's default when ``--controllers`` is not given.
DEFAULT_CONTROLLERS = "*"

#: Old names kube-controller-manager still accepts (``ControllerDescriptor.GetAliases``), for the
#: controllers the guard cares about.
ALIASES = {
    "csrsigning": "certificatesigningrequest-signing-controller",
    "csrapproving": "certificatesigningrequest-approving-controller",
    "csrcleaner": "certificatesigningrequest-cleaner-controller",
    "bootstrapsigner": "bootstrap-signer-controller",
    "tokencleaner": "token-cleaner-controller",
    "serviceaccount-token": "serviceaccount-token-controller",
    "root-ca-cert-publisher": "root-ca-certificate-publisher-controller",
    "nodelifecycle": "node-lifecycle-controller",
}
DISABLED_BY_DEFAULT = frozenset({"bootstrap-signer-controller", "token-cleaner-controller"})

#: What re-trusting the cluster needs while the guard is on.
ESSENTIAL = (
    "certificatesigningrequest-signing-controller",
    "certificatesigningrequest-approving-controller",
    "bootstrap-signer-controller",
    "token-cleaner-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
)


def _container(pod: Mapping[str, Any]) -> dict[str, Any]:
    try:
        containers = pod["spec"]["containers"]
    except (KeyError, TypeError):
        containers = None
    if not isinstance(containers, list) or not containers:
        raise ConfigError("the kube-controller-manager manifest has no container", "check the manifest")
    for c in containers:
        if isinstance(c, dict) and c.get("name") == "kube-controller-manager":
            return c
    first = containers[0]
    if not isinstance(first, dict):
        raise ConfigError("the kube-controller-manager manifest's container is not a mapping", "check the manifest")
    return first


def _flag_list(container: Mapping[str, Any]) -> tuple[str, list[str]]:
    """Which list holds the flags (``command`` for kubeadm, ``args`` for some installers)."""
    for key in ("command", "args"):
        items = container.get(key)
        if isinstance(items, list) and any(str(i).startswith("--controllers=") for i in items):
            return key, [str(i) for i in items]
    items = container.get("command")
    if isinstance(items, list) and items:
        return "command", [str(i) for i in items]
    raise ConfigError("the kube-controller-manager manifest has no command", "check the manifest")


def _controllers_index(items: list[str]) -> int | None:
    """Index of the last ``--controllers=`` flag (pflag keeps the last value)."""
    found = None
    for i, item in enumerate(items):
        if item.startswith("--controllers="):
            found = i
    return found


def controllers_value(pod: Mapping[str, Any]) -> str | None:
    """The manifest's ``--controllers`` value, or None when the flag is absent."""
    _, items = _flag_list(_container(pod))
    i = _controllers_index(items)
    return None if i is None else items[i].split("=", 1)[1]


def _canonical(name: str) -> str:
    return ALIASES.get(name, name)


def controller_enabled(controllers: str | None, name: str) -> bool:
    """kube-controller-manager's ``IsControllerEnabled`` for one (canonical) controller name."""
    entries = [e.strip() for e in (controllers if controllers is not None else DEFAULT_CONTROLLERS).split(",")]
    entries = [e for e in entries if e]
    star = False
    for e in entries:
        if e == "*":
            star = True
        elif e.startswith("-") and _canonical(e[1:]) == name:
            return False
        elif _canonical(e) == name:
            return True
    return star and name not in DISABLED_BY_DEFAULT


def is_guarded(pod: Mapping[str, Any]) -> bool:
    """True when taint-based eviction is off in this manifest (by the guard or by hand)."""
    return not controller_enabled(controllers_value(pod), TAINT_EVICTION)


def essentials_disabled(pod: Mapping[str, Any]) -> list[str]:
    """The controllers re-trusting needs that this manifest does not run (empty is good)."""
    value = controllers_value(pod)
    return [name for name in ESSENTIAL if not controller_enabled(value, name)]


def _annotations(pod: dict[str, Any]) -> dict[str, Any]:
    meta = pod.setdefault("metadata", {})
    ann = meta.get("annotations")
    if not isinstance(ann, dict):
        ann = {}
        meta["annotations"] = ann
    return ann


def guard(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest with taint-based eviction disabled and nothing else changed (beyond the annotation).

    Already guarded (by us or by hand): returned unchanged (a copy).
    """
    out = copy.deepcopy(dict(pod))
    if is_guarded(out):
        return out
    container = _container(out)
    key, items = _flag_list(container)
    i = _controllers_index(items)
    original = None if i is None else items[i].split("=", 1)[1]
    entries = [e for e in (original if original is not None else DEFAULT_CONTROLLERS).split(",") if e.strip()]
    # The first entry naming a controller decides, so an explicit "taint-eviction-controller" would
    # beat a "-" entry after it: drop it; ours is then the only entry that names the controller.
    entries = [e for e in entries if _canonical(e.strip()) != TAINT_EVICTION]
    entries.append(f"-{TAINT_EVICTION}")
    flag = "--controllers=" + ",".join(entries)
    if i is None:
        items.append(flag)
    else:
        items[i] = flag
    container[key] = items
    _annotations(out)[GUARD_ANNOTATION] = ABSENT if original is None else original
    return out


def unguard(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The normal manifest back: the original ``--controllers`` (or none), the annotation removed.

    Not guarded: returned unchanged (a copy).
    """
    out = copy.deepcopy(dict(pod))
    meta = out.get("metadata") if isinstance(out.get("metadata"), dict) else None
    ann = meta.get("annotations") if meta is not None else None
    recorded = ann.get(GUARD_ANNOTATION) if isinstance(ann, dict) else None
    container = _container(out)
    key, items = _flag_list(container)
    i = _controllers_index(items)
    if recorded is not None:
        if recorded == ABSENT:
            if i is not None:
                del items[i]
        elif i is None:
            items.append(f"--controllers={recorded}")
        else:
            items[i] = f"--controllers={recorded}"
        container[key] = items
        assert isinstance(ann, dict) and meta is not None
        del ann[GUARD_ANNOTATION]
        if not ann:
            del meta["annotations"]
        return out
    if i is not None:
        entries = items[i].split("=", 1)[1].split(",")
        kept = [e for e in entries if not (e.startswith("-") and _canonical(e[1:]) == TAINT_EVICTION)]
        items[i] = "--controllers=" + ",".join(kept)
        container[key] = items
    return out


def released_lease(
    lease: Mapping[str, Any], guarded_holder: str, hostname: str, stopped: bool, now: datetime
) -> dict[str, Any] | None:
    """The kube-controller-manager leader Lease as the guarded controller-manager would have left it had it
    released its lease on exit (client-go ``LeaderElector.release``, ``ReleaseOnCancel``: no holder, a lease
    of 1 s, ``leaseTransitions`` kept), or None when that is not safe.

    kube-controller-manager does not release its lease when stopped, so its successor waits a whole lease
    period (15 s, measured from its own first look) before it may lead. Releasing it for the stopped one is safe
    only when every condition holds: ``stopped`` (no container of the guarded instance runs any more, seen by
    the caller in the container runtime), the lease is still held by ``guarded_holder`` (the identity read
    before the manifest was swapped; a new holder means someone else leads already) and that identity is this
    node's (``<hostname>_<uuid>``, kube-controller-manager's format: a controller-manager of another node may
    still be alive). The caller PUTs the result with the lease's ``resourceVersion``, so a successor that
    acquired it meanwhile makes the write fail with a conflict instead of being overwritten."""
    spec = lease.get("spec") or {}
    holder = str(spec.get("holderIdentity") or "")
    if not stopped or not holder or holder != guarded_holder:
        return None
    if holder.partition("_")[0].lower() != hostname.lower():
        return None
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    out = copy.deepcopy(dict(lease))
    out["spec"] = {
        **spec,
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "acquireTime": stamp,
        "renewTime": stamp,
        "leaseTransitions": spec.get("leaseTransitions", 0),
    }
    return out


def _micro_time(text: object) -> datetime | None:
    """A Lease's ``renewTime`` (MicroTime, RFC 3339 with microseconds), or None when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


def dead_leader_release(
    lease: Mapping[str, Any], hostname: str, run_started: datetime, only_new_instances: bool, now: datetime
) -> dict[str, Any] | None:
    """The kube-controller-manager leader Lease released (:func:`released_lease`) when its holder is an instance
    that died before this recovery started, else None.

    After the seed disaster the Lease still names the controller-manager that ran before it (its container was
    removed with the others); client-go counts a lease period (15 s) from its own first look at a record held by
    someone else, so the controller-manager the recovery starts could lead only 15-17 s after the API server
    answers, and every controller (the DaemonSet and Deployment controllers that restart the token-using pods,
    the node-lifecycle controller) waits with it. The holder is dead when all of these hold: its identity is this
    node's (``<hostname>_<uuid>``), it last renewed before the recovery started (nothing could renew through the
    API server, which was down until the recovery started it; a holder that still renews has a later time), and
    ``only_new_instances``: the container runtime lists kube-controller-manager containers and each was created
    after the recovery started (so none of them is the holder's: an empty list proves nothing). The caller PUTs
    the result with its ``resourceVersion``, so a holder that renewed meanwhile makes the write fail instead."""
    spec = lease.get("spec") or {}
    holder = str(spec.get("holderIdentity") or "")
    renewed = _micro_time(spec.get("renewTime"))  # client-go writes it with every acquire and renewal
    if not holder or renewed is None or renewed >= run_started:
        return None
    return released_lease(lease, holder, hostname, only_new_instances, now)
