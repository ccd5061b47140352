"""Checking a machine-readable document against its JSON Schema (docs/json.md), for every test that reads one.

The schemas are read as package data of the installed kuberevive (``importlib.resources``), exactly as a pip install
or the single executable carries them; a document's ``kind`` names its schema file.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from kuberevive.model.document import DOCUMENT_TYPES


@cache
def schema_of(kind: str) -> dict[str, Any]:
    text = (resources.files("kuberevive.schemas") / f"{kind}.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def errors(document: Any) -> list[str]:
    """Why ``document`` does not match the schema its ``kind`` names ([] when it does)."""
    if not isinstance(document, dict) or document.get("kind") not in {t.kind for t in DOCUMENT_TYPES}:
        return [f"not a kuberevive document (no known kind): {str(document)[:200]}"]
    validator = jsonschema.Draft202012Validator(schema_of(document["kind"]))
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}"
        for e in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


def validate(document: Any) -> dict[str, Any]:
    """``document`` itself when it matches its schema; else an AssertionError listing every mismatch."""
    found = errors(document)
    assert not found, "\n".join(found)
    assert isinstance(document, dict)
    return document
