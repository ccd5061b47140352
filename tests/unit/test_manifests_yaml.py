"""core/yamlfmt as the manifests need it: go-yaml v2's key order, quoting and folding.

Each expectation was observed in real kubeadm v1.33.13 output (tests/golden/crosscheck/yaml-quoting.yaml).
"""

from __future__ import annotations

import pytest

from kuberevive.core import yamlfmt


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("2", 'v: "2"'),
        ("true", 'v: "true"'),
        ("y", 'v: "y"'),
        ("1e3", 'v: "1e3"'),
        ("0x1F", 'v: "0x1F"'),
        ("2001-12-14", 'v: "2001-12-14"'),
        ("", 'v: ""'),
        ("null", 'v: "null"'),
        ("*.example.com", "v: '*.example.com'"),
        ("a: b", "v: 'a: b'"),
        ("héllo", "v: héllo"),
        ("--a=b:c", "v: --a=b:c"),
        ("192.168.56.10:6443", "v: 192.168.56.10:6443"),
        ("10.96.0.0/12", "v: 10.96.0.0/12"),
        ("100Mi", "v: 100Mi"),
    ],
)
def test_scalar_quoting_like_go(value: str, line: str) -> None:
    assert yamlfmt.dump({"v": value}) == line + "\n"
    assert yamlfmt.load(yamlfmt.dump({"v": value})) == {"v": value}


def test_non_strings() -> None:
    assert yamlfmt.dump({"a": None, "b": True, "c": 2000001000, "d": {}}) == "a: null\nb: true\nc: 2000001000\nd: {}\n"


def test_long_plain_scalars_fold_at_column_80() -> None:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho"
    text = yamlfmt.dump({"command": [f"--x={words}"]})
    assert text == (
        # libyaml breaks at the first space once past column 80, like kubeadm's output shows
        "command:\n- --x=alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron\n  pi rho\n"
    )
    assert yamlfmt.load(text) == {"command": [f"--x={words}"]}
    no_spaces = "x" * 200
    assert yamlfmt.dump({"k": no_spaces}) == f"k: {no_spaces}\n"


def test_sequences_in_mappings_are_not_indented() -> None:
    assert yamlfmt.dump({"spec": {"containers": [{"name": "a", "command": ["x"]}]}}) == (
        "spec:\n  containers:\n  - command:\n    - x\n    name: a\n"
    )


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("apiVersion", "kind"),
        ("name", "namespace"),
        ("_", "A"),  # bytes say "A" < "_"; go-yaml puts a non-letter first
        ("_", "a"),
        ("k2", "k10"),  # digit runs compare as numbers
        ("etcd-certs-9", "etcd-certs-10"),
        ("a1", "a01"),
    ],
)
def test_go_key_order(a: str, b: str) -> None:
    assert yamlfmt.go_key_less(b, a) != yamlfmt.go_key_less(a, b) or a == b
    text = yamlfmt.dump({b: 1, a: 2})
    assert text.index(f"{a}:") < text.index(f"{b}:")
