"""Read a kubeadm configuration file (v1beta3 or v1beta4, multi-document) into :class:`KubeadmConfig`.

Strict, like the operator needs at 3 a.m.: an unknown field, a wrong kind, an invalid CIDR, IP,
duration or name is one :class:`ConfigError` that names the field (``ClusterConfiguration.
networking.podSubnet``). Defaults are those of kubeadm v1.33 (``v1beta4/defaults.go``); the values
kubeadm detects on the machine come from :class:`NodeFacts`. ``kubernetesVersion`` must be in the supported range
(v1.30 to v1.37), and what that minor's kubeadm reads decides the rest (core/versions.py): the configuration's API
version, the feature gates it knows or locks.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

import yaml

from kuberevive import KUBEADM_VERSION
from kuberevive.core import versions
from kuberevive.errors import ConfigError
from kuberevive.model import yamlload
from kuberevive.model.config import (
    DNS,
    APIEndpoint,
    APIServer,
    Arg,
    BootstrapToken,
    ClusterConfiguration,
    ControlPlaneComponent,
    EncryptionAlgorithm,
    EnvVar,
    ExternalEtcd,
    HostPathMount,
    InitConfiguration,
    KubeadmConfig,
    LocalEtcd,
    Networking,
    NodeFacts,
    NodeRegistration,
    Taint,
    Timeouts,
)

KUBEADM_GROUP = "kubeadm.k8s.io"
SUPPORTED_VERSIONS = ("v1beta3", "v1beta4")
#: Kinds kubeadm accepts in an init configuration file but that do not describe this node's init.
IGNORED_KUBEADM_KINDS = ("JoinConfiguration", "ResetConfiguration", "UpgradeConfiguration")
#: Component configuration documents kubeadm accepts beside its own.
COMPONENT_CONFIG_KINDS = {
    "KubeletConfiguration": "kubelet.config.k8s.io/",
    "KubeProxyConfiguration": "kubeproxy.config.k8s.io/",
}
MAX_SERVICE_SUBNET_BITS = 20  # kubeadm constants.MaximumBitsForServiceSubnet

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
_WILDCARD_SUBDOMAIN = re.compile(rf"^\*\.{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
_TOKEN = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
_VERSION = re.compile(r"^v?\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]*)?$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# small strict readers; ``where`` is the dotted field path used in every message


def _fail(where: str, what: str) -> ConfigError:
    return ConfigError(f"invalid kubeadm configuration: {where}: {what}", "fix that field and run again")


def _node_dir(value: str, where: str) -> None:
    """A directory the tool writes on the node: absolute, and never through ``..`` (which would climb out of
    the directory it names, and under ``--root`` out of the root)."""
    reason = node_dir_problem(value)
    if reason:
        raise _fail(where, f"{value!r} {reason}")


def node_dir_problem(value: str) -> str | None:
    """Why ``value`` is not acceptable as a node directory (absolute, no ``..`` part, no NUL), or None."""
    if not value.startswith("/"):
        return "must be an absolute path"
    if "\0" in value:
        return "holds a NUL character"
    if ".." in value.split("/"):
        return "must not contain '..'"
    return None


def _mapping(raw: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(where, f"expected a mapping, got {type(raw).__name__}")
    for key in raw:
        if key not in allowed:
            raise _fail(f"{where}.{key}" if where else str(key), "unknown field")
    return raw


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _str(raw: Any, where: str, default: str = "") -> str:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise _fail(where, f"expected a string, got {type(raw).__name__}")
    text = str(raw)
    if _CONTROL.search(text):  # a NUL or newline ends up in a command line, a file name or a certificate
        raise _fail(where, f"{text[:64]!r} holds a control character (NUL, newline, ...)")
    return text


def _bool(raw: Any, where: str, default: bool = False) -> bool:
    if raw is None:
        return default
    if not isinstance(raw, bool):
        raise _fail(where, f"expected true or false, got {raw!r}")
    return raw


def _int(raw: Any, where: str, default: int) -> int:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _fail(where, f"expected an integer, got {raw!r}")
    return raw


def _list(raw: Any, where: str, item: Callable[[Any, str], T]) -> tuple[T, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _fail(where, f"expected a list, got {type(raw).__name__}")
    return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(raw))


_GO_MAX_DURATION_SECONDS = (2**63 - 1) / 1e9


def parse_duration(text: str, where: str = "duration") -> timedelta:
    """Parse a Go ``time.Duration`` string such as ``87600h0m0s`` or ``1m30s``."""
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    if s == "0":
        return timedelta(0)
    pos, seconds = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise _fail(where, f"{text!r} is not a duration (examples: 8760h0m0s, 4m, 30s)")
    if seconds > _GO_MAX_DURATION_SECONDS:  # Go's time.ParseDuration: "invalid duration" (int64 nanoseconds)
        raise _fail(where, f"{text[:40]!r} is longer than the longest duration kubeadm accepts (2562047h47m16s)")
    return timedelta(seconds=sign * seconds)


def format_duration(value: timedelta) -> str:
    """Format like Go's ``Duration.String()`` for whole seconds (``87600h0m0s``, ``4m0s``, ``30s``)."""
    total = int(value.total_seconds())
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{sign}{h}h{m}m{s}s"
    if m:
        return f"{sign}{m}m{s}s"
    return f"{sign}{s}s"


def _duration(raw: Any, where: str, default: timedelta) -> timedelta:
    if raw is None:
        return default
    value = parse_duration(_str(raw, where), where)
    if value.total_seconds() < 0:
        raise _fail(where, "must not be negative")
    return value


def _ip(text: str, where: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError as exc:
        raise _fail(where, f"{text!r} is not a valid IP address") from exc


def _cidrs(text: str, where: str, service: bool) -> str:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 2:
        raise _fail(where, f"{text!r}: at most two CIDRs (one IPv4, one IPv6) are allowed")
    families = set()
    for p in parts:
        try:
            net = ipaddress.ip_network(p, strict=False)
        except ValueError as exc:
            raise _fail(where, f"{p!r} is not a valid CIDR") from exc
        if "/" not in p:
            raise _fail(where, f"{p!r} is not a valid CIDR (a prefix length is required)")
        families.add(net.version)
        if service and net.max_prefixlen - net.prefixlen > MAX_SERVICE_SUBNET_BITS:
            raise _fail(
                where,
                f"{p!r} is too large: a service subnet may have at most {MAX_SERVICE_SUBNET_BITS} host bits",
            )
    if len(parts) == 2 and len(families) != 2:
        raise _fail(where, f"{text!r}: a dual-stack value needs one IPv4 and one IPv6 CIDR")
    return text


def _san(text: str, where: str) -> str:
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if _DNS1123_SUBDOMAIN.match(text) or _WILDCARD_SUBDOMAIN.match(text):
        return text
    raise _fail(where, f"{text!r} is not a valid IP address, DNS name or wildcard DNS name")


def _san_item(raw: Any, where: str) -> str:
    return _san(_str(raw, where), where)


def _host_port(text: str, where: str) -> str:
    """Validate ``host[:port]`` of controlPlaneEndpoint (IPv6 in brackets when a port is given)."""
    host, port = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _fail(where, f"{text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise _fail(where, f"{text!r} is not host[:port]")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise _fail(where, f"{text!r}: port must be a number between 1 and 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        if not _DNS1123_SUBDOMAIN.match(host):
            raise _fail(where, f"{text!r}: {host!r} is not a valid IP address or DNS name") from exc
    return text


# --------------------------------------------------------------------------------------------
# v1beta3 / v1beta4 pieces


def _args(raw: Any, where: str, version: str) -> tuple[Arg, ...]:
    if version == "v1beta3":
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            raise _fail(where, "expected a map of flag name to value (v1beta3)")
        # kubeadm converts the v1beta3 map to a list sorted by name.
        return tuple(Arg(_str(k, f"{where} (a flag name)"), _str(v, f"{where}.{k}")) for k, v in sorted(raw.items()))

    def one(item: Any, w: str) -> Arg:
        m = _mapping(item, w, {"name", "value"})
        name = _str(m.get("name"), f"{w}.name")
        if not name:
            raise _fail(f"{w}.name", "must not be empty")
        return Arg(name, _str(m.get("value"), f"{w}.value"))

    if isinstance(raw, dict):
        raise _fail(where, "expected a list of {name, value} (v1beta4); a map is the v1beta3 form")
    return _list(raw, where, one)


def _envs(raw: Any, where: str) -> tuple[EnvVar, ...]:
    def one(item: Any, w: str) -> EnvVar:
        m = _mapping(item, w, {"name", "value"})
        name = _str(m.get("name"), f"{w}.name")
        if not name:
            raise _fail(f"{w}.name", "must not be empty")
        return EnvVar(name, _str(m.get("value"), f"{w}.value"))

    return _list(raw, where, one)


def _volumes(raw: Any, where: str) -> tuple[HostPathMount, ...]:
    def one(item: Any, w: str) -> HostPathMount:
        m = _mapping(item, w, {"name", "hostPath", "mountPath", "readOnly", "pathType"})
        fields = {k: _str(m.get(k), f"{w}.{k}") for k in ("name", "hostPath", "mountPath")}
        for k, v in fields.items():
            if not v:
                raise _fail(f"{w}.{k}", "is required")
        return HostPathMount(
            name=fields["name"],
            host_path=fields["hostPath"],
            mount_path=fields["mountPath"],
            read_only=_bool(m.get("readOnly"), f"{w}.readOnly"),
            path_type=_str(m.get("pathType"), f"{w}.pathType"),
        )

    return _list(raw, where, one)


def _component(raw: Any, where: str, version: str, extra: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    allowed = {"extraArgs", "extraVolumes"} | set(extra)
    if version == "v1beta4":
        allowed.add("extraEnvs")
    m = _mapping(raw, where, allowed)
    return {
        "extra_args": _args(m.get("extraArgs"), f"{where}.extraArgs", version),
        "extra_volumes": _volumes(m.get("extraVolumes"), f"{where}.extraVolumes"),
        "extra_envs": _envs(m.get("extraEnvs"), f"{where}.extraEnvs"),
        "_raw": m,
    }


def _cluster(doc: dict[str, Any], version: str) -> tuple[ClusterConfiguration, timedelta | None]:
    w = "ClusterConfiguration"
    allowed = {
        "apiVersion", "kind", "etcd", "networking", "kubernetesVersion", "controlPlaneEndpoint",
        "apiServer", "controllerManager", "scheduler", "dns", "certificatesDir", "imageRepository",
        "featureGates", "clusterName",
    }  # fmt: skip
    if version == "v1beta4":
        allowed |= {
            "proxy", "encryptionAlgorithm", "certificateValidityPeriod", "caCertificateValidityPeriod",
        }  # fmt: skip
    m = _mapping(doc, w, allowed)

    # kubernetesVersion: kubeadm fetches "stable-1" online and falls back to its own version.
    version_text = _str(m.get("kubernetesVersion"), f"{w}.kubernetesVersion") or KUBEADM_VERSION
    if not _VERSION.match(version_text):
        raise _fail(f"{w}.kubernetesVersion", f"{version_text!r} is not a version like v1.33.13")
    if not version_text.startswith("v"):
        version_text = "v" + version_text
    minor = versions.check_supported(version_text, f"{w}.kubernetesVersion")
    versions.check_config_api_version(version, minor, w)

    net_raw = _mapping(m.get("networking"), f"{w}.networking", {"serviceSubnet", "podSubnet", "dnsDomain"})
    svc = _str(net_raw.get("serviceSubnet"), f"{w}.networking.serviceSubnet") or Networking.service_subnet
    pod = _str(net_raw.get("podSubnet"), f"{w}.networking.podSubnet")
    dns_domain = _str(net_raw.get("dnsDomain"), f"{w}.networking.dnsDomain") or Networking.dns_domain
    networking = Networking(
        service_subnet=_cidrs(svc, f"{w}.networking.serviceSubnet", service=True),
        pod_subnet=_cidrs(pod, f"{w}.networking.podSubnet", service=False) if pod else "",
        dns_domain=dns_domain,
    )
    if not _DNS1123_SUBDOMAIN.match(dns_domain):
        raise _fail(f"{w}.networking.dnsDomain", f"{dns_domain!r} is not a valid DNS domain")

    cpe = _str(m.get("controlPlaneEndpoint"), f"{w}.controlPlaneEndpoint")
    if cpe:
        _host_port(cpe, f"{w}.controlPlaneEndpoint")

    api_extra = {"certSANs"} | ({"timeoutForControlPlane"} if version == "v1beta3" else set())
    api = _component(m.get("apiServer"), f"{w}.apiServer", version, api_extra)
    api_raw = api.pop("_raw")
    cert_sans = _list(api_raw.get("certSANs"), f"{w}.apiServer.certSANs", _san_item)
    timeout_cp: timedelta | None = None
    if "timeoutForControlPlane" in api_raw:
        timeout_cp = _duration(
            api_raw["timeoutForControlPlane"], f"{w}.apiServer.timeoutForControlPlane", timedelta(minutes=4)
        )
    kcm = _component(m.get("controllerManager"), f"{w}.controllerManager", version)
    kcm.pop("_raw")
    sched = _component(m.get("scheduler"), f"{w}.scheduler", version)
    sched.pop("_raw")

    etcd_raw = _mapping(m.get("etcd"), f"{w}.etcd", {"local", "external"})
    etcd_local: LocalEtcd | None = None
    etcd_external: ExternalEtcd | None = None
    if etcd_raw.get("local") is not None and etcd_raw.get("external") is not None:
        raise _fail(f"{w}.etcd", "local and external are mutually exclusive")
    if etcd_raw.get("external") is not None:
        ew = f"{w}.etcd.external"
        external_fields = {"endpoints", "caFile", "certFile", "keyFile"}
        if version == "v1beta4" and versions.minor_profile(minor).external_etcd_http_endpoints:
            external_fields.add("httpEndpoints")
        e = _mapping(etcd_raw["external"], ew, external_fields)
        _list(e.get("httpEndpoints"), f"{ew}.httpEndpoints", _str)  # validated; kubeadm's preflight alone uses it
        endpoints = _list(e.get("endpoints"), f"{ew}.endpoints", _str)
        if not endpoints:
            raise _fail(f"{ew}.endpoints", "at least one endpoint is required")
        etcd_external = ExternalEtcd(
            endpoints=endpoints,
            ca_file=_str(e.get("caFile"), f"{ew}.caFile"),
            cert_file=_str(e.get("certFile"), f"{ew}.certFile"),
            key_file=_str(e.get("keyFile"), f"{ew}.keyFile"),
        )
    else:
        lw = f"{w}.etcd.local"
        local_allowed = {"imageRepository", "imageTag", "dataDir", "extraArgs", "serverCertSANs", "peerCertSANs"}
        if version == "v1beta4":
            local_allowed.add("extraEnvs")
        loc = _mapping(etcd_raw.get("local"), lw, local_allowed)
        data_dir = _str(loc.get("dataDir"), f"{lw}.dataDir") or LocalEtcd.data_dir
        _node_dir(data_dir, f"{lw}.dataDir")
        etcd_local = LocalEtcd(
            image_repository=_str(loc.get("imageRepository"), f"{lw}.imageRepository"),
            image_tag=_str(loc.get("imageTag"), f"{lw}.imageTag"),
            data_dir=data_dir,
            extra_args=_args(loc.get("extraArgs"), f"{lw}.extraArgs", version),
            extra_envs=_envs(loc.get("extraEnvs"), f"{lw}.extraEnvs"),
            server_cert_sans=_list(loc.get("serverCertSANs"), f"{lw}.serverCertSANs", _san_item),
            peer_cert_sans=_list(loc.get("peerCertSANs"), f"{lw}.peerCertSANs", _san_item),
        )

    dns_allowed = {"imageRepository", "imageTag"} | ({"disabled"} if version == "v1beta4" else set())
    dns_raw = _mapping(m.get("dns"), f"{w}.dns", dns_allowed)
    proxy_raw = _mapping(m.get("proxy"), f"{w}.proxy", {"disabled"})

    cert_dir = _str(m.get("certificatesDir"), f"{w}.certificatesDir") or ClusterConfiguration.certificates_dir
    _node_dir(cert_dir, f"{w}.certificatesDir")

    gates_raw = m.get("featureGates") or {}
    if not isinstance(gates_raw, dict):
        raise _fail(f"{w}.featureGates", "expected a map of gate name to true/false")
    gates = tuple(sorted((str(k), _bool(v, f"{w}.featureGates.{k}")) for k, v in gates_raw.items()))
    versions.validate_feature_gates(minor, dict(gates), f"{w}.featureGates")

    algo_text = _str(m.get("encryptionAlgorithm"), f"{w}.encryptionAlgorithm") or "RSA-2048"
    try:
        algorithm = EncryptionAlgorithm(algo_text)
    except ValueError as exc:
        allowed_algos = ", ".join(a.value for a in EncryptionAlgorithm)
        raise _fail(f"{w}.encryptionAlgorithm", f"{algo_text!r} is not one of {allowed_algos}") from exc
    ecdsa_gate = dict(gates).get(versions.PUBLIC_KEYS_ECDSA)
    if ecdsa_gate is not None:  # kubeadm EncryptionAlgorithmType(): the (deprecated) gate wins over the field
        algorithm = EncryptionAlgorithm.ECDSA_P256 if ecdsa_gate else EncryptionAlgorithm.RSA_2048

    cert_validity = _duration(
        m.get("certificateValidityPeriod"), f"{w}.certificateValidityPeriod", ClusterConfiguration.certificate_validity
    )
    ca_validity = _duration(
        m.get("caCertificateValidityPeriod"),
        f"{w}.caCertificateValidityPeriod",
        ClusterConfiguration.ca_certificate_validity,
    )
    if cert_validity.total_seconds() <= 0 or ca_validity.total_seconds() <= 0:
        raise _fail(f"{w}.certificateValidityPeriod", "validity periods must be positive")

    cluster = ClusterConfiguration(
        kubernetes_version=version_text,
        networking=networking,
        control_plane_endpoint=cpe,
        api_server=APIServer(cert_sans=cert_sans, **api),
        controller_manager=ControlPlaneComponent(**kcm),
        scheduler=ControlPlaneComponent(**sched),
        etcd_local=etcd_local,
        etcd_external=etcd_external,
        dns=DNS(
            image_repository=_str(dns_raw.get("imageRepository"), f"{w}.dns.imageRepository"),
            image_tag=_str(dns_raw.get("imageTag"), f"{w}.dns.imageTag"),
            disabled=_bool(dns_raw.get("disabled"), f"{w}.dns.disabled"),
        ),
        proxy_disabled=_bool(proxy_raw.get("disabled"), f"{w}.proxy.disabled"),
        certificates_dir=cert_dir.rstrip("/") or "/",
        image_repository=_str(m.get("imageRepository"), f"{w}.imageRepository") or "registry.k8s.io",
        feature_gates=gates,
        cluster_name=_str(m.get("clusterName"), f"{w}.clusterName") or "kubernetes",
        encryption_algorithm=algorithm,
        certificate_validity=cert_validity,
        ca_certificate_validity=ca_validity,
    )
    return cluster, timeout_cp


def _taints(raw: Any, where: str) -> tuple[Taint, ...]:
    def one(item: Any, w: str) -> Taint:
        t = _mapping(item, w, {"key", "value", "effect", "timeAdded"})
        key = _str(t.get("key"), f"{w}.key")
        effect = _str(t.get("effect"), f"{w}.effect")
        if not key:
            raise _fail(f"{w}.key", "is required")
        if effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise _fail(f"{w}.effect", f"{effect!r} is not one of NoSchedule, PreferNoSchedule, NoExecute")
        return Taint(key=key, effect=effect, value=_str(t.get("value"), f"{w}.value"))

    return _list(raw, where, one)


def _bootstrap_tokens(raw: Any, where: str) -> tuple[BootstrapToken, ...]:
    def one(item: Any, w: str) -> BootstrapToken:
        t = _mapping(item, w, {"token", "description", "ttl", "expires", "usages", "groups"})
        token = _str(t.get("token"), f"{w}.token")
        if token and not _TOKEN.match(token):
            raise _fail(f"{w}.token", "must match [a-z0-9]{6}.[a-z0-9]{16}")
        ttl = _duration(t.get("ttl"), f"{w}.ttl", BootstrapToken.ttl or timedelta(hours=24))
        usages = _list(t.get("usages"), f"{w}.usages", _str) or BootstrapToken.usages
        groups = _list(t.get("groups"), f"{w}.groups", _str) or BootstrapToken.groups
        return BootstrapToken(
            token=token,
            description=_str(t.get("description"), f"{w}.description"),
            ttl=ttl if ttl.total_seconds() > 0 else None,
            expires=_str(t.get("expires"), f"{w}.expires"),
            usages=usages,
            groups=groups,
        )

    tokens = _list(raw, where, one)
    return tokens or (BootstrapToken(),)


def _init(
    doc: Mapping[str, Any] | None, version: str, facts: NodeFacts, timeout_cp: timedelta | None
) -> InitConfiguration:
    w = "InitConfiguration"
    allowed = {
        "apiVersion", "kind", "bootstrapTokens", "nodeRegistration", "localAPIEndpoint",
        "certificateKey", "skipPhases", "patches",
    }  # fmt: skip
    if version == "v1beta4":
        allowed |= {"dryRun", "timeouts"}
    m = _mapping(dict(doc) if doc is not None else {}, w, allowed)

    ep = _mapping(m.get("localAPIEndpoint"), f"{w}.localAPIEndpoint", {"advertiseAddress", "bindPort"})
    adv = _str(ep.get("advertiseAddress"), f"{w}.localAPIEndpoint.advertiseAddress") or (facts.default_address or "")
    if not adv:
        raise ConfigError(
            f"invalid kubeadm configuration: {w}.localAPIEndpoint.advertiseAddress: not set and this "
            "machine has no default-route address",
            "set localAPIEndpoint.advertiseAddress in the configuration",
        )
    adv = _ip(adv, f"{w}.localAPIEndpoint.advertiseAddress")
    port = _int(ep.get("bindPort"), f"{w}.localAPIEndpoint.bindPort", 6443)
    if not 0 < port < 65536:
        raise _fail(f"{w}.localAPIEndpoint.bindPort", f"{port} is not a port between 1 and 65535")

    nw = f"{w}.nodeRegistration"
    nr_allowed = {"name", "criSocket", "taints", "kubeletExtraArgs", "ignorePreflightErrors", "imagePullPolicy"}
    if version == "v1beta4":
        nr_allowed.add("imagePullSerial")
    nr = _mapping(m.get("nodeRegistration"), nw, nr_allowed)
    name = _str(nr.get("name"), f"{nw}.name") or facts.hostname.lower()
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):  # kubeadm: ValidateDNS1123Subdomain
        raise _fail(
            f"{nw}.name",
            f"{name[:64]!r}{'...' if len(name) > 64 else ''} is not a valid node name "
            "(lower-case DNS-1123 subdomain of at most 253 characters)",
        )
    cri = _str(nr.get("criSocket"), f"{nw}.criSocket") or NodeRegistration.cri_socket
    if cri.startswith("/"):
        cri = "unix://" + cri  # kubeadm accepts a bare path with a deprecation warning
    pull_policy = _str(nr.get("imagePullPolicy"), f"{nw}.imagePullPolicy") or "IfNotPresent"
    if pull_policy not in ("Always", "IfNotPresent", "Never"):
        raise _fail(f"{nw}.imagePullPolicy", f"{pull_policy!r} is not one of Always, IfNotPresent, Never")
    taints = NodeRegistration.taints if nr.get("taints") is None else _taints(nr["taints"], f"{nw}.taints")
    node_registration = NodeRegistration(
        name=name,
        cri_socket=cri,
        taints=taints,
        kubelet_extra_args=_args(nr.get("kubeletExtraArgs"), f"{nw}.kubeletExtraArgs", version),
        ignore_preflight_errors=_list(nr.get("ignorePreflightErrors"), f"{nw}.ignorePreflightErrors", _str),
        image_pull_policy=pull_policy,
        image_pull_serial=_bool(nr.get("imagePullSerial"), f"{nw}.imagePullSerial", True),
    )

    tw = f"{w}.timeouts"
    t = _mapping(
        m.get("timeouts"),
        tw,
        {
            "controlPlaneComponentHealthCheck", "kubeletHealthCheck", "kubernetesAPICall", "etcdAPICall",
            "tlsBootstrap", "discovery", "upgradeManifests",
        },
    )  # fmt: skip
    d = Timeouts()
    timeouts = Timeouts(
        control_plane_component_health_check=_duration(
            t.get("controlPlaneComponentHealthCheck"),
            f"{tw}.controlPlaneComponentHealthCheck",
            timeout_cp or d.control_plane_component_health_check,
        ),
        kubelet_health_check=_duration(t.get("kubeletHealthCheck"), f"{tw}.kubeletHealthCheck", d.kubelet_health_check),
        kubernetes_api_call=_duration(t.get("kubernetesAPICall"), f"{tw}.kubernetesAPICall", d.kubernetes_api_call),
        etcd_api_call=_duration(t.get("etcdAPICall"), f"{tw}.etcdAPICall", d.etcd_api_call),
        tls_bootstrap=_duration(t.get("tlsBootstrap"), f"{tw}.tlsBootstrap", d.tls_bootstrap),
        discovery=_duration(t.get("discovery"), f"{tw}.discovery", d.discovery),
        upgrade_manifests=_duration(t.get("upgradeManifests"), f"{tw}.upgradeManifests", d.upgrade_manifests),
    )  # fmt: skip

    patches = _mapping(m.get("patches"), f"{w}.patches", {"directory"})
    return InitConfiguration(
        local_api_endpoint=APIEndpoint(advertise_address=adv, bind_port=port),
        node_registration=node_registration,
        bootstrap_tokens=_bootstrap_tokens(m.get("bootstrapTokens"), f"{w}.bootstrapTokens"),
        certificate_key=_str(m.get("certificateKey"), f"{w}.certificateKey"),
        skip_phases=_list(m.get("skipPhases"), f"{w}.skipPhases", _str),
        patches_directory=_str(patches.get("directory"), f"{w}.patches.directory"),
        timeouts=timeouts,
    )


# --------------------------------------------------------------------------------------------


def split_documents(text: str | bytes) -> list[dict[str, Any]]:
    """The YAML documents of a kubeadm config file (``---`` separated), empty ones dropped."""
    try:
        docs = [d for d in yamlload.load_all(text, strict=True) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError(
            f"the kubeadm configuration is not valid YAML{where}: {problem}", "fix the YAML syntax and run again"
        ) from exc
    for i, d in enumerate(docs):
        if not isinstance(d, dict):
            raise ConfigError(
                f"document {i + 1} of the kubeadm configuration is not a mapping",
                "each document needs apiVersion and kind",
            )
    if not docs:
        raise ConfigError("the kubeadm configuration is empty", "give a ClusterConfiguration and/or InitConfiguration")
    return docs


def load_kubeadm_config(text: str | bytes, facts: NodeFacts) -> KubeadmConfig:
    """Parse, default and validate a ``kubeadm init --config`` file."""
    cluster_doc: dict[str, Any] | None = None
    init_doc: dict[str, Any] | None = None
    api_versions: set[str] = set()
    components: list[tuple[str, str]] = []
    for i, doc in enumerate(split_documents(text)):
        api_version = str(doc.get("apiVersion") or "")
        kind = str(doc.get("kind") or "")
        where = f"document {i + 1}"
        if not api_version or not kind:
            raise ConfigError(f"{where} of the kubeadm configuration has no apiVersion or kind", "add both")
        if kind in COMPONENT_CONFIG_KINDS:
            if not api_version.startswith(COMPONENT_CONFIG_KINDS[kind]):
                raise ConfigError(
                    f"{where}: {kind} has apiVersion {api_version!r}",
                    f"use {COMPONENT_CONFIG_KINDS[kind]}<version>",
                )
            components.append((kind, yaml.safe_dump(doc, sort_keys=True)))
            continue
        group, _, version = api_version.partition("/")
        if group != KUBEADM_GROUP:
            raise ConfigError(
                f"{where}: unknown kind {kind!r} with apiVersion {api_version!r}",
                "a kubeadm configuration holds InitConfiguration, ClusterConfiguration and component configs",
            )
        if version not in SUPPORTED_VERSIONS:
            raise ConfigError(f"{where}: {api_version} is not supported", "use kubeadm.k8s.io/v1beta4 (or v1beta3)")
        if kind == "ClusterConfiguration":
            if cluster_doc is not None:
                raise ConfigError(f"{where}: a second ClusterConfiguration", "keep exactly one")
            cluster_doc = doc
        elif kind == "InitConfiguration":
            if init_doc is not None:
                raise ConfigError(f"{where}: a second InitConfiguration", "keep exactly one")
            init_doc = doc
        elif kind in IGNORED_KUBEADM_KINDS:
            continue
        else:
            raise ConfigError(
                f"{where}: unknown kind {kind!r} in {api_version}",
                "use InitConfiguration or ClusterConfiguration",
            )
        api_versions.add(version)
    if cluster_doc is None and init_doc is None:
        raise ConfigError(
            "the kubeadm configuration has neither a ClusterConfiguration nor an InitConfiguration",
            "add at least one of them",
        )
    init_version = str((init_doc or {}).get("apiVersion", "/v1beta4")).partition("/")[2]
    cluster_version = str((cluster_doc or {}).get("apiVersion", f"/{init_version}")).partition("/")[2]
    cluster, timeout_cp = _cluster(cluster_doc or {}, cluster_version)
    if init_doc is not None:
        minor = versions.check_supported(cluster.kubernetes_version)
        versions.check_config_api_version(init_version, minor, "InitConfiguration")
    init = _init(init_doc, init_version, facts, timeout_cp)
    return KubeadmConfig(cluster=cluster, init=init, component_configs=tuple(components))
