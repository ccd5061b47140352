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


def test_move_aside_across_file_systems_keeps_content_mode_owner_and_symlinks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import errno
    import os

    root = NodeRoot(tmp_path)
    root.write_all([art("/var/lib/kubelet/pki/kubelet-client-1.pem", b"pem", 0o600)])
    link = tmp_path / "var/lib/kubelet/pki/kubelet-client-current.pem"
    link.symlink_to("/var/lib/kubelet/pki/kubelet-client-1.pem")
    owner = (1234, 2345) if os.geteuid() == 0 else (os.getuid(), os.getgid())  # CI runs as root
    os.chown(tmp_path / "var/lib/kubelet/pki/kubelet-client-1.pem", *owner)
    os.chown(link, *owner, follow_symlinks=False)

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
    assert (moved_file.stat().st_uid, moved_file.stat().st_gid) == owner
    assert (moved_link.lstat().st_uid, moved_link.lstat().st_gid) == owner
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


# -- the node-path resolver: everything stays inside the root (adversarial F1, F3, F7, F8) -------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the root, standing for the machine that runs the tool."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret").write_bytes(b"HOST-ONLY")
    return d


@pytest.fixture
def inside(tmp_path: Path) -> NodeRoot:
    (tmp_path / "root").mkdir()
    return NodeRoot(tmp_path / "root")


@pytest.mark.parametrize(
    ("node_path", "expected"),
    [
        ("/etc/kubernetes/pki", "/etc/kubernetes/pki"),
        ("/../../../x", "/x"),
        ("/etc/kubernetes/../../../x", "/x"),
        ("//etc//./kubernetes/", "/etc/kubernetes"),
        ("/", "/"),
    ],
)
def test_normalise_clamps_dotdot_at_the_root(node_path: str, expected: str) -> None:
    from kuberevive.io.noderoot import normalise

    assert normalise(node_path) == PurePosixPath(expected)


@pytest.mark.parametrize("bad", ["etc/kubernetes", "", "/etc/\0x"])
def test_normalise_refuses_relative_and_nul(bad: str) -> None:
    from kuberevive.io.noderoot import normalise

    with pytest.raises(ValueError):
        normalise(bad)


def test_absolute_symlink_resolves_under_the_root_not_on_the_host(inside: NodeRoot, outside: Path) -> None:
    """kubeadm's kubelet-client-current.pem is an absolute link: under --root it must name the node's file."""
    pki = inside.prefix / "var/lib/kubelet/pki"
    pki.mkdir(parents=True)
    (pki / "kubelet-client-2026.pem").write_bytes(b"node pem")
    (pki / "kubelet-client-current.pem").symlink_to("/var/lib/kubelet/pki/kubelet-client-2026.pem")
    (inside.prefix / "etc").mkdir()
    (inside.prefix / "etc/leak").symlink_to(outside / "secret")  # the host path of a file outside the root
    assert inside.read("/var/lib/kubelet/pki/kubelet-client-current.pem") == b"node pem"
    assert inside.read("/etc/leak") is None  # resolved as <root>/<outside>/secret, which does not exist
    assert inside.host_path("/etc/leak") == inside.prefix / str(outside / "secret").lstrip("/")
    assert inside.readlink("/etc/leak") == str(outside / "secret")


def test_relative_symlinks_climbing_out_are_clamped_at_the_root(inside: NodeRoot, outside: Path) -> None:
    (inside.prefix / "etc").mkdir()
    (inside.prefix / "etc/up").symlink_to("../../../../../../../../" + str(outside).lstrip("/") + "/secret")
    assert inside.host_path("/etc/up") == inside.prefix / str(outside / "secret").lstrip("/")
    assert inside.read("/etc/up") is None


def test_symlink_loop_is_one_clear_error(inside: NodeRoot) -> None:
    (inside.prefix / "a").symlink_to("b")
    (inside.prefix / "b").symlink_to("/a")
    with pytest.raises(NodeFsError, match="loop"):
        inside.read("/a")
    assert inside.lstat("/a") is not None  # the link itself is still visible


def test_writes_through_symlinked_directories_stay_in_the_root(inside: NodeRoot, outside: Path) -> None:
    """G-S1/G-S5: etc/kubernetes/pki and the move-aside directory are absolute links, followed inside the root."""
    (inside.prefix / "data/pki").mkdir(parents=True)
    (inside.prefix / "data/aside").mkdir(parents=True)
    (inside.prefix / "etc/kubernetes").mkdir(parents=True)
    (inside.prefix / "etc/kubernetes/pki").symlink_to("/data/pki")
    (inside.prefix / "var/lib/kuberevive").mkdir(parents=True)
    (inside.prefix / "var/lib/kuberevive/backup").symlink_to("/data/aside")
    inside.write_all([art("/etc/kubernetes/pki/ca.key", b"k1")])
    (r,) = inside.write_all([art("/etc/kubernetes/pki/ca.key", b"k2")], force=True)
    assert (inside.prefix / "data/pki/ca.key").read_bytes() == b"k2"
    assert r.moved_aside_to is not None and inside.read(r.moved_aside_to) == b"k1"
    assert inside.host_path(r.moved_aside_to).is_relative_to(inside.prefix / "data/aside")


@pytest.mark.parametrize("link", ["/etc/kubernetes/pki", "/etc/kubernetes", "/var/lib/kuberevive/backup"])
def test_a_link_to_the_hosts_directory_is_refused_and_nothing_is_written(
    inside: NodeRoot, outside: Path, link: str
) -> None:
    """G-S1/G-S2/G-S5: a link whose target exists only on the rescue host is, inside the root, a dangling
    link: refused with one line; the host's directory is never written."""
    before = sorted(p.name for p in outside.iterdir())
    host_link = inside.prefix / link.lstrip("/")
    host_link.parent.mkdir(parents=True, exist_ok=True)
    host_link.symlink_to(outside)
    with pytest.raises(NodeFsError, match="does not exist on the node"):
        if link == "/var/lib/kuberevive/backup":
            inside.write_all([art("/etc/kubernetes/admin.conf", b"a")])
            inside.write_all([art("/etc/kubernetes/admin.conf", b"b")], force=True)
        else:
            inside.write_all([art("/etc/kubernetes/pki/ca.key", b"k")])
    assert sorted(p.name for p in outside.iterdir()) == before


def test_write_replaces_a_symlink_instead_of_following_it(inside: NodeRoot, outside: Path) -> None:
    (inside.prefix / "etc/kubernetes").mkdir(parents=True)
    (inside.prefix / "etc/kubernetes/admin.conf").symlink_to(outside / "secret")
    inside.write_all([art("/etc/kubernetes/admin.conf", b"conf")])
    assert (outside / "secret").read_bytes() == b"HOST-ONLY"
    assert not (inside.prefix / "etc/kubernetes/admin.conf").is_symlink()


@pytest.mark.parametrize("kind", ["fifo", "too-big"])
def test_read_never_hangs_nor_exhausts_memory(inside: NodeRoot, kind: str) -> None:
    """F7/F8: a FIFO is refused without blocking, a huge file by its size (nothing is read)."""
    import os

    target = inside.prefix / "etc/kubernetes/admin.conf"
    target.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(target)
    else:
        with target.open("wb") as fh:
            fh.truncate(64 << 20)
    with pytest.raises(NodeFsError) as err:
        inside.read("/etc/kubernetes/admin.conf", limit=1 << 20)
    assert "/etc/kubernetes/admin.conf" in err.value.message


def test_endless_device_on_the_real_root_is_refused() -> None:
    """On the node itself (root /) a link to /dev/zero reaches the device: refused, never read."""
    with pytest.raises(NodeFsError, match="not a regular file"):
        NodeRoot(Path("/")).read("/dev/zero")


def test_read_of_a_character_device_inside_the_root_is_refused(inside: NodeRoot) -> None:
    import os

    (inside.prefix / "dev").mkdir()
    os.mknod(inside.prefix / "dev/zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    (inside.prefix / "etc").mkdir()
    (inside.prefix / "etc/passwd").symlink_to("/dev/zero")
    with pytest.raises(NodeFsError, match="not a regular file"):
        inside.read("/etc/passwd")


def test_walk_and_read_tree_give_node_paths_and_skip_special_files(inside: NodeRoot, outside: Path) -> None:
    import os

    k = inside.prefix / "etc/kubernetes"
    (k / "pki").mkdir(parents=True)
    (k / "pki/ca.crt").write_bytes(b"ca")
    (k / "notes").symlink_to(outside / "secret")  # the host's file: never read
    (k / "same").symlink_to("/etc/kubernetes/pki/ca.crt")  # inside the root: read as that file
    (k / "outdir").symlink_to(outside)  # a symlinked directory: not descended
    os.mkfifo(k / "fifo")
    got = inside.read_tree("/etc/kubernetes")
    assert got == {
        PurePosixPath("/etc/kubernetes/pki/ca.crt"): b"ca",
        PurePosixPath("/etc/kubernetes/same"): b"ca",
    }
    assert PurePosixPath("/etc/kubernetes/fifo") in set(inside.walk("/etc/kubernetes"))


def test_a_directory_made_meanwhile_by_another_run_is_used_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two commands starting at once both see /var/lib/kuberevive missing; the one that loses the mkdir race uses
    the directory the other made (CI saw 'cannot open the node's lock: File exists'), and does not count it as its
    own (a rollback must not remove it)."""
    root = NodeRoot(tmp_path)
    real_mkdir = Path.mkdir
    raced: list[Path] = []

    def racing_mkdir(self: Path, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        if self.name == "kuberevive" and not raced:
            real_mkdir(self, mode)  # the other run wins
            raced.append(self)
        real_mkdir(self, mode, parents, exist_ok)

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    created: list[Path] = []
    root.atomic_write(PurePosixPath("/var/lib/kuberevive/recover/x"), b"x", 0o600, created)
    assert raced and (tmp_path / "var/lib/kuberevive/recover/x").read_bytes() == b"x"
    assert tmp_path / "var/lib/kuberevive" not in created
    assert tmp_path / "var/lib/kuberevive/recover" in created
    with root.lock("generate"):  # and the lock opens
        pass
