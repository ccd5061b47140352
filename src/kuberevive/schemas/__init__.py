"""JSON Schemas (draft 2020-12) of every machine-readable document, ``<kind>.schema.json`` (docs/json.md).

Data only: kuberevive itself never validates against them (no jsonschema at run time); the tests check every
command's real output with them, and scripts may use them (``importlib.resources.files("kuberevive.schemas")``).
"""
