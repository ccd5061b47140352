"""One list of file and command operations run through any :class:`~kuberevive.io.host.Host`, and what came of
them, with the host's own paths and timestamps replaced by placeholders so two hosts' outcomes compare equal.

tests/lab/test_remote_host_lab.py runs it through :class:`~kuberevive.io.remotehost.SshHost` on worker1 and,
inside worker1 (``python -m tests.lab.remote_host_scenario BASE TMPFS NOW``, umask 077), through
:class:`~kuberevive.io.host.LocalHost` over :class:`~kuberevive.io.noderoot.NodeRoot` at ``/`` (the single local
writer).
"""

from __future__ import annotations

import json
import re
import sys
import threading
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from kuberevive.errors import NodeFsError, TransportTimeout
from kuberevive.io.host import Host, LocalHost
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model import paths

SECRET = b"-----BEGIN PRIVATE KEY-----\nnot-on-any-command-line\n-----END PRIVATE KEY-----\n"
#: A directory kubeadm makes 0700 (noderoot.DIR_MODES) that a worker does not have.
KUBEADM_DIR = paths.KUBERNETES_TMP_DIR
#: A uid and gid no node account has, to see that a move keeps the owner.
OWNER = "1234:2345"


def _unprefixed(exc: Exception) -> str:
    """The message without the host name SshHost puts in front."""
    return re.sub(r"^[\w.-]+: ", "", str(exc))


def _error(fn: Any) -> str:
    """What calling ``fn`` raised (type and message without the host-name prefix), waiting at most 30 s: a call
    still running then (a read blocked on a FIFO) is reported as such."""
    out: list[str] = []

    def call() -> None:
        try:
            out.append(f"returned {fn()!r}")
        except Exception as exc:
            out.append(f"{type(exc).__name__}: {_unprefixed(exc)}")

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(30)  # a generous limit, polled by join: a FIFO read that blocks never ends by itself
    return out[0] if out else "still running after 30 s"


def scenario(host: Host, base: PurePosixPath, tmpfs: PurePosixPath, now: datetime) -> dict[str, Any]:
    """Run every operation through ``host`` (``base`` a fresh directory's path on the node's root file system,
    ``tmpfs`` one on another file system, both absent) and return what came of each, JSON-ready."""

    def stat(p: PurePosixPath | None) -> str:
        r = host.run(["stat", "-c", "%a %u:%g %F", str(p)])
        return r.text.strip() if r.ok else "absent"

    def shown(p: PurePosixPath | str | None) -> str | None:
        if p is None:
            return None
        text = re.sub(rf"{paths.BACKUP_DIR}/[0-9]{{8}}T[0-9]{{6}}\.[0-9]{{6}}Z", "<backup>", str(p))
        return text.replace(str(base), "<base>").replace(str(tmpfs), "<tmpfs>")

    def read(p: PurePosixPath | None) -> str | None:
        data = host.read(p) if p is not None else None
        return None if data is None else data.decode(errors="replace")

    obs: dict[str, Any] = {}
    key, cert = base / "pki" / "new.key", base / "pki" / "new.crt"
    obs["write a key into a missing parent"] = [shown(host.write(key, SECRET, 0o600)), stat(key), stat(key.parent)]
    obs["read it back"] = host.read(key) == SECRET
    obs["write a certificate"] = [shown(host.write(cert, b"CERT\n", 0o644)), stat(cert)]
    obs["no temporary file left"] = host.run(["ls", "-A", str(key.parent)]).text.split()

    aside = host.write(key, b"OTHER\n", 0o600)
    obs["replace the key"] = [shown(aside), stat(aside), aside is not None and host.read(aside) == SECRET, read(key)]
    obs["same content and mode again"] = shown(host.write(key, b"OTHER\n", 0o600))
    aside = host.write(key, b"OTHER\n", 0o640)
    obs["same content, other mode"] = [shown(aside), stat(aside), stat(key)]

    in_kubeadm_dir = KUBEADM_DIR / f"hosttest-{base.name}"
    obs["write into a missing kubeadm directory"] = [
        shown(host.write(in_kubeadm_dir, b"x", 0o600)),
        stat(KUBEADM_DIR),
        stat(in_kubeadm_dir),
    ]

    link = base / "kubelet-client-current.pem"
    host.replace_symlink(link, "kubelet-client-a.pem")
    host.replace_symlink(link, "/var/lib/kubelet/pki/kubelet-client-b.pem")
    obs["replace a symlink"] = [host.readlink(link), stat(link), host.readlink(cert)]
    host.replace_symlink(base / "via", "pki/new.crt")
    aside = host.write(base / "via", b"NEW\n", 0o600)
    obs["write over a symlink moves the link aside"] = [
        shown(aside),
        host.readlink(aside) if aside else None,
        stat(base / "via"),
        read(cert),
    ]

    owned = tmpfs / "owned.conf"
    host.write(owned, b"OWNED\n", 0o640)
    host.run(["chown", OWNER, str(owned)])
    devices = host.run(["stat", "-c", "%d", str(tmpfs), str(paths.STATE_DIR)]).text.split()
    obs["the two file systems differ"] = len(set(devices)) == 2
    moved = host.move_aside(owned, now)
    obs["move aside across file systems"] = [shown(moved), stat(moved), read(moved), host.exists(owned)]
    tmpfs_link = tmpfs / "link"
    host.replace_symlink(tmpfs_link, "/etc/hostname")
    moved = host.move_aside(tmpfs_link, now)
    obs["move a symlink aside across file systems"] = [
        shown(moved),
        host.readlink(moved) if moved else None,
        host.readlink(tmpfs_link),
    ]
    same_fs = base / "owned-here.conf"
    host.write(same_fs, b"HERE\n", 0o604)
    host.run(["chown", OWNER, str(same_fs)])
    moved = host.move_aside(same_fs, now)
    obs["move aside on the same file system"] = [shown(moved), stat(moved), read(moved), host.exists(same_fs)]
    pem_a, pem_b = base / "kubelet-client-a.pem", base / "kubelet-client-b.pem"
    current = base / "kubelet-client-now.pem"
    host.write(current, b"A FILE WHERE THE LINK BELONGS\n", 0o600)
    first = host.repoint_symlink(current, str(pem_a), now)
    again = host.repoint_symlink(current, str(pem_a), now)
    obs["repoint a symlink over a file, then again"] = [
        shown(first),
        read(first),
        shown(again),
        shown(host.readlink(current)),
    ]
    moved = host.repoint_symlink(current, str(pem_b))
    obs["repoint it elsewhere"] = [
        shown(moved),
        shown(host.readlink(moved) if moved else None),
        shown(host.readlink(current)),
    ]

    data_dir, kept = base / "etcd", base / "etcd.kuberevive-old"
    host.write(data_dir / "member" / "snap" / "db", b"DB\n", 0o600)
    host.rename(data_dir, kept)
    obs["rename a directory"] = [host.exists(data_dir), read(kept / "member" / "snap" / "db"), stat(kept)]
    host.write(data_dir / "member", b"NEW\n", 0o600)
    obs["rename over something that exists"] = shown(_error(lambda: host.rename(kept, data_dir)))
    obs["rename what is not there"] = shown(_error(lambda: host.rename(base / "absent", kept)))
    obs["rename across file systems"] = shown(_error(lambda: host.rename(kept, tmpfs / "etcd")))
    obs["after the refused renames"] = [host.exists(kept), host.exists(tmpfs / "etcd")]

    with host.lock("scenario"):
        obs["the node's lock, taken twice"] = shown(
            re.sub(r"pid [0-9]+", "pid <pid>", _error(lambda: host.lock("second", NodeFsError).__enter__()))
        )
    with host.lock("third"):
        obs["the node's lock after it was left"] = "taken"

    obs["move aside what is not there"] = shown(host.move_aside(base / "absent", now))
    obs["read what is not there"] = [read(base / "absent"), host.exists(base / "absent")]

    fifo = base / "fifo"
    host.run(["mkfifo", str(fifo)])
    obs["read a FIFO"] = shown(_error(lambda: host.read(fifo)))
    obs["read a directory"] = shown(_error(lambda: host.read(key.parent)))
    obs["read below a file"] = shown(_error(lambda: host.read(key / "x")))
    obs["write over a FIFO"] = shown(_error(lambda: host.write(fifo, b"x", 0o600)))

    try:
        host.run(["sleep", "30"], timeout=1)
        obs["a command over its time limit"] = "finished"
    except TransportTimeout as exc:
        obs["a command over its time limit"] = _unprefixed(exc)
    obs["exit code is a result"] = host.run(["sh", "-c", "echo out; echo err >&2; exit 3"]).__dict__ == {
        "exit_code": 3,
        "stdout": b"out\n",
        "stderr": b"err\n",
    }
    return obs


if __name__ == "__main__":
    # inside a lab node: BASE TMPFS NOW (ISO) -> the outcome through NodeRoot, as JSON on stdout
    out = scenario(
        LocalHost(NodeRoot(Path("/")), live=True, name="local"),
        PurePosixPath(sys.argv[1]),
        PurePosixPath(sys.argv[2]),
        datetime.fromisoformat(sys.argv[3]),
    )
    print(json.dumps(out))
