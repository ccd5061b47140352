"""One root exception; ``str()`` is the sentence the operator reads, ``hint`` says what to do next."""

from __future__ import annotations

from typing import ClassVar


class KubereviveError(Exception):
    """Base of every expected failure. The CLI prints ``message`` and ``hint`` on one line and exits with the
    class's :attr:`exit_status`."""

    #: The process's exit status when this error ends a command (1 unless a class says otherwise).
    exit_status: ClassVar[int] = 1

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


class ConfigMismatch(PlanError):
    """``recover --config`` differs from the ClusterConfiguration in etcd: the run's files are rolled back."""


class ProtoError(EtcdError):
    """A stored value is not the Kubernetes protobuf it should be."""


class BackupError(KubereviveError):
    """A backup cannot be made, decrypted, read or trusted."""


class TransportError(KubereviveError):
    """A node cannot be reached, or a command or file operation on it failed."""


class TransportTimeout(TransportError):
    """An operation on a node did not finish within its time limit."""


class HostKeyError(TransportError):
    """The node's SSH host key is unknown or does not match the known or pinned key."""


class CollectError(KubereviveError):
    """The node cannot be read at all: diagnose could not run (exit 3)."""

    exit_status = 3


class NotAControlPlane(KubereviveError):
    """``certs`` run on something that is not a kubeadm control-plane node."""
