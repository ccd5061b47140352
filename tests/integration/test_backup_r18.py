"""Issue 18, backups: no data loss, right advice, bounded reads. Real ``kuberevive`` processes on temporary roots.

Each test names the item of the brief (retention per node, ``--out``, completeness, identity fallbacks) or the
adversarial id (B-C6-*, B-V15, B-V16, B-V17, B-R8, B-C7, R-6, B-X11) it proves; each fails on the code before
the change (cross-node pruning, a silently replaced ``--out``, "complete and consistent" for a broken backup,
hangs, exit 70).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pyrage
import pytest

from kuberevive.core import backup as core
from kuberevive.io import backupfile, nodefacts
from tests.integration.test_backup_cli import CONFIGS, assert_one_line_error, kuberevive, make_node, tree

pytestmark = pytest.mark.integration

IDENTITY = pyrage.x25519.Identity.generate()
RECIPIENT = str(IDENTITY.to_public())
HANG_LIMIT = 120  # seconds: far above any honest run; a FIFO that blocks shows up as TimeoutExpired


@pytest.fixture
def idfile(tmp_path: Path) -> Path:
    p = tmp_path / "id.txt"
    p.write_text(str(IDENTITY) + "\n")
    p.chmod(0o600)
    return p


@pytest.fixture(scope="module")
def base_node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One node root (generate all + kubelet files) that tests copy, so only one generate runs."""
    return make_node(tmp_path_factory.mktemp("r18"), "node")


@pytest.fixture
def node(tmp_path: Path, base_node: Path) -> Path:
    root = tmp_path / "node"
    shutil.copytree(base_node, root, symlinks=True)
    return root


def run(*args: str, timeout: float = HANG_LIMIT, limit_as: int | None = None) -> subprocess.CompletedProcess[str]:
    """``kuberevive ARGS`` with a time limit (and an address-space limit, as the adversarial run used)."""

    def limit() -> None:
        if limit_as is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    env = {k: v for k, v in os.environ.items() if k != "KUBEREVIVE_PASSPHRASE"}
    return subprocess.run(
        [sys.executable, "-m", "kuberevive", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        preexec_fn=limit,
    )


def create(root: Path, out: str, *extra: str) -> dict[str, object]:
    r = run("backup", "create", "--root", str(root), "--out", out, "--recipient", RECIPIENT, "--json", *extra)
    assert r.returncode == 0, r.stderr
    result: dict[str, object] = json.loads(r.stdout)
    return result


# ------------------------------------------------------------------------- item 1: retention per node


def _named(node: str, stamp: str) -> str:
    return f"kuberevive-backup-{node}-{stamp}.age"


def test_item1_prune_keep_1_keeps_the_newest_of_each_of_three_nodes(tmp_path: Path, node: Path) -> None:
    """Backups of cp1, cp2 and cp3 in one directory; ``prune --keep 1`` keeps each node's newest (before: the
    newest of the whole directory, so cp2's only backup was deleted); foreign files are never touched."""
    bdir = tmp_path / "backups"
    bdir.mkdir()
    made = Path(str(create(node, f"{bdir}/")["file"]))
    assert made.name.startswith("kuberevive-backup-cp1-")
    data = made.read_bytes()
    made.unlink()
    stamps = {
        "cp1": ["20261201T000000Z", "20261202T000000Z", "20261203T000000Z"],
        "cp2": ["20261130T000000Z"],  # the oldest file of the directory: cp2's only backup
        "cp3": ["20261201T120000Z", "20261204T000000Z"],
    }
    for name, times in stamps.items():
        for t in times:
            (bdir / _named(name, t)).write_bytes(data)
    elsewhere = tmp_path / "elsewhere.age"
    elsewhere.write_bytes(data)
    foreign = {
        "notes.txt": b"operator notes\n",
        _named("cp9", "20200101T000000Z"): b"not an age file, only named like a backup\n",
        "kuberevive-backup-cp1.age": data,  # an age file without a time in its name (a --out FILE)
    }
    for name, content in foreign.items():
        (bdir / name).write_bytes(content)
    (bdir / _named("cp8", "20200101T000000Z")).symlink_to(elsewhere)  # a link is not a backup kuberevive wrote
    before = tree(tmp_path)

    dry = run("backup", "prune", str(bdir), "--keep", "1", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["dry_run"] is True
    assert sorted(Path(b["file"]).name for b in planned["kept"]) == sorted(
        [_named("cp1", "20261203T000000Z"), _named("cp2", "20261130T000000Z"), _named("cp3", "20261204T000000Z")]
    )
    assert len(planned["removed"]) == 3
    assert tree(tmp_path) == before  # --dry-run removes nothing

    pruned = run("backup", "prune", str(bdir), "--keep", "1", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["removed"] == planned["removed"]
    left = sorted(p.name for p in bdir.iterdir())
    assert left == sorted(
        [
            _named("cp1", "20261203T000000Z"),
            _named("cp2", "20261130T000000Z"),
            _named("cp3", "20261204T000000Z"),
            *foreign,
            _named("cp8", "20200101T000000Z"),
        ]
    )
    for name, content in foreign.items():
        assert (bdir / name).read_bytes() == content
    assert elsewhere.read_bytes() == data and (bdir / _named("cp8", "20200101T000000Z")).is_symlink()


def test_item1_create_keep_prunes_only_its_own_node(tmp_path: Path, node: Path) -> None:
    """``create --keep 1`` on cp1 leaves cp2's older backups alone (before: it trimmed the whole directory)."""
    bdir = tmp_path / "backups"
    bdir.mkdir()
    first = Path(str(create(node, f"{bdir}/")["file"]))
    data = first.read_bytes()
    (bdir / _named("cp2", "20200101T000000Z")).write_bytes(data)
    (bdir / _named("cp2", "20200102T000000Z")).write_bytes(data)
    old_cp1 = bdir / _named("cp1", "20200101T000000Z")
    old_cp1.write_bytes(data)
    first.rename(bdir / _named("cp1", "20200102T000000Z"))
    result = create(node, f"{bdir}/", "--keep", "1")
    assert sorted(Path(str(p)).name for p in result["pruned"]) == sorted(  # type: ignore[attr-defined]
        [_named("cp1", "20200101T000000Z"), _named("cp1", "20200102T000000Z")]
    )
    assert sorted(p.name for p in bdir.iterdir()) == sorted(
        [Path(str(result["file"])).name, _named("cp2", "20200101T000000Z"), _named("cp2", "20200102T000000Z")]
    )


# -------------------------------------------------------------------------------- item 2: --out


def test_item2_out_file_that_exists_is_refused_and_force_moves_it_aside(tmp_path: Path, node: Path) -> None:
    out = tmp_path / "b.age"
    create(node, str(out))
    old = out.read_bytes()
    before = tree(tmp_path)
    again = run("backup", "create", "--root", str(node), "--out", str(out), "--recipient", RECIPIENT)
    assert_one_line_error(again, str(out), "already exists", "--force")
    assert tree(tmp_path) == before  # the old backup is untouched (before: silently replaced, exit 0)

    forced = create(node, str(out), "--force")
    aside = Path(str(forced["moved_aside_to"]))
    assert aside.parent == tmp_path and aside.name.startswith("b.age.replaced-")
    assert aside.read_bytes() == old
    assert out.read_bytes() != old and out.read_bytes().startswith(b"age-encryption.org/v1\n")
    fifo = tmp_path / "fifo.age"  # whatever exists is refused, even a FIFO (never opened, so no hang)
    os.mkfifo(fifo)
    assert_one_line_error(
        run("backup", "create", "--root", str(node), "--out", str(fifo), "--recipient", RECIPIENT), "already exists"
    )
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_item2_out_without_slash_or_age_suffix_is_not_made_a_file(tmp_path: Path, node: Path) -> None:
    """``--out dir/backups`` (missing): refused, saying to add ``/`` (before: a file named backups was written).
    ``--out dir/backups/`` creates the directory 0700 and writes the backup into it."""
    target = tmp_path / "backups"
    r = run("backup", "create", "--root", str(node), "--out", str(target), "--recipient", RECIPIENT)
    assert_one_line_error(r, f"--out {target}/", ".age")
    assert not target.exists()
    made = Path(str(create(node, f"{target}/")["file"]))
    assert made.parent == target and target.is_dir() and stat.S_IMODE(target.stat().st_mode) == 0o700
    again = Path(str(create(node, str(target))["file"]))  # now an existing directory: still a directory
    assert again.parent == target and again.name.startswith("kuberevive-backup-")
    assert again != made and made.is_file()  # within the same second too: a new name, the first one kept


# -------------------------------------------------------------------------- item 3: completeness


def _verify(backup: Path, idfile: Path) -> subprocess.CompletedProcess[str]:
    return run("backup", "verify", str(backup), "--identity", str(idfile))


def test_item3_verify_names_each_gap_of_a_control_plane_backup(tmp_path: Path, node: Path, idfile: Path) -> None:
    """A backup without apiserver.key and scheduler.conf: create warns, verify lists both and exits 1 (before:
    "backup is complete and consistent", exit 0)."""
    (node / "etc/kubernetes/pki/apiserver.key").unlink()
    (node / "etc/kubernetes/scheduler.conf").unlink()
    out = tmp_path / "b.age"
    r = run("backup", "create", "--root", str(node), "--out", str(out), "--recipient", RECIPIENT)
    assert r.returncode == 0, r.stderr
    warning = next(line for line in r.stderr.splitlines() if "incomplete" in line)
    assert "control plane" in warning and "apiserver.key" in warning and "scheduler.conf" in warning
    v = _verify(out, idfile)
    assert_one_line_error(v, "incomplete", "2 file(s)", "apiserver.key", "scheduler.conf")
    assert "MISSING  /etc/kubernetes/pki/apiserver.key" in v.stdout
    assert "MISSING  /etc/kubernetes/scheduler.conf" in v.stdout
    assert "complete and consistent" not in v.stdout + v.stderr
    j = run("backup", "verify", str(out), "--identity", str(idfile), "--json")
    assert j.returncode == 1
    report = json.loads(j.stdout)
    assert report["ok"] is True and report["complete"] is False and report["role"] == "control plane"
    assert report["missing"] == ["/etc/kubernetes/pki/apiserver.key", "/etc/kubernetes/scheduler.conf"]
    # the consistent part still restores (gaps are not integrity problems)
    restored = tmp_path / "restored"
    restored.mkdir()
    rr = run("backup", "restore", str(out), "--root", str(restored), "--identity", str(idfile), "--ca-cert-hash",
             report["signed_by"])  # fmt: skip
    assert rr.returncode == 0, rr.stderr
    assert (restored / "etc/kubernetes/pki/ca.key").exists()


def test_item3_complete_control_plane_and_worker_backups(tmp_path: Path, node: Path, idfile: Path) -> None:
    out = tmp_path / "cp.age"
    create(node, str(out))
    v = _verify(out, idfile)
    assert v.returncode == 0, v.stderr
    assert "backup is complete (for a control plane node) and consistent" in v.stdout
    worker = tmp_path / "worker"
    for rel in ("etc/kubernetes/kubelet.conf", "etc/kubernetes/pki/ca.crt", "var/lib/kubelet/config.yaml"):
        (worker / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(node / rel, worker / rel)
    wout = tmp_path / "worker.age"
    r = run("backup", "create", "--root", str(worker), "--out", str(wout), "--passphrase-file", str(_pass(tmp_path)))
    assert r.returncode == 0, r.stderr
    assert "incomplete" not in r.stderr
    wv = run("backup", "verify", str(wout), "--passphrase-file", str(_pass(tmp_path)), "--json")
    assert wv.returncode == 0, wv.stderr
    assert json.loads(wv.stdout)["role"] == "worker"
    (worker / "var/lib/kubelet/config.yaml").unlink()
    wout2 = tmp_path / "worker2.age"
    r2 = run("backup", "create", "--root", str(worker), "--out", str(wout2), "--passphrase-file", str(_pass(tmp_path)))
    assert r2.returncode == 0 and "a worker node has are missing: /var/lib/kubelet/config.yaml" in r2.stderr
    assert_one_line_error(
        run("backup", "verify", str(wout2), "--passphrase-file", str(_pass(tmp_path))), "/var/lib/kubelet/config.yaml"
    )
    # a worker's backup holds no CA keys: recover --from-backup refuses it in one line
    empty = tmp_path / "empty"
    empty.mkdir()
    rec = run("recover", "--root", str(empty), "--from-backup", str(wout), "--passphrase-file", str(_pass(tmp_path)))
    assert_one_line_error(rec, "a backup of a worker node", "control-plane")
    assert tree(empty) == {}


def _pass(tmp_path: Path) -> Path:
    p = tmp_path / "pass.txt"
    if not p.exists():
        p.write_text("r18 passphrase\n")
        p.chmod(0o600)
    return p


# ------------------------------------------------------- item 4: FIFOs and devices (F7, F8 of the adversarial run)


@pytest.mark.parametrize(
    ("test_id", "rel"),
    [("B-C6-admin.conf", "etc/kubernetes/admin.conf"), ("B-C6-config.yaml", "var/lib/kubelet/config.yaml")],
)
def test_item4_create_refuses_a_fifo_it_must_back_up(tmp_path: Path, node: Path, test_id: str, rel: str) -> None:
    """B-C6-admin.conf, B-C6-config.yaml: a FIFO where a file is backed up is one clear error (a backup must be
    exact), never a hang; nothing is written."""
    (node / rel).unlink()
    os.mkfifo(node / rel)
    out = tmp_path / "b.age"
    r = run("backup", "create", "--root", str(node), "--out", str(out), "--recipient", RECIPIENT)
    assert_one_line_error(r, f"cannot back up /{rel}", "FIFO", "move")
    assert not out.exists(), test_id


def test_item4_B_C6_hostname_fifo_is_not_waited_on(tmp_path: Path, node: Path) -> None:
    """B-C6-hostname: a FIFO at /etc/hostname under the root counts as no hostname (it is not backed up); the node
    name comes from the node's own files, so create succeeds without waiting."""
    (node / "etc/hostname").parent.mkdir(exist_ok=True)
    os.mkfifo(node / "etc/hostname")
    result = create(node, str(tmp_path / "b.age"))
    assert result["node"]["node_name"] == "cp1"  # type: ignore[index]


def test_item4_B_C7_kubelet_config_on_a_device_is_one_error(tmp_path: Path, node: Path) -> None:
    """B-C7: var/lib/kubelet/config.yaml a symlink to /dev/zero (a real character device inside the root, since
    links resolve inside it) is one error, read no further (before: read until MemoryError, exit 70)."""
    dev = node / "dev"
    dev.mkdir()
    os.mknod(dev / "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    cfg = node / "var/lib/kubelet/config.yaml"
    cfg.unlink()
    cfg.symlink_to("/dev/zero")
    r = run("backup", "create", "--root", str(node), "--out", str(tmp_path / "b.age"), "--recipient", RECIPIENT,
            limit_as=2 << 30)  # fmt: skip
    assert_one_line_error(r, "cannot back up /var/lib/kubelet/config.yaml", "device")


def test_item4_B_V15_B_V16_verify_of_a_fifo_or_dev_zero(tmp_path: Path, idfile: Path) -> None:
    """B-V15: verify of a FIFO; B-V16: verify of a symlink to /dev/zero. One line each, no hang, no exit 70."""
    fifo = tmp_path / "fifo.age"
    os.mkfifo(fifo)
    assert_one_line_error(_verify(fifo, idfile), "cannot read the backup", "FIFO")
    zero = tmp_path / "devzero.age"
    zero.symlink_to("/dev/zero")
    r = run("backup", "verify", str(zero), "--identity", str(idfile), limit_as=2 << 30)
    assert_one_line_error(r, "cannot read the backup", "device")


def test_item4_B_R8_restore_with_a_fifo_on_the_node(tmp_path: Path, node: Path, idfile: Path) -> None:
    """B-R8: restore onto a node with a FIFO at admin.conf: one line, exit 1, nothing written, no hang."""
    out = tmp_path / "b.age"
    result = create(node, str(out))
    (node / "etc/kubernetes/admin.conf").unlink()
    os.mkfifo(node / "etc/kubernetes/admin.conf")
    (node / "etc/kubernetes/pki/ca.key").unlink()
    before = tree(node)
    r = run("backup", "restore", str(out), "--root", str(node), "--identity", str(idfile))
    assert_one_line_error(r, "/etc/kubernetes/admin.conf", "FIFO")
    assert tree(node) == before
    assert result["signed"] is True


# ------------------------------------------------------------------ item 4: crafted archives (B-V17, R-6, B-X11)


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _honest_members(node: Path, tmp: Path) -> list[tuple[str, bytes]]:
    """The members of an honest backup of ``node``, made by ``backup create`` and decrypted here."""
    made = Path(str(create(node, str(tmp / "honest.age"))["file"]))
    plaintext = pyrage.decrypt(made.read_bytes(), [IDENTITY])
    out = []
    with tarfile.open(fileobj=io.BytesIO(plaintext), mode="r:gz") as tar:
        for info in tar:
            fh = tar.extractfile(info)
            assert fh is not None
            out.append((info.name, fh.read()))
    return out


def _gzip_bomb(node: Path, tmp: Path, extra_bytes: int) -> bytes:
    """An honest archive followed by one unlisted member of ``extra_bytes`` zeros, as a multi-member gzip
    stream whose zero part is one 64 MiB gzip member repeated (a few MB for gigabytes of plaintext)."""
    head = io.BytesIO()
    with tarfile.open(fileobj=head, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in _honest_members(node, tmp):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    honest = head.getvalue()
    honest = honest[: len(honest) - 2 * 512]  # drop the end-of-archive blocks
    while honest.endswith(b"\0" * 512):  # and the record padding
        honest = honest[:-512]
    chunk = 64 << 20
    assert extra_bytes % chunk == 0
    zeros = gzip.compress(b"\0" * chunk, compresslevel=9)
    parts = [gzip.compress(honest + _tar_header("files/etc/kubernetes/zeros", extra_bytes))]
    parts += [zeros] * (extra_bytes // chunk)
    parts.append(gzip.compress(b"\0" * 1024))
    return b"".join(parts)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory, base_node: Path) -> Path:
    """B-V17's backup: an honest archive with an unlisted 4 GiB member of zeros, encrypted to RECIPIENT."""
    tmp = tmp_path_factory.mktemp("bomb")
    path = tmp / "bomb.age"
    path.write_bytes(pyrage.encrypt(_gzip_bomb(base_node, tmp, 4 << 30), [IDENTITY.to_public()]))
    assert path.stat().st_size < 32 << 20
    return path


def test_item4_B_V17_gzip_bomb_is_refused_with_bounded_memory(bomb: Path, idfile: Path) -> None:
    """B-V17: verify of a backup whose archive holds an unlisted 4 GiB member, under a 2 GiB address-space limit:
    refused from the member's header (before: everything decompressed into memory, MemoryError, exit 70)."""
    r = run("backup", "verify", str(bomb), "--identity", str(idfile), limit_as=2 << 30)
    assert_one_line_error(r, "files/etc/kubernetes/zeros is not listed in the manifest")


def test_item4_R_6_gzip_bomb_through_recover_from_backup(tmp_path: Path, bomb: Path, idfile: Path) -> None:
    """R-6: the same bomb through ``recover --from-backup`` (plan mode): one line, exit 1, nothing written."""
    root = tmp_path / "root"
    root.mkdir()
    r = run("recover", "--root", str(root), "--from-backup", str(bomb), "--identity", str(idfile),
            limit_as=2 << 30)  # fmt: skip
    assert_one_line_error(r, "is not listed in the manifest")
    assert tree(root) == {}


def _encrypted_archive(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return bytes(pyrage.encrypt(buf.getvalue(), [IDENTITY.to_public()]))


@pytest.mark.parametrize("nesting", ["[" * 100000, '{"a":' * 100000])
def test_item4_B_X11_deeply_nested_manifest(tmp_path: Path, node: Path, idfile: Path, nesting: str) -> None:
    """B-X11: a manifest of 100000 nested arrays/objects: verify and restore exit 1 with one line (before:
    RecursionError, exit 70); nothing is written inside or outside the root."""
    backup = tmp_path / "nested.age"
    backup.write_bytes(_encrypted_archive([(core.MANIFEST_NAME, nesting.encode())]))
    assert_one_line_error(_verify(backup, idfile), "is not valid JSON")
    before = tree(tmp_path)
    r = run("backup", "restore", str(backup), "--root", str(node), "--identity", str(idfile))
    assert_one_line_error(r, "is not valid JSON")
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------- item 5: identity fallbacks


def test_item5_backup_create_warns_when_the_node_name_is_this_machines_hostname(tmp_path: Path, node: Path) -> None:
    """Under --root with no kubelet certificate, --hostname-override, etcd member name or /etc/hostname, the
    node name falls back to this machine's hostname: a warning names it and --node-name (before: silent)."""
    (node / "etc/kubernetes/manifests/etcd.yaml").unlink()
    r = run("backup", "create", "--root", str(node), "--out", str(tmp_path / "b.age"), "--recipient", RECIPIENT,
            "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    host = os.uname().nodename.lower()
    warning = next(line for line in r.stderr.splitlines() if line.startswith("warning: the node name"))
    assert f"'{host}'" in warning and "this machine's hostname" in warning and "--node-name" in warning
    assert json.loads(r.stdout)["node"]["node_name"] == host
    named = create(node, str(tmp_path / "c.age"), "--node-name", "cp7")
    assert named["node"]["node_name"] == "cp7" and named["warnings"] == [  # type: ignore[index]
        "this backup is incomplete: 1 file(s) a control plane node has are missing: /etc/kubernetes/manifests/etcd.yaml"
    ]
    bad = run("backup", "create", "--root", str(node), "--out", f"{tmp_path}/", "--recipient", RECIPIENT,
              "--node-name", "../cp1")  # fmt: skip
    assert_one_line_error(bad, "is not a Kubernetes node name")
    (node / "etc/hostname").write_text("node-under-root\n")
    own = create(node, str(tmp_path / "d.age"))
    assert own["node"]["node_name"] == "node-under-root"  # type: ignore[index]
    assert not any("node name" in w for w in own["warnings"])  # type: ignore[attr-defined]


def test_item5_generate_under_root_warns_about_this_machines_identity(tmp_path: Path) -> None:
    """generate under --root with a configuration that names no node: the name is this machine's hostname, which
    is warned about with the setting that overrides it (before: silent)."""
    config = tmp_path / "noname.yaml"
    config.write_text(
        "\n".join(
            line
            for line in (CONFIGS / "defaults.yaml").read_text().splitlines()
            if line.strip() not in ("name: cp1", "nodeRegistration:", "localAPIEndpoint:")
            and not line.strip().startswith("advertiseAddress:")
        )
        + "\n"
    )
    root = tmp_path / "root"
    root.mkdir()
    r = kuberevive("generate", "certs", "--config", str(config), "--root", str(root), "--dry-run")
    assert r.returncode == 0, r.stderr
    host = os.uname().nodename.lower()
    assert f"warning: the node name '{host}' is this machine's hostname" in r.stderr
    assert "nodeRegistration.name" in r.stderr
    address = nodefacts.default_address()
    if address is None:
        pytest.skip("this machine has no default route, so no address to fall back to")
    assert f"warning: the advertise address {address} is this machine's default-route address" in r.stderr
    assert "localAPIEndpoint.advertiseAddress" in r.stderr
    named = tmp_path / "named.yaml"  # both set in the configuration: nothing to warn about
    named.write_text((CONFIGS / "defaults.yaml").read_text())
    quiet = kuberevive("generate", "certs", "--config", str(named), "--root", str(root), "--dry-run")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr


def test_item1_backups_in_the_same_second_get_a_sequence_number_and_sort_after(tmp_path: Path) -> None:
    when = datetime(2026, 12, 1, tzinfo=UTC)
    first = backupfile.free_backup_name(tmp_path, "cp1", when)
    assert first.name == "kuberevive-backup-cp1-20261201T000000Z.age"
    first.write_bytes(b"age-encryption.org/v1\n-> X25519 a\n")
    second = backupfile.free_backup_name(tmp_path, "cp1", when)
    assert second.name == "kuberevive-backup-cp1-20261201T000000Z.1.age"
    second.write_bytes(first.read_bytes())
    third = backupfile.free_backup_name(tmp_path, "cp1", when)
    assert third.name.endswith("Z.2.age")
    third.write_bytes(first.read_bytes())
    assert backupfile.name_node(third.name) == "cp1"
    assert [b.path for b in backupfile.list_backups(tmp_path)] == [first, second, third]
    pruned = backupfile.prune_backups(tmp_path, 1)
    assert [b.path for b in pruned.kept] == [third] and not first.exists() and not second.exists()


def test_item1_backup_names_never_hold_a_path() -> None:
    """The node name goes into the file name that list and prune group by: never a path, whatever the name."""
    when = datetime(2026, 12, 1, tzinfo=UTC)
    assert backupfile.backup_name("../../etc/cp1", when) == "kuberevive-backup-.._.._etc_cp1-20261201T000000Z.age"
    assert backupfile.name_node(backupfile.backup_name("cp-1.example.com", when)) == "cp-1.example.com"
    assert backupfile.name_node("kuberevive-backup-cp1.age") is None
