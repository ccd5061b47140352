"""Every expected failure is a class in kuberevive.errors, with its exit status on the class."""

from __future__ import annotations

import importlib
import pkgutil

import kuberevive
from kuberevive import errors
from kuberevive.errors import CollectError, KubereviveError

#: Private control-flow errors that never leave their module (each named, so a new one is a decision).
LOCAL = {"kuberevive.run.retrust.ProbeClean"}


def _all_subclasses(cls: type[KubereviveError]) -> set[type[KubereviveError]]:
    out: set[type[KubereviveError]] = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def test_every_error_class_lives_in_errors_py() -> None:
    for mod in pkgutil.walk_packages(kuberevive.__path__, "kuberevive."):
        if mod.name != "kuberevive.__main__":  # runs the CLI when imported
            importlib.import_module(mod.name)
    elsewhere = {
        f"{c.__module__}.{c.__qualname__}"
        for c in _all_subclasses(KubereviveError)
        if c.__module__ != errors.__name__ and c.__module__.startswith("kuberevive.")
    }
    assert elsewhere <= LOCAL, sorted(elsewhere - LOCAL)


def test_exit_status_is_declared_on_the_class() -> None:
    assert KubereviveError("x").exit_status == 1
    assert CollectError("x").exit_status == 3
    assert {c.exit_status for c in _all_subclasses(KubereviveError) if c is not CollectError} == {1}
