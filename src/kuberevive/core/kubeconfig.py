"""The five kubeconfig files of ``kubeadm init`` (spec §3), and a typed kubeconfig parser.

Build::

    artifacts = build_kubeconfigs(cfg, bundle.ca_cert_pem, bundle.ca_key_pem, now, existing)

Each file holds one cluster (``clusterName``), one user (the client name) and one context
``<user>@<cluster>``; the client certificate is signed by the cluster CA with EKU clientAuth, a key of
``encryptionAlgorithm``, NotBefore = the CA's NotBefore (kubeadm sets none, so pkiutil inherits the CA's)
and NotAfter = now + certificateValidityPeriod. Files are mode 0600.

Parse: :meth:`Kubeconfig.from_yaml` gives frozen dataclasses with the kebab-case keys mapped once.

kubeadm vs. kuberevive
======================
=================================  ==========================================  ===================================
topic                              kubeadm v1.30 to v1.37                      kuberevive
=================================  ==========================================  ===================================
kubelet.conf server on init        local API endpoint with ControlPlane-       same, the gate's default per minor
                                   KubeletLocalMode (v1.31 alpha, v1.33 on,    from core/versions.py; ``preferences:
                                   v1.36 always), else the CPE URL             {}`` only up to v1.33
existing file, same CA             kept (server mismatch only warned)          kept, not returned
existing file, other CA            error                                       PkiError
external CA (no ca.key)            files must be supplied by the user          same: missing ones -> PkiError
=================================  ==========================================  ===================================
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any, ClassVar

import yaml
from cryptography import x509

from kuberevive.core import pki, versions, yamlfmt
from kuberevive.core.netaddr import advertise_ip, join_host_port, split_host_port
from kuberevive.errors import ConfigError, PkiError
from kuberevive.model import paths, yamlload
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.model.config import DEFAULT_KUBERNETES_DIR, EncryptionAlgorithm, KubeadmConfig

MODE_KUBECONFIG = 0o600
CONTROL_PLANE_KUBELET_LOCAL_MODE = versions.CONTROL_PLANE_KUBELET_LOCAL_MODE

ADMIN_CONF = paths.ADMIN_CONF.name
SUPER_ADMIN_CONF = paths.SUPER_ADMIN_CONF.name
KUBELET_CONF = paths.KUBELET_CONF.name
CONTROLLER_MANAGER_CONF = paths.CONTROLLER_MANAGER_CONF.name
SCHEDULER_CONF = paths.SCHEDULER_CONF.name


# ---------------------------------------------------------------------------------------- URLs


def local_api_endpoint(cfg: KubeadmConfig) -> str:
    """This node's own API server as ``<advertiseAddress>:<bindPort>`` (an IPv6 address in brackets)."""
    return join_host_port(str(advertise_ip(cfg.advertise_address)), cfg.bind_port)


def local_api_url(cfg: KubeadmConfig) -> str:
    """kubeadm ``GetLocalAPIEndpoint``: ``https://<advertiseAddress>:<bindPort>`` (IPv6 bracketed)."""
    return "https://" + local_api_endpoint(cfg)


def control_plane_url(cfg: KubeadmConfig) -> str:
    """kubeadm ``GetControlPlaneEndpoint``: controlPlaneEndpoint (its port, else bindPort), else the local URL."""
    cpe = cfg.cluster.control_plane_endpoint
    if not cpe:
        return local_api_url(cfg)
    host, port = split_host_port(cpe)
    return "https://" + join_host_port(host, port or cfg.bind_port)


def kubelet_local_mode(cfg: KubeadmConfig) -> bool:
    """Whether ControlPlaneKubeletLocalMode is on: the gate's value, else the minor's default (versions.py)."""
    return versions.profile(cfg.cluster.kubernetes_version).kubelet_local_mode(dict(cfg.cluster.feature_gates))


# ---------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class KubeconfigSpec:
    """One row of spec §3.2."""

    file_name: str
    client_name: str
    organization: tuple[str, ...]
    server: str
    description: str


def kubeconfig_specs(cfg: KubeadmConfig) -> tuple[KubeconfigSpec, ...]:
    """The kubeconfigs of ``kubeadm init`` for ``cfg``, in kubeadm's phase order."""
    cpe, local = control_plane_url(cfg), local_api_url(cfg)
    node_user = f"system:node:{cfg.node_name}"
    return (
        KubeconfigSpec(ADMIN_CONF, "kubernetes-admin", (pki.CLUSTER_ADMINS_GROUP,), cpe, "kubeconfig for the admin"),
        KubeconfigSpec(
            SUPER_ADMIN_CONF, "kubernetes-super-admin", ("system:masters",), cpe, "kubeconfig that bypasses RBAC"
        ),
        KubeconfigSpec(
            KUBELET_CONF,
            node_user,
            ("system:nodes",),
            local if kubelet_local_mode(cfg) else cpe,
            f"kubeconfig of the kubelet on {cfg.node_name}",
        ),
        KubeconfigSpec(
            CONTROLLER_MANAGER_CONF, "system:kube-controller-manager", (), local, "kubeconfig of the controller-manager"
        ),
        KubeconfigSpec(SCHEDULER_CONF, "system:kube-scheduler", (), local, "kubeconfig of the scheduler"),
    )


def render_kubeconfig(
    cluster_name: str,
    server: str,
    ca_cert_pem: bytes,
    user: str,
    client_cert_pem: bytes,
    client_key_pem: bytes,
    *,
    preferences: bool = True,
) -> str:
    """The YAML client-go writes for one cluster/user/context (keys sorted, byte fields base64).

    ``preferences``: the empty ``preferences: {}`` client-go writes up to v0.33 (versions.KubeadmMinor).
    """
    context = f"{user}@{cluster_name}"

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "clusters": [
            {"cluster": {"certificate-authority-data": b64(ca_cert_pem), "server": server}, "name": cluster_name}
        ],
        "contexts": [{"context": {"cluster": cluster_name, "user": user}, "name": context}],
        "current-context": context,
        "kind": "Config",
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(client_cert_pem), "client-key-data": b64(client_key_pem)},
            }
        ],
    }
    if preferences:
        doc["preferences"] = {}
    return yamlfmt.dump(doc)


def build_kubeconfigs(
    cfg: KubeadmConfig,
    ca_cert_pem: bytes,
    ca_key_pem: bytes | None,
    now: datetime,
    existing: Mapping[PurePosixPath, bytes] | None = None,
    kubeconfig_dir: str = DEFAULT_KUBERNETES_DIR,
    names: Collection[str] | None = None,
) -> list[Artifact]:
    """The kubeconfig files to write under ``kubeconfig_dir`` (absolute node paths, mode 0600); with ``names``, only
    those files (each costs a new private key: 50-150 ms of CPU for RSA).

    ``existing`` maps node paths to files already there: one whose CA data equals ``ca_cert_pem`` is kept (not
    returned); one with another CA raises PkiError. ``ca_key_pem`` None means external-CA mode: every file must
    already exist, otherwise PkiError.
    """
    ca_cert = pki.load_certificate(ca_cert_pem, "the cluster CA certificate")
    ca_key = pki.load_private_key(ca_key_pem, "the cluster CA key") if ca_key_pem is not None else None
    if ca_key is not None and not pki.key_matches_certificate(ca_key, ca_cert):
        raise PkiError("the cluster CA key does not belong to the CA certificate", "Pass the matching ca.key.")
    files = {PurePosixPath(p): b for p, b in (existing or {}).items()}
    not_after = now + cfg.cluster.certificate_validity
    artifacts: list[Artifact] = []
    for spec in kubeconfig_specs(cfg):
        if names is not None and spec.file_name not in names:
            continue
        path = PurePosixPath(kubeconfig_dir) / spec.file_name
        if path in files:
            _check_existing(path, files[path], ca_cert)
            continue
        if ca_key is None:
            raise PkiError(
                f"external CA mode (no ca.key): {path} must be supplied",
                f"Create {path} with a client certificate for {spec.client_name} signed by ca.crt, or provide ca.key.",
            )
        text = client_kubeconfig(
            cfg.cluster.cluster_name,
            spec,
            (ca_cert, ca_key),
            pki.generate_private_key(_client_key_algorithm(cfg)),
            (ca_cert.not_valid_before_utc, not_after),
            preferences=versions.profile(cfg.cluster.kubernetes_version).kubeconfig_preferences,
        )
        artifacts.append(Artifact(path, MODE_KUBECONFIG, ArtifactKind.KUBECONFIG, spec.description, text.encode()))
    return artifacts


def client_kubeconfig(
    cluster_name: str,
    spec: KubeconfigSpec,
    ca: tuple[x509.Certificate, pki.PrivateKey],
    key: pki.PrivateKey,
    validity: tuple[datetime, datetime],
    *,
    preferences: bool = True,
) -> str:
    """The kubeconfig of ``spec``: a client certificate for ``key`` (CN and O of ``spec``), issued by ``ca`` and
    valid over ``validity``, embedded with ``key`` and the CA certificate."""
    ca_cert, ca_key = ca
    cert = pki.issue_certificate(
        common_name=spec.client_name,
        organization=spec.organization,
        usages=(pki.KeyUsage.CLIENT_AUTH,),
        public_key=key.public_key(),
        ca_cert=ca_cert,
        ca_key=ca_key,
        not_before=validity[0],
        not_after=validity[1],
    )
    return render_kubeconfig(
        cluster_name,
        spec.server,
        pki.encode_certificate_pem(ca_cert),
        spec.client_name,
        pki.encode_certificate_pem(cert),
        pki.encode_private_key_pem(key),
        preferences=preferences,
    )


def _client_key_algorithm(cfg: KubeadmConfig) -> EncryptionAlgorithm:
    """encryptionAlgorithm, or RSA-2048 in the minors whose kubeconfigs ignore it (versions.py)."""
    if versions.profile(cfg.cluster.kubernetes_version).kubeconfig_keys_follow_algorithm:
        return cfg.cluster.encryption_algorithm
    return EncryptionAlgorithm.RSA_2048


def _check_existing(path: PurePosixPath, data: bytes, ca_cert: x509.Certificate) -> None:
    """kubeadm ``validateKubeConfig``: the current context's cluster must carry the same CA."""
    try:
        kc = Kubeconfig.from_yaml(data)
        cluster, _user = kc.current()
    except ConfigError as exc:
        raise PkiError(
            f"{path} is not a usable kubeconfig: {exc.message}", "Move it aside so that it is regenerated."
        ) from exc
    if cluster.certificate_authority_data is None:
        raise PkiError(f"{path} has no certificate-authority-data", "Move it aside so that it is regenerated.")
    theirs = pki.load_certificate(cluster.certificate_authority_data, f"certificate-authority-data of {path}")
    if theirs != ca_cert:
        raise PkiError(
            f"{path} trusts a different CA than ca.crt",
            "Move it aside so that it is regenerated for the current CA.",
        )


# ---------------------------------------------------------------------------------------- parser


def _kebab(meta_key: str) -> Any:
    return field(default=None, metadata={"key": meta_key})


def _b64(value: Any, where: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{where} is not valid base64") from exc


def _from_mapping(cls: type[Any], raw: Any, where: str) -> Any:
    """Build a dataclass from a mapping using each field's ``key`` metadata; ``*_data`` fields are base64."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        key = f.metadata.get("key", f.name)
        value = raw.get(key)
        if f.name.endswith("_data"):
            kwargs[f.name] = _b64(value, f"{where}.{key}")
        elif value is not None:
            if f.type in ("bool", "bool | None") and not isinstance(value, bool):
                raise ConfigError(f"{where}.{key} must be true or false")
            if f.type in ("str", "str | None") and not isinstance(value, str):
                raise ConfigError(f"{where}.{key} must be a string")
            kwargs[f.name] = value
    return cls(**kwargs)


@dataclass(frozen=True)
class Cluster:
    """``clusters[].cluster``."""

    server: str | None = _kebab("server")
    certificate_authority_data: bytes | None = _kebab("certificate-authority-data")
    certificate_authority: str | None = _kebab("certificate-authority")
    insecure_skip_tls_verify: bool | None = _kebab("insecure-skip-tls-verify")
    tls_server_name: str | None = _kebab("tls-server-name")


@dataclass(frozen=True)
class User:
    """``users[].user`` (the fields kubeadm files use)."""

    client_certificate_data: bytes | None = _kebab("client-certificate-data")
    client_key_data: bytes | None = _kebab("client-key-data")
    client_certificate: str | None = _kebab("client-certificate")
    client_key: str | None = _kebab("client-key")
    token: str | None = _kebab("token")
    token_file: str | None = _kebab("tokenFile")


@dataclass(frozen=True)
class Context:
    """``contexts[].context``."""

    cluster: str | None = _kebab("cluster")
    user: str | None = _kebab("user")
    namespace: str | None = _kebab("namespace")


@dataclass(frozen=True)
class Kubeconfig:
    """A parsed kubeconfig: named clusters, users and contexts, and the current context."""

    clusters: dict[str, Cluster]
    users: dict[str, User]
    contexts: dict[str, Context]
    current_context: str | None

    _SECTIONS: ClassVar[tuple[tuple[str, str, type[Any]], ...]] = (
        ("clusters", "cluster", Cluster),
        ("users", "user", User),
        ("contexts", "context", Context),
    )

    @classmethod
    def from_yaml(cls, text: str | bytes) -> Kubeconfig:
        """Parse kubeconfig YAML; raises ConfigError on anything that is not a v1 Config."""
        try:
            doc = yamlload.load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"kubeconfig is not valid YAML: {exc}") from exc
        if not isinstance(doc, dict):
            raise ConfigError("kubeconfig is not a YAML mapping")
        if doc.get("kind", "Config") != "Config":
            raise ConfigError(f"kubeconfig has kind {doc.get('kind')!r}, expected Config")
        sections: dict[str, dict[str, Any]] = {}
        for plural, singular, kind in cls._SECTIONS:
            entries = doc.get(plural)
            entries = [] if entries is None else entries
            if not isinstance(entries, list):
                raise ConfigError(f"kubeconfig {plural} must be a list")
            named: dict[str, Any] = {}
            for i, entry in enumerate(entries):
                if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                    raise ConfigError(f"kubeconfig {plural}[{i}] needs a name")
                named[entry["name"]] = _from_mapping(kind, entry.get(singular), f"{plural}[{entry['name']}]")
            sections[plural] = named
        current = doc.get("current-context")
        if current is not None and not isinstance(current, str):
            raise ConfigError("kubeconfig current-context must be a string")
        return cls(sections["clusters"], sections["users"], sections["contexts"], current or None)

    def current(self) -> tuple[Cluster, User]:
        """The cluster and user of the current context; ConfigError when they do not resolve."""
        if not self.current_context or self.current_context not in self.contexts:
            raise ConfigError(f"kubeconfig current-context {self.current_context!r} names no context")
        ctx = self.contexts[self.current_context]
        cluster = self.clusters.get(ctx.cluster or "")
        user = self.users.get(ctx.user or "")
        if cluster is None:
            raise ConfigError(f"context {self.current_context!r} names unknown cluster {ctx.cluster!r}")
        if user is None:
            raise ConfigError(f"context {self.current_context!r} names unknown user {ctx.user!r}")
        return cluster, user

    def current_or_first(self) -> tuple[Cluster, User]:
        """As :meth:`current`, but a file without a current context uses its first context (as kubectl's
        clients do when a kubeconfig names one context only); a context without a user gets an empty one."""
        if self.current_context:
            ctx_name = self.current_context
        elif self.contexts:
            ctx_name = next(iter(self.contexts))
        else:
            raise ConfigError("kubeconfig has no context")
        if ctx_name not in self.contexts:
            raise ConfigError(f"kubeconfig current-context {ctx_name!r} names no context")
        ctx = self.contexts[ctx_name]
        cluster = self.clusters.get(ctx.cluster or "")
        if cluster is None:
            raise ConfigError(f"context {ctx_name!r} names unknown cluster {ctx.cluster!r}")
        return cluster, self.users.get(ctx.user or "", User())

    def cluster_cas(self) -> list[bytes]:
        """The ``certificate-authority-data`` of every cluster, in file order (clusters without one left out)."""
        return [c.certificate_authority_data for c in self.clusters.values() if c.certificate_authority_data]


def first_cluster_ca(text: str | bytes) -> bytes | None:
    """The ``certificate-authority-data`` of a kubeconfig's first cluster (what kubeadm's files and
    ``cluster-info`` hold), ``None`` when it has none; :class:`ConfigError` when it is not a kubeconfig."""
    clusters = list(Kubeconfig.from_yaml(text).clusters.values())
    if not clusters:
        raise ConfigError("kubeconfig has no cluster")
    return clusters[0].certificate_authority_data
