"""The protobuf reader for stored Kubernetes objects: hand-encoded vectors, damage, unknown fields."""

from __future__ import annotations

import pytest

from kuberevive.core import k8sproto
from kuberevive.core.k8sproto import decode_configmap, encode_field, encode_varint, fields, object_meta
from kuberevive.errors import ProtoError


def test_varint_round_trip() -> None:
    for n in (0, 1, 127, 128, 300, 2**32, 2**63 - 1):
        data = encode_field(1, n)
        assert list(fields(data)) == [(1, k8sproto.VARINT, n)]
    assert encode_varint(300) == b"\xac\x02"  # the protobuf documentation's example


def test_configmap_vector() -> None:
    value = k8sproto.encode_configmap(
        "kubeadm-config", "kube-system", {"ClusterConfiguration": "a: 1\n"}, annotations={"x/y": "z"}
    )
    assert value.startswith(b"k8s\x00")
    cm = decode_configmap(value)
    assert cm.metadata.name == "kubeadm-config" and cm.metadata.namespace == "kube-system"
    assert cm.metadata.annotations == {"x/y": "z"}
    assert cm.data == {"ClusterConfiguration": "a: 1\n"}
    env, meta = object_meta(value)
    assert (env.api_version, env.kind, meta.name) == ("v1", "ConfigMap", "kubeadm-config")


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    meta = encode_field(1, "n") + encode_field(7, 5) + b"\x41" + b"\x00" * 8 + b"\x4d" + b"\x00" * 4
    body = encode_field(1, meta) + encode_field(2, encode_field(1, "k") + encode_field(2, "v")) + encode_field(99, b"x")
    tm = encode_field(1, "v1") + encode_field(2, "ConfigMap")
    cm = decode_configmap(b"k8s\x00" + encode_field(1, tm) + encode_field(2, body))
    assert cm.metadata.name == "n" and cm.data == {"k": "v"}


def test_binary_data_and_immutable() -> None:
    body = encode_field(1, encode_field(1, "b")) + encode_field(
        3, encode_field(1, "bin") + encode_field(2, b"\xff\x00")
    )
    body += encode_field(4, 1)
    tm = encode_field(1, "v1") + encode_field(2, "ConfigMap")
    cm = decode_configmap(b"k8s\x00" + encode_field(1, tm) + encode_field(2, body))
    assert cm.binary_data == {"bin": b"\xff\x00"} and cm.immutable


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b'{"kind":"ConfigMap"}', "magic"),
        (b"k8s\x00\x0a\x05ab", "truncated length-delimited"),
        (b"k8s\x00\x08\xff\xff", "truncated varint"),
        (b"k8s\x00\x0b", "wire type 3"),
        (b"k8s\x00\x00\x01", "field number 0"),
    ],
)
def test_damaged_values_raise(value: bytes, message: str) -> None:
    with pytest.raises(ProtoError, match=message):
        decode_configmap(value)


def test_wrong_kind_is_refused() -> None:
    tm = encode_field(1, "v1") + encode_field(2, "Secret")
    with pytest.raises(ProtoError, match="expected v1/ConfigMap"):
        decode_configmap(b"k8s\x00" + encode_field(1, tm) + encode_field(2, b""))


def test_json_storage_gets_a_hint() -> None:
    with pytest.raises(ProtoError) as exc:
        decode_configmap(b'{"kind":"ConfigMap"}')
    assert "JSON" in str(exc.value)
