"""Which workloads still run with ServiceAccount tokens signed by a lost ``sa.key``, and how to restart them.

When ``sa.key`` had to be replaced, kube-apiserver rejects every ServiceAccount token signed before:
the bound tokens the kubelet projects into pods (the ``kube-api-access-*`` volume, or any projected
``serviceAccountToken`` source) and legacy ``kubernetes.io/service-account-token`` Secrets. Pods
without either (``automountServiceAccountToken: false`` and no such volume) are never touched.

Pure: API objects (dicts as the API returns them) in, a :class:`RestartPlan` out.

* :func:`stale_secrets` -- legacy token Secrets to re-mint (their token key removed, so the token
  controller signs a new one with the current key);
* :func:`token_consumers` -- pods created before the key change that carry a token, each resolved to
  the object that owns it (ReplicaSet -> Deployment, StatefulSet, DaemonSet, Job, or none);
* :func:`plan_restarts` -- ordered, deduplicated actions: re-mints first, then CNI DaemonSets (pods
  need a working CNI, whose agent authenticates with its own token, before anything else is
  recreated), then kube-system's kube-proxy, DNS and the rest of kube-system, then the other
  namespaces alphabetically;
* :func:`rollout_done` -- the conditions ``kubectl rollout status`` waits for
  (``staging/src/k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go``);
* :func:`restart_patch` -- what ``kubectl rollout restart`` sends: a strategic merge patch setting
  ``spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]`` to an RFC 3339 time
  (``polymorphichelpers/objectrestarter.go`` sets it on a copy, ``cmd/rollout/rollout_restart.go``
  diffs the copy into a ``StrategicMergePatchType`` patch; paused Deployments are refused).

``kuberevive.io.restarts_apply`` reads the objects and applies a plan.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from kuberevive.core.satokens import LEGACY_TOKEN_SECRET, stale_token_secrets
from kuberevive.model.document import rfc3339

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
BARE_POD_SKIP = "bare pod: restart it yourself or pass --restart-bare-pods"
CNI_WORDS = ("calico", "cilium", "flannel", "weave", "kube-router", "canal", "antrea")
CNI_HOST_PATHS = ("/etc/cni/net.d", "/opt/cni/bin")
DNS_NAMES = ("coredns", "kube-dns")

_AUTO_VOLUME = re.compile(r"^kube-api-access-[a-z0-9]{5}$")  # the admission plugin's generated name

ActionKind = Literal["remint", "rollout-restart", "evict", "skip"]
Labels = tuple[tuple[str, str], ...]


# -- small helpers -----------------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    """An API timestamp (``2024-05-01T10:00:00Z``, RFC 3339) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _labels(obj: Mapping[str, Any]) -> Labels:
    labels = _meta(obj).get("labels") or {}
    return tuple(sorted((str(k), str(v)) for k, v in labels.items()))


def _controller_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in _meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref  # type: ignore[no-any-return]
    return None


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A ``metav1.LabelSelector`` against labels. ``None`` matches nothing; ``{}`` matches everything
    (so a policy/v1 PodDisruptionBudget with an empty selector covers every pod of its namespace)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # an unknown operator selects nothing, as the API would reject it
    return True


def pdbs_covering(pdbs: Iterable[Mapping[str, Any]], namespace: str, labels: Mapping[str, str]) -> list[str]:
    """Names of the PodDisruptionBudgets of ``namespace`` whose selector matches these pod labels."""
    out: list[str] = []
    for pdb in pdbs:
        meta = _meta(pdb)
        if meta.get("namespace") != namespace:
            continue
        if selector_matches((pdb.get("spec") or {}).get("selector"), labels):
            out.append(str(meta.get("name", "")))
    return sorted(out)


# -- legacy token Secrets ----------------------------------------------------------------------


@dataclass(frozen=True)
class StaleSecret:
    """A legacy token Secret to re-mint; ``token_b64`` is the stale value seen while planning."""

    namespace: str
    name: str
    service_account: str
    reason: str
    token_b64: str = field(repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def stale_secrets(secrets: Iterable[Mapping[str, Any]], current: frozenset[str]) -> list[StaleSecret]:
    """:func:`kuberevive.core.satokens.stale_token_secrets`, with the stale token value kept so the
    re-mint patch can test that it still removes that token and nothing newer."""
    items = [s for s in secrets if s.get("type") == LEGACY_TOKEN_SECRET]
    by_key = {(str(_meta(s).get("namespace", "")), str(_meta(s).get("name", ""))): s for s in items}
    out: list[StaleSecret] = []
    for stale in stale_token_secrets(items, current):
        raw = str((by_key[(stale.namespace, stale.name)].get("data") or {}).get("token", ""))
        out.append(StaleSecret(stale.namespace, stale.name, stale.service_account, stale.reason, raw))
    return out


def remint_patch(token_b64: str) -> list[dict[str, Any]]:
    """JSON patch re-minting a legacy token Secret: remove ``data.token`` (only if it is still the
    stale value), and kube-controller-manager's token controller signs a new one with the current key.

    Checked in kubernetes ``pkg/controller/serviceaccount/tokens_controller.go``: the controller
    watches Secrets of type ``kubernetes.io/service-account-token`` (add and update events);
    ``secretUpdateNeeded`` reports ``needsToken`` when ``len(secret.Data["token"]) == 0``, and
    ``generateTokenIfNeeded`` then re-reads the live Secret, generates a token from
    ``serviceaccount.LegacyClaims(sa, secret)`` with the controller's current signing key and
    updates the Secret (also refilling ``ca.crt``/``namespace`` when those are missing or stale).
    It does so only while the ServiceAccount named in the annotations exists (else it deletes the
    Secret).
    """
    return [
        {"op": "test", "path": "/data/token", "value": token_b64},
        {"op": "remove", "path": "/data/token"},
    ]


# -- consumers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str
    uid: str
    node: str = ""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Owner:
    """What restarts a pod. ``kind`` is ``Deployment``, ``StatefulSet``, ``DaemonSet``, ``Job``,
    ``ReplicaSet`` (one no Deployment owns), ``ReplicationController``, another controller kind, or
    ``Pod`` (no controller: a bare pod, then ``name`` is the pod's). ``strategy`` is the update strategy
    type when the workload object was read (``""``: unknown, the API default applies)."""

    kind: str
    namespace: str
    name: str
    strategy: str = ""
    paused: bool = False
    labels: Labels = ()

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Consumer:
    """A pod that carries a ServiceAccount token signed before the key change."""

    pod: PodRef
    labels: Labels
    service_account: str
    owner: Owner
    reasons: tuple[str, ...]
    cni_host_paths: bool = False

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def _containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for key in ("initContainers", "containers", "ephemeralContainers") for c in (spec.get(key) or []) if c]


def _token_reasons(pod: Mapping[str, Any], stale: Collection[tuple[str, str]]) -> list[str]:
    ns = str(_meta(pod).get("namespace", ""))
    spec = pod.get("spec") or {}
    reasons: list[str] = []

    def stale_ref(name: Any) -> bool:
        return isinstance(name, str) and (ns, name) in stale

    for vol in spec.get("volumes") or []:
        vname = _AUTO_VOLUME.sub("kube-api-access-*", str(vol.get("name", "")))
        projected = vol.get("projected")
        if projected:
            for src in projected.get("sources") or []:
                if src.get("serviceAccountToken") is not None:
                    reasons.append(f"volume {vname} projects a ServiceAccount token")
                elif stale_ref((src.get("secret") or {}).get("name")):
                    reasons.append(f"volume {vname} projects stale token Secret {src['secret']['name']}")
        secret = vol.get("secret")
        if secret and stale_ref(secret.get("secretName")):
            reasons.append(f"volume {vname} mounts stale token Secret {secret['secretName']}")
    for c in _containers(spec):
        cname = c.get("name", "")
        for env_from in c.get("envFrom") or []:
            ref = (env_from.get("secretRef") or {}).get("name")
            if stale_ref(ref):
                reasons.append(f"container {cname} takes env from stale token Secret {ref}")
        for env in c.get("env") or []:
            ref = ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
            if stale_ref(ref):
                reasons.append(f"container {cname} env {env.get('name', '')} reads stale token Secret {ref}")
    return list(dict.fromkeys(reasons))


def _mounts_cni(pod: Mapping[str, Any]) -> bool:
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        path = str((vol.get("hostPath") or {}).get("path", "")).rstrip("/")
        if any(path == p or path.startswith(p + "/") for p in CNI_HOST_PATHS):
            return True
    return False


def _strategy(kind: str, obj: Mapping[str, Any] | None) -> tuple[str, bool]:
    if obj is None:
        return "", False
    spec = obj.get("spec") or {}
    key = "strategy" if kind == "Deployment" else "updateStrategy"
    return str((spec.get(key) or {}).get("type", "")), bool(spec.get("paused", False))


def _owners(
    replicasets: Iterable[Mapping[str, Any]], workloads: Iterable[Mapping[str, Any]]
) -> Callable[[Mapping[str, Any]], Owner]:
    """What owns a pod: ``replicasets`` map ReplicaSet -> Deployment; ``workloads`` (Deployments, StatefulSets,
    DaemonSets; optional) give update strategy, paused and labels."""
    rs_owner: dict[tuple[str, str], Mapping[str, Any] | None] = {}
    for rs in replicasets:
        meta = _meta(rs)
        rs_owner[(str(meta.get("namespace", "")), str(meta.get("name", "")))] = _controller_ref(rs)
    objects: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for w in workloads:
        meta = _meta(w)
        objects[(str(w.get("kind", "")), str(meta.get("namespace", "")), str(meta.get("name", "")))] = w

    def owner(pod: Mapping[str, Any]) -> Owner:
        meta = _meta(pod)
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        ref = _controller_ref(pod)
        if ref is None:
            kind, oname = "Pod", name
        else:
            kind, oname = str(ref.get("kind", "")), str(ref.get("name", ""))
            if kind == "ReplicaSet":
                parent = rs_owner.get((ns, oname))
                if parent is not None and parent.get("kind") == "Deployment":
                    kind, oname = "Deployment", str(parent.get("name", ""))
        obj = objects.get((kind, ns, oname))
        strategy, paused = _strategy(kind, obj)
        return Owner(kind, ns, oname, strategy, paused, _labels(obj) if obj is not None else ())

    return owner


def _running_since_before(pod: Mapping[str, Any], created_before: datetime) -> bool:
    """A pod created before ``created_before`` that is not terminating, finished or a static pod's mirror."""
    meta = _meta(pod)
    if meta.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
        return False
    created = meta.get("creationTimestamp")
    return not (created and parse_time(str(created)) >= created_before)


def _consumer(pod: Mapping[str, Any], owner: Owner, reasons: Sequence[str]) -> Consumer:
    meta, spec = _meta(pod), pod.get("spec") or {}
    return Consumer(
        pod=PodRef(
            str(meta.get("namespace", "")),
            str(meta.get("name", "")),
            str(meta.get("uid", "")),
            str(spec.get("nodeName", "")),
        ),
        labels=_labels(pod),
        service_account=str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"),
        owner=owner,
        reasons=tuple(reasons),
        cni_host_paths=_mounts_cni(pod),
    )


def token_consumers(
    pods: Iterable[Mapping[str, Any]],
    stale_secret_names: Collection[tuple[str, str]],
    created_before: datetime,
    replicasets: Iterable[Mapping[str, Any]],
    workloads: Iterable[Mapping[str, Any]] = (),
) -> list[Consumer]:
    """Pods created before ``created_before`` that carry a token: a projected ``serviceAccountToken``
    source, or a Secret volume / ``envFrom`` / ``env.valueFrom.secretKeyRef`` naming one of the stale
    legacy token Secrets (``(namespace, name)`` pairs). Terminating, Succeeded/Failed and static
    (mirror) pods are skipped. ``replicasets`` map ReplicaSet -> Deployment; ``workloads``
    (Deployments, StatefulSets, DaemonSets; optional) give update strategy, paused and labels."""
    if created_before.tzinfo is None:
        raise ValueError("created_before must be timezone-aware")
    owner = _owners(replicasets, workloads)
    out: list[Consumer] = []
    for pod in pods:
        if not _running_since_before(pod, created_before):
            continue
        reasons = _token_reasons(pod, stale_secret_names)
        if reasons:
            out.append(_consumer(pod, owner(pod), reasons))
    return out


def started_before(
    pods: Iterable[Mapping[str, Any]],
    created_before: datetime,
    reason: str,
    replicasets: Iterable[Mapping[str, Any]] = (),
    workloads: Iterable[Mapping[str, Any]] = (),
) -> list[Consumer]:
    """Every pod of ``pods`` created before ``created_before`` (terminating, Succeeded/Failed and static (mirror) pods
    skipped), each with ``reason``: pods holding something they read only at their start (``ca extend``'s repair:
    kube-proxy and the expired CA it read from its ``ca.crt``); owners as for :func:`token_consumers`."""
    if created_before.tzinfo is None:
        raise ValueError("created_before must be timezone-aware")
    owner = _owners(replicasets, workloads)
    return [_consumer(p, owner(p), [reason]) for p in pods if _running_since_before(p, created_before)]


# -- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """One step. ``rollout-restart``: patch ``kind``/``name`` (:func:`restart_patch`) and wait for
    :func:`rollout_done`. ``evict``: evict each of ``pods`` in turn through the Eviction API (so PDBs
    hold), waiting for the owner to settle in between. ``remint``: :func:`remint_patch` on Secret
    ``name``. ``skip``: reported only, ``why`` says why. ``pdbs``: PodDisruptionBudgets (same
    namespace) covering any of the pods."""

    action: ActionKind
    kind: str
    namespace: str
    name: str
    pods: tuple[PodRef, ...] = ()
    why: tuple[str, ...] = ()
    pdbs: tuple[str, ...] = ()
    group: str = ""
    token_b64: str = field(default="", repr=False)

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    def summary(self) -> str:
        pods = f", {len(self.pods)} pod(s)" if self.pods else ""
        pdbs = f", PDB {', '.join(self.pdbs)}" if self.pdbs else ""
        return f"{self.action} {self.ref}{pods}{pdbs}: {'; '.join(self.why)}"


@dataclass(frozen=True)
class RestartPlan:
    actions: tuple[Action, ...]
    #: ``(namespace, serviceaccount)`` of every consumer, for a TokenReview afterwards
    service_accounts: tuple[tuple[str, str], ...] = ()
    #: the key ids a re-minted token must carry (empty: not checked)
    current_key_ids: frozenset[str] = frozenset()

    def filter(self, keep: Callable[[Action], bool]) -> RestartPlan:
        return replace(self, actions=tuple(a for a in self.actions if keep(a)))

    def find(self, kind: str, namespace: str, name: str) -> Action | None:
        return next((a for a in self.actions if (a.kind, a.namespace, a.name) == (kind, namespace, name)), None)

    def summary(self) -> list[str]:
        return [a.summary() for a in self.actions]


def _is_cni(owner: Owner, consumers: Sequence[Consumer]) -> bool:
    if owner.kind != "DaemonSet":
        return False
    if any(c.cni_host_paths for c in consumers):
        return True
    words = [owner.name, *(v for _, v in owner.labels), *(v for c in consumers for _, v in c.labels)]
    return any(w in text.lower() for text in words for w in CNI_WORDS)


def _group(owner: Owner, consumers: Sequence[Consumer]) -> tuple[int, str]:
    """(rank, group name). CNI DaemonSets come first in every namespace (kube-system's first): a
    recreated pod needs CNI, and the CNI agent authenticates with a token of its own."""
    if _is_cni(owner, consumers):
        return 1, "cni"
    if owner.namespace == "kube-system":
        labels = {v for c in consumers for k, v in c.labels if k == "k8s-app"}
        if owner.name == "kube-proxy" or "kube-proxy" in labels:
            return 2, "kube-proxy"
        if owner.name in DNS_NAMES or "kube-dns" in labels:
            return 3, "dns"
        return 4, "kube-system"
    return 5, "namespace"


def _owner_action(owner: Owner, consumers: Sequence[Consumer], restart_bare_pods: bool) -> Action:
    pods = tuple(sorted((c.pod for c in consumers), key=lambda p: p.name))
    why = list(dict.fromkeys(r for c in consumers for r in c.reasons))

    def make(action: ActionKind, *extra: str) -> Action:
        return Action(action, owner.kind, owner.namespace, owner.name, pods, (*extra, *why))

    kind, strategy = owner.kind, owner.strategy
    if kind == "Pod":
        if restart_bare_pods:
            return make("evict", "bare pod: evicted, nothing recreates it")
        return make("skip", BARE_POD_SKIP)
    if kind == "Job":
        return make("skip", "Job pod: reported, not restarted (the Job's next pod gets a fresh token)")
    if kind in ("DaemonSet", "StatefulSet"):
        if strategy == "OnDelete":
            return make("evict", "updateStrategy OnDelete: a rollout restart would not replace the pods")
        return make("rollout-restart")
    if kind == "Deployment":
        if owner.paused:
            return make("skip", "paused Deployment: resume it (kubectl rollout resume) and restart it")
        if strategy == "Recreate":
            return make("evict", "strategy Recreate: a rollout restart would stop every pod at once")
        return make("rollout-restart")
    if kind in ("ReplicaSet", "ReplicationController"):
        return make("evict", f"no rollout for a {kind} without a Deployment: it recreates evicted pods")
    return make("skip", f"owned by {kind} {owner.name}: restart it through that controller")


def plan_restarts(
    consumers: Iterable[Consumer],
    pdbs: Iterable[Mapping[str, Any]],
    restart_bare_pods: bool,
    stale: Iterable[StaleSecret] = (),
    current_key_ids: frozenset[str] = frozenset(),
) -> RestartPlan:
    """Ordered, deduplicated actions: re-mints of the ``stale`` legacy token Secrets first (so pods
    restarted afterwards read the new token), then one action per owner: CNI DaemonSets, kube-system's
    kube-proxy, DNS, the rest of kube-system, then the other namespaces alphabetically (by name
    within a group). PDBs are noted on each action. ``current_key_ids`` are kept on the plan so the
    apply step can check that re-minted tokens carry one of them."""
    pdb_list = list(pdbs)
    by_owner: dict[tuple[str, str, str], tuple[Owner, list[Consumer]]] = {}
    for c in consumers:
        by_owner.setdefault(c.owner.key, (c.owner, []))[1].append(c)

    keyed: list[tuple[tuple[int, bool, str, str, str], Action]] = []
    for owner, members in by_owner.values():
        rank, group = _group(owner, members)
        action = _owner_action(owner, members, restart_bare_pods)
        covering = sorted({p for c in members for p in pdbs_covering(pdb_list, owner.namespace, c.label_map)})
        action = replace(action, pdbs=tuple(covering), group=group)
        keyed.append(((rank, owner.namespace != "kube-system", owner.namespace, owner.name, owner.kind), action))
    keyed.sort(key=lambda item: item[0])

    remints = [
        Action(
            "remint",
            "Secret",
            s.namespace,
            s.name,
            why=(f"legacy token Secret of ServiceAccount {s.service_account}: {s.reason}",),
            group="remint",
            token_b64=s.token_b64,
        )
        for s in sorted(stale, key=lambda s: s.key)
    ]
    service_accounts = sorted({(c.pod.namespace, c.service_account) for _, m in by_owner.values() for c in m})
    return RestartPlan((*remints, *(a for _, a in keyed)), tuple(service_accounts), current_key_ids)


# -- the restart patch and rollout status ------------------------------------------------------


def restart_patch(at: datetime) -> dict[str, Any]:
    """The strategic merge patch ``kubectl rollout restart`` sends (works as a JSON merge patch too)."""
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: rfc3339(at)}}}}}


def _int(obj: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = obj.get(key)
    return int(value) if isinstance(value, int) else default


def _restart_mark(obj: Mapping[str, Any], restarted_at: str | None) -> str | None:
    """None when the template carries the restart (or none was asked for), else why not."""
    if restarted_at is None:
        return None
    tmpl = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
    mark = (tmpl.get("annotations") or {}).get(RESTARTED_AT)
    if mark is None:
        return "the restart annotation is not on the pod template"
    try:
        older = parse_time(str(mark)) < parse_time(restarted_at)
    except ValueError:
        older = str(mark) != restarted_at
    return f"the pod template carries an older restart ({mark})" if older else None


def rollout_failed(kind: str, obj: Mapping[str, Any]) -> str | None:
    """Why waiting longer is pointless (kubectl: a Deployment past its progress deadline), else None."""
    if kind != "Deployment":
        return None
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return f"deployment {_meta(obj).get('name', '')} exceeded its progress deadline"
    return None


def rollout_done(kind: str, obj: Mapping[str, Any], restarted_at: str | None) -> tuple[bool, str]:
    """Whether the rollout of a Deployment/StatefulSet/DaemonSet finished, by the conditions of
    ``kubectl rollout status``, and the same kind of message. ``restarted_at`` (the value this tool
    wrote) must be on the pod template, so a status from before the patch never counts as done."""
    if kind not in ("Deployment", "DaemonSet", "StatefulSet"):
        return False, f"no rollout status for {kind}"
    name = _meta(obj).get("name", "")
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    generation, observed = _int(_meta(obj), "generation"), _int(status, "observedGeneration")
    mark = _restart_mark(obj, restarted_at)
    if mark is not None:
        return False, mark
    if kind == "Deployment":
        if generation > observed:
            return False, "waiting for the deployment spec update to be observed"
        failed = rollout_failed(kind, obj)
        if failed:
            return False, failed
        want, updated = _int(spec, "replicas", 1), _int(status, "updatedReplicas")
        replicas, available = _int(status, "replicas"), _int(status, "availableReplicas")
        if updated < want:
            return False, f"{updated} out of {want} new replicas have been updated"
        if replicas > updated:
            return False, f"{replicas - updated} old replicas are pending termination"
        if available < updated:
            return False, f"{available} of {updated} updated replicas are available"
        return True, f"deployment {name} successfully rolled out"
    if kind == "DaemonSet":
        if ((spec.get("updateStrategy") or {}).get("type") or "RollingUpdate") != "RollingUpdate":
            return True, "rollout status is only available for the RollingUpdate strategy"
        if generation > observed:
            return False, "waiting for the daemon set spec update to be observed"
        desired, updated = _int(status, "desiredNumberScheduled"), _int(status, "updatedNumberScheduled")
        available = _int(status, "numberAvailable")
        if updated < desired:
            return False, f"{updated} out of {desired} new pods have been updated"
        if available < desired:
            return False, f"{available} of {desired} updated pods are available"
        return True, f"daemon set {name} successfully rolled out"
    # StatefulSet
    strategy = spec.get("updateStrategy") or {}
    if (strategy.get("type") or "RollingUpdate") != "RollingUpdate":
        return True, "rollout status is only available for the RollingUpdate strategy"
    if observed == 0 or generation > observed:
        return False, "waiting for the statefulset spec update to be observed"
    want, ready = _int(spec, "replicas", 1), _int(status, "readyReplicas")
    if ready < want:
        return False, f"waiting for {want - ready} pods to be ready"
    partition = _int(strategy.get("rollingUpdate") or {}, "partition")
    updated = _int(status, "updatedReplicas")
    if updated < want - partition:
        return False, f"{updated} out of {want - partition} new pods have been updated"
    # kubectl stops here when rollingUpdate is set (always, once defaulted); with no partition we
    # also wait for the controller to record the rollout as complete, so no old pod is left.
    if partition == 0 and status.get("updateRevision") != status.get("currentRevision"):
        return False, f"waiting for the rolling update to complete at revision {status.get('updateRevision')}"
    return True, f"statefulset {name} rolling update complete ({updated} pods updated)"


def owner_settled(kind: str, obj: Mapping[str, Any]) -> tuple[bool, str]:
    """After an eviction: whether the owner has all its pods available again (before the next one)."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if kind == "DaemonSet":
        desired, available = _int(status, "desiredNumberScheduled"), _int(status, "numberAvailable")
        return available >= desired, f"{available} of {desired} pods available"
    if kind in ("Deployment", "ReplicaSet", "ReplicationController", "StatefulSet"):
        want = _int(spec, "replicas", 1)
        have = _int(status, "readyReplicas" if kind == "StatefulSet" else "availableReplicas")
        return have >= want, f"{have} of {want} replicas available"
    return True, "nothing recreates it"
