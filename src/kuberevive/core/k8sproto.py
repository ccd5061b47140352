"""Decode the Kubernetes protobuf values the API server stores in etcd — only what recovery reads.

A value under ``/registry/...`` is ``k8s\\0`` (4-byte magic) followed by a ``runtime.Unknown``::

    message Unknown  { TypeMeta typeMeta = 1; bytes raw = 2; string contentEncoding = 3; string contentType = 4; }
    message TypeMeta { string apiVersion = 1; string kind = 2; }

``raw`` is the object's own message. Recovery needs a ConfigMap (``kubeadm-config``, ``kubelet-config``)
and, of any object, the ``ObjectMeta`` (field 1 of every top-level kind) for its annotations::

    message ConfigMap  { ObjectMeta metadata = 1; map<string,string> data = 2; map<string,bytes> binaryData = 3;
                         bool immutable = 4; }
    message ObjectMeta { string name = 1; string namespace = 3; string uid = 5; string resourceVersion = 6;
                         map<string,string> labels = 11; map<string,string> annotations = 12; ... }

(field numbers from ``k8s.io/api/core/v1/generated.proto`` and ``k8s.io/apimachinery/pkg/apis/meta/v1``,
``pkg/runtime/generated.proto``). A ``map<K,V>`` is a repeated embedded message ``{K key = 1; V value = 2;}``.

Why a small wire-format reader and not the ``protobuf`` package: the five messages above use three wire
types (varint, length-delimited, and skipping fixed32/fixed64 of fields we ignore); the reader is ~60
lines, pure, fully unit-tested with hand-encoded vectors and checked against real etcd values written by
a real kube-apiserver (``tests/integration/test_etcd_client_lab.py``). The ``protobuf`` package would add
a compiled dependency and, without generated code, a hand-built descriptor set of the same size as this
reader. Unknown fields are skipped, so newer API servers that add fields still decode.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from kuberevive.errors import ProtoError

MAGIC = b"k8s\x00"

VARINT, FIXED64, LENGTH, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtoError("truncated varint in a protobuf value", "the etcd value is damaged")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtoError("varint longer than 64 bits in a protobuf value", "the etcd value is damaged")


def fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Each ``(field number, wire type, value)`` of one message: ints for varints/fixed, bytes for LEN."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ProtoError("field number 0 in a protobuf value", "the etcd value is damaged")
        value: int | bytes
        if wire == VARINT:
            value, pos = _varint(buf, pos)
        elif wire == LENGTH:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ProtoError("truncated length-delimited field in a protobuf value", "the etcd value is damaged")
            value, pos = buf[pos : pos + size], pos + size
        elif wire == FIXED64:
            if pos + 8 > len(buf):
                raise ProtoError("truncated fixed64 field", "the etcd value is damaged")
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == FIXED32:
            if pos + 4 > len(buf):
                raise ProtoError("truncated fixed32 field", "the etcd value is damaged")
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise ProtoError(f"unsupported protobuf wire type {wire}", "the etcd value is damaged or not Kubernetes'")
        yield number, wire, value


def _bytes(value: int | bytes, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise ProtoError(f"{what} has the wrong wire type", "the etcd value is not the expected Kubernetes object")
    return value


def _text(value: int | bytes, what: str) -> str:
    try:
        return _bytes(value, what).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtoError(f"{what} is not UTF-8", "the etcd value is damaged") from exc


def _map_entry(buf: bytes, what: str) -> tuple[str, bytes]:
    key, val = "", b""
    for number, _wire, value in fields(buf):
        if number == 1:
            key = _text(value, f"{what} key")
        elif number == 2:
            val = _bytes(value, f"{what} value")
    return key, val


@dataclass(frozen=True)
class Unknown:
    api_version: str
    kind: str
    raw: bytes
    content_encoding: str = ""
    content_type: str = ""


@dataclass(frozen=True)
class ObjectMeta:
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfigMap:
    metadata: ObjectMeta
    data: dict[str, str] = field(default_factory=dict)
    binary_data: dict[str, bytes] = field(default_factory=dict)
    immutable: bool = False


def decode_unknown(value: bytes) -> Unknown:
    """The envelope of a stored object (magic checked)."""
    if not value.startswith(MAGIC):
        hint = "it looks like JSON storage; read it as JSON" if value[:1] == b"{" else "the value is damaged"
        raise ProtoError("the etcd value does not start with the Kubernetes protobuf magic 'k8s\\0'", hint)
    api_version = kind = encoding = ctype = ""
    raw = b""
    for number, _wire, val in fields(value[len(MAGIC) :]):
        if number == 1:
            for n2, _w2, v2 in fields(_bytes(val, "typeMeta")):
                if n2 == 1:
                    api_version = _text(v2, "typeMeta.apiVersion")
                elif n2 == 2:
                    kind = _text(v2, "typeMeta.kind")
        elif number == 2:
            raw = _bytes(val, "raw")
        elif number == 3:
            encoding = _text(val, "contentEncoding")
        elif number == 4:
            ctype = _text(val, "contentType")
    return Unknown(api_version, kind, raw, encoding, ctype)


def decode_object_meta(buf: bytes) -> ObjectMeta:
    strings: dict[int, str] = {}
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    for number, _wire, val in fields(buf):
        if number in (1, 3, 5, 6):
            strings[number] = _text(val, f"metadata field {number}")
        elif number in (11, 12):
            k, v = _map_entry(_bytes(val, "metadata map"), "metadata map")
            (labels if number == 11 else annotations)[k] = v.decode("utf-8", errors="replace")
    return ObjectMeta(
        strings.get(1, ""), strings.get(3, ""), strings.get(5, ""), strings.get(6, ""), labels, annotations
    )


def object_meta(value: bytes) -> tuple[Unknown, ObjectMeta]:
    """The envelope and the metadata of any stored object (field 1 of every top-level kind)."""
    envelope = decode_unknown(value)
    for number, _wire, val in fields(envelope.raw):
        if number == 1:
            return envelope, decode_object_meta(_bytes(val, "metadata"))
    return envelope, ObjectMeta()


def decode_configmap(value: bytes) -> ConfigMap:
    """A stored ``v1/ConfigMap``."""
    envelope = decode_unknown(value)
    if envelope.kind != "ConfigMap" or envelope.api_version != "v1":
        raise ProtoError(
            f"the etcd value is a {envelope.api_version}/{envelope.kind}, expected v1/ConfigMap",
            "check the etcd key",
        )
    meta = ObjectMeta()
    data: dict[str, str] = {}
    binary: dict[str, bytes] = {}
    immutable = False
    for number, _wire, val in fields(envelope.raw):
        if number == 1:
            meta = decode_object_meta(_bytes(val, "metadata"))
        elif number == 2:
            k, v = _map_entry(_bytes(val, "data"), "data")
            try:
                data[k] = v.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtoError(f"ConfigMap data key {k!r} is not UTF-8", "the etcd value is damaged") from exc
        elif number == 3:
            k, v = _map_entry(_bytes(val, "binaryData"), "binaryData")
            binary[k] = v
        elif number == 4:
            immutable = bool(val)
    return ConfigMap(meta, data, binary, immutable)


# --- encoding, for test vectors only (the product never writes protobuf) -----------------------


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_field(number: int, value: bytes | str | int) -> bytes:
    if isinstance(value, int):
        return encode_varint(number << 3 | VARINT) + encode_varint(value)
    data = value.encode() if isinstance(value, str) else value
    return encode_varint(number << 3 | LENGTH) + encode_varint(len(data)) + data


def encode_configmap(
    name: str, namespace: str, data: dict[str, str], annotations: dict[str, str] | None = None
) -> bytes:
    meta = encode_field(1, name) + encode_field(3, namespace)
    for k, v in sorted((annotations or {}).items()):
        meta += encode_field(12, encode_field(1, k) + encode_field(2, v))
    body = encode_field(1, meta)
    for k, v in sorted(data.items()):
        body += encode_field(2, encode_field(1, k) + encode_field(2, v))
    type_meta = encode_field(1, "v1") + encode_field(2, "ConfigMap")
    return MAGIC + encode_field(1, type_meta) + encode_field(2, body) + encode_field(3, "") + encode_field(4, "")
