"""The bounded YAML reader (issue 18: G-C-deep-nesting, D-21, G-C-dupkey): malformed input is a YAMLError, never a
RecursionError, and strict reading refuses a repeated key as kubeadm's strict decoding does."""

from __future__ import annotations

import pytest
import yaml

from kuberevive.model import yamlload


@pytest.mark.parametrize("text", ["a: " + "[" * 100000 + "]" * 100000, "a: " + "{k: " * 50000 + "x" + "}" * 50000])
def test_deep_nesting_is_a_yaml_error_not_a_recursion_error(text: str):
    with pytest.raises(yaml.YAMLError, match="nested deeper than 100 levels"):
        yamlload.load(text)
    with pytest.raises(yaml.YAMLError, match="nested deeper than 100 levels"):
        yamlload.load_all(text)


def test_nesting_up_to_the_limit_is_read():
    depth = yamlload.MAX_DEPTH - 2  # the mapping and the scalar-free innermost list count as levels too
    node = yamlload.load("a: " + "[" * depth + "]" * depth)["a"]
    for _ in range(depth - 1):
        assert isinstance(node, list) and len(node) == 1
        node = node[0]
    assert node == []
    with pytest.raises(yaml.YAMLError):
        yamlload.load("a: " + "[" * (depth + 2) + "]" * (depth + 2))


def test_duplicate_keys_only_in_strict_reading():
    text = "a: 1\nb:\n  c: 2\n  c: 3\n"
    assert yamlload.load_all(text) == [{"a": 1, "b": {"c": 3}}]  # kubeconfigs, manifests: as kubectl reads them
    with pytest.raises(yaml.YAMLError, match="duplicate key 'c'"):
        yamlload.load_all(text, strict=True)
    assert yamlload.load_all("a: 1\n---\na: 2\n", strict=True) == [{"a": 1}, {"a": 2}]  # per document


def test_the_loader_stays_safe():
    with pytest.raises(yaml.YAMLError, match="could not determine a constructor"):
        yamlload.load("!!python/object/apply:os.system ['true']")
