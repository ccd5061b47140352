"""One root exception; ``str()`` is the sentence the operator reads, ``hint`` says what to do next."""

from __future__ import annotations


class KubereviveError(Exception):
    """Base of every expected failure. The CLI prints ``message`` and ``hint`` on one line."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = self.message.rstrip(".")
        if not self.hint:
            return f"{text}."
        hint = self.hint[0].upper() + self.hint[1:]
        return f"{text}. {hint.rstrip('.')}."


class ConfigError(KubereviveError):
    """The kubeadm configuration cannot be read, is of an unknown kind, or has an invalid field."""


class PkiError(KubereviveError):
    """A certificate or key is unreadable, does not match, or cannot be produced."""


class NodeFsError(KubereviveError):
    """A file on the node cannot be read or written as required."""


class ExistingFileError(NodeFsError):
    """A valid file already exists where the tool would write and ``--force`` was not given."""


class LabError(KubereviveError):
    """The lab cluster cannot be created, inspected or torn down."""


class KubeApiError(KubereviveError):
    """The Kubernetes API cannot be reached or refused a request.

    ``status`` is the HTTP status (None when the server was not reached); ``reason`` the API
    ``Status.reason`` (``NotFound``, ``AlreadyExists``, ``Forbidden``, ...).
    """

    def __init__(self, message: str, hint: str = "", status: int | None = None, reason: str = "") -> None:
        super().__init__(message, hint)
        self.status = status
        self.reason = reason


class EtcdError(KubereviveError):
    """etcd cannot be reached or returned an error."""


class PlanError(KubereviveError):
    """A recovery plan cannot be made or executed."""
