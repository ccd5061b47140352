"""NodeRoot: modes, move-aside, conflicts, and a missing root is an error (not a hang)."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from kuberevive.errors import ExistingFileError, NodeFsError
from kuberevive.io.noderoot import NodeRoot, WriteAction
from kuberevive.model.artifacts import Artifact, ArtifactKind


def art(path: str, content: bytes = b"x", mode: int = 0o600) -> Artifact:
    return Artifact(PurePosixPath(path), mode, ArtifactKind.CONFIG, "test", content)


def test_missing_root_is_an_error_not_a_hang(tmp_path: Path):
    with pytest.raises(NodeFsError, match="rolled back"):
        NodeRoot(tmp_path / "absent").write_all([art("/etc/kubernetes/a.conf")])


def test_modes_dirs_and_unchanged(tmp_path: Path):
    root = NodeRoot(tmp_path)
    (r,) = root.write_all([art("/etc/kubernetes/manifests/etcd.yaml", b"pod", 0o600)])
    assert r.action is WriteAction.CREATE
    f = tmp_path / "etc/kubernetes/manifests/etcd.yaml"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "etc/kubernetes/manifests").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "etc/kubernetes").stat().st_mode) == 0o755
    (again,) = root.write_all([art("/etc/kubernetes/manifests/etcd.yaml", b"pod", 0o600)])
    assert again.action is WriteAction.UNCHANGED


def test_conflict_refused_then_forced_with_move_aside(tmp_path: Path):
    root = NodeRoot(tmp_path)
    root.write_all([art("/etc/kubernetes/admin.conf", b"old")])
    with pytest.raises(ExistingFileError, match="--force"):
        root.write_all([art("/etc/kubernetes/admin.conf", b"new")])
    assert (tmp_path / "etc/kubernetes/admin.conf").read_bytes() == b"old"
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    (r,) = root.write_all([art("/etc/kubernetes/admin.conf", b"new")], force=True, now=now)
    assert r.moved_aside_to == PurePosixPath(
        "/var/lib/kuberevive/backup/20260102T030405.000000Z/etc/kubernetes/admin.conf"
    )
    assert (tmp_path / str(r.moved_aside_to).lstrip("/")).read_bytes() == b"old"
    assert (tmp_path / "etc/kubernetes/admin.conf").read_bytes() == b"new"


def test_a_mode_change_alone_is_a_conflict(tmp_path: Path):
    root = NodeRoot(tmp_path)
    root.write_all([art("/etc/kubernetes/pki/ca.key", b"k", 0o600)])
    (tmp_path / "etc/kubernetes/pki/ca.key").chmod(0o644)
    with pytest.raises(ExistingFileError):
        root.write_all([art("/etc/kubernetes/pki/ca.key", b"k", 0o600)])


def test_move_aside_across_file_systems_keeps_content_mode_and_symlinks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import errno
    import os

    root = NodeRoot(tmp_path)
    root.write_all([art("/var/lib/kubelet/pki/kubelet-client-1.pem", b"pem", 0o600)])
    link = tmp_path / "var/lib/kubelet/pki/kubelet-client-current.pem"
    link.symlink_to("/var/lib/kubelet/pki/kubelet-client-1.pem")

    def cross_device(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "replace", cross_device)
    aside_link = root.move_aside(PurePosixPath("/var/lib/kubelet/pki/kubelet-client-current.pem"))
    aside_file = root.move_aside(PurePosixPath("/var/lib/kubelet/pki/kubelet-client-1.pem"))
    assert aside_link is not None and aside_file is not None
    moved_link = tmp_path / str(aside_link).lstrip("/")
    moved_file = tmp_path / str(aside_file).lstrip("/")
    assert moved_link.is_symlink() and os.readlink(moved_link) == "/var/lib/kubelet/pki/kubelet-client-1.pem"
    assert moved_file.read_bytes() == b"pem" and stat.S_IMODE(moved_file.stat().st_mode) == 0o600
    assert not os.path.lexists(link) and not (tmp_path / "var/lib/kubelet/pki/kubelet-client-1.pem").exists()


def test_placeholder_dir_is_only_an_empty_real_directory(tmp_path: Path) -> None:
    root = NodeRoot(tmp_path)
    conf = tmp_path / "etc/kubernetes/controller-manager.conf"
    conf.mkdir(parents=True)
    assert root.is_placeholder_dir("/etc/kubernetes/controller-manager.conf")
    (conf / "x").write_text("x")
    assert not root.is_placeholder_dir("/etc/kubernetes/controller-manager.conf")  # holds something
    (tmp_path / "etc/kubernetes/scheduler.conf").write_text("")
    assert not root.is_placeholder_dir("/etc/kubernetes/scheduler.conf")  # a file
    (tmp_path / "etc/kubernetes/empty").mkdir()
    (tmp_path / "etc/kubernetes/link").symlink_to(tmp_path / "etc/kubernetes/empty")
    assert not root.is_placeholder_dir("/etc/kubernetes/link")  # a symlink to an empty dir
    assert not root.is_placeholder_dir("/etc/kubernetes/missing")


def test_a_failing_rollback_does_not_hide_the_write_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The container runtime can put an empty directory at a path we just wrote (an old static pod's hostPath);
    the rollback then cannot remove it, and the caller still gets the one-line NodeFsError."""
    root = NodeRoot(tmp_path)
    real = NodeRoot.atomic_write
    calls: list[PurePosixPath] = []

    def flaky(self: NodeRoot, node_path: PurePosixPath, *args: object, **kwargs: object) -> None:
        calls.append(node_path)
        if len(calls) == 2:
            first = self.host_path(calls[0])
            first.unlink()
            first.mkdir()  # what the runtime does at a missing hostPath file
            raise IsADirectoryError(21, "Is a directory", str(self.host_path(node_path)))
        real(self, node_path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(NodeRoot, "atomic_write", flaky)
    with pytest.raises(NodeFsError, match="rolled back"):
        root.write_all([art("/etc/kubernetes/a.conf"), art("/etc/kubernetes/b.conf")])


def test_move_aside_a_directory_across_file_systems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/etc and /var are often separate mounts: rename fails with EXDEV and the directory is copied, then removed."""
    import errno
    import os

    root = NodeRoot(tmp_path)
    placeholder = tmp_path / "etc/kubernetes/controller-manager.conf"
    placeholder.mkdir(parents=True)
    real_replace = os.replace

    def cross_device(src: object, dst: object) -> None:
        if str(src) == str(placeholder):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", cross_device)
    aside = root.move_aside(PurePosixPath("/etc/kubernetes/controller-manager.conf"))
    assert aside is not None and root.host_path(aside).is_dir()
    assert not placeholder.exists()
