"""A node reached over SSH, as a :class:`~kuberevive.io.host.Host` with the guarantees of
:class:`~kuberevive.io.noderoot.NodeRoot` (see :mod:`kuberevive.io.host`).

Every operation is one small POSIX ``sh`` script run through the node's transport
(:class:`~kuberevive.io.transport.SshTransport`; any :class:`~kuberevive.io.transport.Transport` works, tests run
the same scripts through :class:`~kuberevive.io.transport.LocalTransport`). Paths and modes are positional
arguments of the script (never pasted into its text), file contents go over stdin, so no secret is ever on a
command line. The node needs ``sh`` and GNU coreutils (``stat``, ``dd``, ``mkdir``, ``chmod``, ``mv``, ``ln``,
``cp``, ``rm``, ``sync``, ``readlink``), ``systemctl`` and ``crictl``.

* :meth:`SshHost.read`: ``test -f`` first, then ``dd iflag=nonblock`` (a FIFO swapped in after the test still
  cannot block), never more than the size limit; a directory, FIFO, device or a file over the limit is a
  :class:`~kuberevive.errors.NodeFsError`, as with NodeRoot.
* :meth:`SshHost.write`: missing parents made with kubeadm's modes (:data:`~kuberevive.io.noderoot.DIR_MODES`);
  the temporary file ``.<name>.kuberevive-tmp-<pid>`` is created under ``umask 077`` and given its final mode
  before any byte is written (whatever the login's umask), then fsync-ed, renamed over the target and the
  directory fsync-ed. An existing file with other content or mode (or a dangling symlink) is moved aside first,
  and put back if the write then fails.
* :meth:`SshHost.move_aside`: a hard link to the backup path, then the original removed (a rename that keeps the
  inode); across file systems, where a link is refused, ``cp -a`` (mode, owner, times; a symlink stays a
  symlink), fsync, and only then the original removed. An empty directory (what a container runtime leaves
  where a file belongs) is moved with ``mv``. A backup path that exists already is never overwritten.
* :meth:`SshHost.replace_symlink`: a new link renamed over the old one, the directory fsync-ed.
* :meth:`SshHost.rename`: ``mv`` only when the new name is absent and on the source's file system (so it is one
  ``rename``, never a copy), both directories fsync-ed.
* :meth:`SshHost.lock`: ``flock -n`` on the node's lock file by a command held open for the whole run
  (:meth:`~kuberevive.io.transport.Transport.hold`): it ends, releasing the lock, when the run leaves the lock
  or dies (the SSH connection closes). The node also needs ``flock`` (util-linux).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import PurePosixPath

from kuberevive.errors import KubereviveError, NodeFsError, TransportError
from kuberevive.io.host import STOP_GRACE_SECONDS, Container, crictl_stop, parse_crictl_ps
from kuberevive.io.noderoot import (
    MAX_READ_BYTES,
    backup_stamp,
    lock_held,
    missing_parents_modes,
    normalise,
)
from kuberevive.io.transport import DEFAULT_TIMEOUT, HELD, Result, Transport
from kuberevive.model import paths

#: Time limit of one file operation on the node (a command's own limit is the caller's).
FILE_OP_TIMEOUT = 60.0
#: Time limit of ``systemctl restart`` and ``crictl ps``.
UNIT_TIMEOUT = 90.0
CRICTL_TIMEOUT = 30.0

# Exit codes the scripts use to say what they found (well away from coreutils' 1 and timeout's 124/137).
_ABSENT = 16
_PARENT_IS_FILE = 17
_IS_DIR = 18
_NOT_REGULAR = 19
_TOO_BIG = 20
_DANGLING_PARENT = 21
_ASIDE_EXISTS = 22
_DANGLING = 23
_OTHER_FS = 24
_LOCKED = 25
_IS_LINK = 26
_UNCHANGED = 27

#: Creates the missing parents given as "mode dir" pairs ($@), outermost first, up to a lone "-" (what follows it
#: is another list); a dangling symlink is refused.
_MKPARENTS = f"""
mkparents() {{
  while [ $# -gt 1 ] && [ "$1" != - ]; do
    if [ ! -e "$2" ]; then
      if [ -L "$2" ]; then printf '%s' "$2 -> $(readlink -- "$2")"; exit {_DANGLING_PARENT}; fi
      if mkdir -m "$1" -- "$2"; then chmod "$1" -- "$2" || exit 1
      elif [ ! -d "$2" ]; then exit 1; fi  # else another run made it meanwhile
    fi
    shift 2
  done
}}
"""

# $1 path, $2 size limit. Prints the mode (octal) on the first line, then the bytes.
_READ = f"""
p=$1 l=$2
if [ ! -e "$p" ]; then
  d=$p
  while d=${{d%/*}} && [ -n "$d" ]; do  # the parents of an absolute, normalised path, without a process each
    if [ -e "$d" ] && [ ! -d "$d" ]; then exit {_PARENT_IS_FILE}; fi
  done
  [ -L "$p" ] && exit {_DANGLING}
  exit {_ABSENT}
fi
[ -d "$p" ] && exit {_IS_DIR}
if [ ! -f "$p" ]; then stat -L -c %F -- "$p"; exit {_NOT_REGULAR}; fi
s=$(stat -L -c '%s %a' -- "$p") || exit 1
if [ "${{s% *}}" -gt "$l" ]; then printf '%s' "${{s% *}}"; exit {_TOO_BIG}; fi
printf '%s\n' "${{s#* }}"
exec dd if="$p" iflag=nonblock,fullblock bs=65536 count=$((l / 65536 + 1)) status=none
"""

# $1 size limit, then paths: for each, what _READ prints, base64 on one line, then its exit code on the next line.
_READ_MANY = (
    "read_one() (\n"
    + _READ
    + """)
l=$1; shift
exec 4>&1
for p in "$@"; do
  rc=$( { { read_one "$p" "$l"; echo $? >&3; } | base64 -w 0 >&4; } 3>&1 )
  printf '\\n%s\\n' "$rc"
done
"""
)

# $1 path, $2 the mode or the link's target, then the parents as mode/dir pairs: what writing a new file or link
# next to $1 and renaming it over $1 needs; fail removes the temporary file, exiting with the failed status.
_BESIDE = (
    _MKPARENTS
    + """
p=$1 arg=$2; shift 2
mkparents "$@"
d=$(dirname -- "$p"); t="$d/.$(basename -- "$p").kuberevive-tmp-$$"
fail() { rc=$?; rm -f -- "$t"; exit $rc; }
"""
)

# After the checks of the target $p: its parents made (the mode/dir pairs up to "-"), "$@" left with the backup
# path's parents, $d and the temporary name $t beside $p. Then (_SWAP) what is at $p (a file, a symlink, an empty
# directory where a link goes) gets a second name at the backup path $a (a hard link, a symlink staying a symlink;
# across file systems a durable copy; a directory renamed), "aside" printed, and $t renamed over $p: the path never
# lacks its file. The EXIT trap a script sets removes $t, and $a when $made, if it stops before that.
_BESIDE_TEMP = """
mkparents "$@"
while [ $# -gt 0 ] && [ "$1" != - ]; do shift; done
[ $# -gt 0 ] && shift
d=${p%/*}; d=${d:-/}; t="$d/.${p##*/}.kuberevive-tmp-$$"  # no dirname/basename process: $p is normalised
made=
"""
_SWAP = f"""
if [ -e "$p" ] || [ -L "$p" ]; then
  if [ -e "$a" ] || [ -L "$a" ]; then exit {_ASIDE_EXISTS}; fi
  mkparents "$@"
  if [ -d "$p" ] && [ ! -L "$p" ]; then
    mv -T -- "$p" "$a" || exit
  else
    made=1
    if ! ln -P -T -- "$p" "$a" 2>/dev/null; then
      cp -a -T -- "$p" "$a" && {{ [ -L "$a" ] || sync -- "$a"; }} || exit
    fi
  fi
  sync -- "${{a%/*}}" || exit
  printf 'aside\\n'
fi
mv -f -T -- "$t" "$p" || exit
trap - EXIT
exec sync -- "$d"
"""
_TRAP = """trap 'rm -f -- "$t"; [ -z "$made" ] || rm -f -- "$a"' EXIT\n"""

# $1 path, $2 mode, $3 the backup path for what is there now, then the path's parents as mode/dir pairs, "-", the
# backup path's parents. Content on stdin. One command for the whole write: what is there with the same bytes and
# mode is left alone (exit _UNCHANGED); else the new file is made complete beside it first, then _SWAP: a failure
# removes what this write made (the temporary file, the backup name), leaving the old file where it was.
_WRITE = (
    _MKPARENTS
    + f"""
p=$1 arg=$2 a=$3; shift 3
if [ -e "$p" ]; then
  [ -d "$p" ] && exit {_IS_DIR}
  if [ ! -f "$p" ]; then stat -L -c %F -- "$p"; exit {_NOT_REGULAR}; fi
elif [ ! -L "$p" ]; then
  d=$p
  while d=${{d%/*}} && [ -n "$d" ]; do
    if [ -e "$d" ] && [ ! -d "$d" ]; then exit {_PARENT_IS_FILE}; fi
  done
fi
"""
    + _BESIDE_TEMP
    + """umask 077
set -C
: > "$t" || exit 1
set +C
"""
    + _TRAP
    + f"""chmod "$arg" -- "$t" && cat >> "$t" || exit
if [ -f "$p" ] && [ "$(stat -L -c %a -- "$p")" = "$arg" ] && cmp -s -- "$t" "$p"; then exit {_UNCHANGED}; fi
sync -- "$t" || exit
"""
    + _SWAP
)

_SYMLINK = (
    _BESIDE
    + """
rm -f -- "$t"
ln -s -- "$arg" "$t" && mv -f -T -- "$t" "$p" || fail
exec sync -- "$d"
"""
)

# $1 path, $2 the link's target, $3 the backup path, then the path's parents as mode/dir pairs, "-", the backup
# path's parents: Host.repoint_symlink in one command. A link to the target already: nothing (exit _UNCHANGED).
# Else the new link is made beside the path, then _SWAP.
_REPOINT = (
    _MKPARENTS
    + f"""
p=$1 arg=$2 a=$3; shift 3
if [ -L "$p" ] && [ "$(readlink -- "$p")" = "$arg" ]; then exit {_UNCHANGED}; fi
"""
    + _BESIDE_TEMP
    + """rm -f -- "$t"
ln -s -- "$arg" "$t" || exit
"""
    + _TRAP
    + _SWAP
)

# $1 source, $2 backup path, then the backup path's parents as mode/dir pairs.
_MOVE_ASIDE = (
    _MKPARENTS
    + f"""
s=$1 a=$2; shift 2
[ -e "$s" ] || [ -L "$s" ] || exit {_ABSENT}
mkparents "$@"
if [ -e "$a" ] || [ -L "$a" ]; then exit {_ASIDE_EXISTS}; fi
if [ -d "$s" ] && [ ! -L "$s" ]; then
  mv -T -- "$s" "$a" || exit 1
elif ln -P -T -- "$s" "$a" 2>/dev/null; then
  rm -f -- "$s" || exit 1
else
  # another file system: copy (mode, owner, times; a symlink as a symlink), make it durable, then remove
  cp -a -T -- "$s" "$a" && {{ [ -L "$a" ] || sync -- "$a"; }} || {{ rc=$?; rm -f -- "$a"; exit $rc; }}
  rm -f -- "$s" || exit 1
fi
sync -- "$(dirname -- "$a")" && exec sync -- "$(dirname -- "$s")"
"""
)


# $1 source, $2 new name, then the new name's parents as mode/dir pairs.
_RENAME = (
    _MKPARENTS
    + f"""
s=$1 n=$2; shift 2
[ -e "$s" ] || [ -L "$s" ] || exit {_ABSENT}
if [ -e "$n" ] || [ -L "$n" ]; then exit {_ASIDE_EXISTS}; fi
mkparents "$@"
[ "$(stat -c %d -- "$s")" = "$(stat -c %d -- "$(dirname -- "$n")")" ] || exit {_OTHER_FS}
mv -T -- "$s" "$n" || exit 1
sync -- "$(dirname -- "$n")" && exec sync -- "$(dirname -- "$s")"
"""
)

# $1 the lock file, $2 the command, then its parents as mode/dir pairs. Holds flock on fd 9 while cat reads stdin.
_LOCK = (
    _MKPARENTS
    + f"""
l=$1 c=$2; shift 2
mkparents "$@"
[ -L "$l" ] && exit {_IS_LINK}
umask 077
exec 9>>"$l" || exit 1
if ! flock -n 9; then dd if="$l" bs=128 count=1 status=none; exit {_LOCKED}; fi
printf '%s %s\\n' "$$" "$c" > "$l" || exit 1  # what noderoot.lock_record writes
printf '{HELD.decode().strip()}\n'
exec cat > /dev/null
"""
)


# Many files in one command (each SSH round trip costs a login): the arguments are, per file, the path, its mode,
# its size, its backup path and the count of its parents' "mode dir" pairs followed by them; the contents follow
# each other on stdin (dd reads exactly the size). A file with the same bytes and mode is left as it is; another
# file (or an empty directory) there is moved to its backup path first (a hard link, else a copy), then the new
# file, written beside it under umask 077 with its final mode and fsync-ed, is renamed over it. One line per file
# on stdout: "same PATH", or "wrote PATH" after "aside PATH BACKUP".
_WRITE_MANY = f"""
while [ $# -gt 0 ]; do
  p=$1 m=$2 n=$3 a=$4 k=$5; shift 5
  while [ "$k" -gt 0 ]; do
    if [ ! -e "$2" ]; then
      if [ -L "$2" ]; then printf '%s' "$2 -> $(readlink -- "$2")"; exit {_DANGLING_PARENT}; fi
      if mkdir -m "$1" -- "$2"; then chmod "$1" -- "$2" || exit 1; elif [ ! -d "$2" ]; then exit 1; fi
    fi
    shift 2; k=$((k - 1))
  done
  d=$(dirname -- "$p"); t="$d/.$(basename -- "$p").kuberevive-tmp-$$"
  fail() {{ rc=$?; rm -f -- "$t"; exit $rc; }}
  rm -f -- "$t"
  (umask 077; set -C; : > "$t") || exit 1
  chmod "$m" -- "$t" || fail
  if [ "$n" -gt 0 ]; then dd of="$t" bs="$n" count=1 iflag=fullblock status=none || fail; fi
  [ "$(stat -c %s -- "$t")" = "$n" ] || fail
  if [ -f "$p" ] && [ ! -L "$p" ] && [ "$(stat -c %a -- "$p")" = "$m" ] && cmp -s -- "$t" "$p"; then
    rm -f -- "$t"; echo "same $p"; continue
  fi
  if [ -e "$p" ] || [ -L "$p" ]; then
    (umask 077; mkdir -p -- "$(dirname -- "$a")") || fail
    if [ -e "$a" ] || [ -L "$a" ]; then rm -f -- "$t"; exit {_ASIDE_EXISTS}; fi
    if [ -d "$p" ] && [ ! -L "$p" ]; then mv -T -- "$p" "$a" || fail
    elif ! ln -P -T -- "$p" "$a" 2>/dev/null; then
      cp -a -T -- "$p" "$a" && {{ [ -L "$a" ] || sync -- "$a"; }} || fail
    fi
    sync -- "$(dirname -- "$a")"
    echo "aside $p $a"
  fi
  sync -- "$t" && mv -f -T -- "$t" "$p" || fail
  sync -- "$d" || exit 1
  echo "wrote $p"
done
"""
WRITE_MANY_TIMEOUT = 180.0


def _parents(node_path: PurePosixPath) -> list[str]:
    """The parents of ``node_path`` as the ``mode dir`` arguments of ``mkparents``."""
    return [arg for d, mode in missing_parents_modes(node_path) for arg in (f"{mode:o}", str(d))]


def _why(r: Result) -> str:
    """What a failed command said, on one line."""
    return " ".join((r.stderr or r.stdout).decode(errors="replace").split())[:300] or f"exit code {r.exit_code}"


class SshHost:
    """Another node, through its transport (usually an :class:`~kuberevive.io.transport.SshTransport`)."""

    def __init__(
        self,
        transport: Transport,
        name: str | None = None,
        backup_dir: PurePosixPath = paths.BACKUP_DIR,
        lock_file: PurePosixPath = paths.NODE_LOCK,
    ) -> None:
        self.transport = transport
        self.name = name or transport.name
        #: Where :meth:`move_aside` puts files and which file :meth:`lock` locks (temporary ones in tests).
        self.backup_dir = backup_dir
        self.lock_file = lock_file

    @property
    def live(self) -> bool:
        return True

    def _sh(self, script: str, *args: str, input: bytes | None = None) -> Result:
        return self.transport.run(["sh", "-c", script, "sh", *args], input=input, timeout=FILE_OP_TIMEOUT)

    def _fail(self, what: str, r: Result) -> NodeFsError:
        if r.exit_code == _DANGLING_PARENT:
            where, _, target = r.stdout.decode(errors="replace").partition(" -> ")
            return NodeFsError(
                f"{self.name}: {where} is a symlink to {target}, which does not exist on the node; nothing was written",
                "create the directory it points to (or replace the link with a directory), then run again",
            )
        return NodeFsError(f"{self.name}: cannot {what}: {_why(r)}", "check the node's files and free space")

    # -- reading -------------------------------------------------------------------------

    def _read(self, node_path: PurePosixPath, limit: int = MAX_READ_BYTES) -> tuple[bytes, int] | bool:
        """The bytes and mode of a regular file; else True for a dangling symlink, False for nothing at all."""
        path = normalise(node_path)
        return self._decode(path, self._sh(_READ, str(path), str(limit)), limit)

    def _decode(self, path: PurePosixPath, r: Result, limit: int) -> tuple[bytes, int] | bool:
        """What :data:`_READ` said about ``path``, as :meth:`_read` returns it."""
        if r.exit_code in (_ABSENT, _DANGLING):
            return r.exit_code == _DANGLING
        if r.exit_code == _IS_DIR:
            raise NodeFsError(f"{self.name}: {path} is a directory, expected a file", "move it away and run again")
        if r.exit_code == _PARENT_IS_FILE:
            raise NodeFsError(
                f"{self.name}: a parent of {path} is a file, expected a directory", "move that file away and run again"
            )
        if r.exit_code == _NOT_REGULAR:
            kind = r.stdout.decode(errors="replace").strip()
            kind = {"fifo": "FIFO", "socket": "socket"}.get(kind, "device" if "special" in kind else kind)
            raise NodeFsError(f"{self.name}: {path} is not a regular file (a {kind})", "move it away and run again")
        if r.exit_code == _TOO_BIG:
            raise NodeFsError(
                f"{self.name}: {path} is {r.stdout.decode().strip()} bytes, larger than any file kuberevive reads "
                f"({limit})",
                "move it away and run again",
            )
        head, sep, data = r.stdout.partition(b"\n")
        if not r.ok or not sep:
            raise NodeFsError(f"{self.name}: cannot read {path}: {_why(r)}", "check the file, then run again")
        if len(data) > limit:
            raise NodeFsError(f"{self.name}: {path} grew past {limit} bytes while read", "move it away and run again")
        return data, int(head, 8)

    def read(self, node_path: PurePosixPath, limit: int = MAX_READ_BYTES) -> bytes | None:
        got = self._read(node_path, limit)
        return got[0] if isinstance(got, tuple) else None

    def read_many(
        self, node_paths: Sequence[PurePosixPath], limit: int = MAX_READ_BYTES
    ) -> dict[PurePosixPath, bytes | None]:
        """:meth:`read` of each path, in one command on the node (one SSH round trip instead of one per file)."""
        wanted = [normalise(p) for p in node_paths]
        if not wanted:
            return {}
        r = self._sh(_READ_MANY, str(limit), *map(str, wanted))
        lines = r.stdout.split(b"\n")
        if not r.ok or len(lines) < 2 * len(wanted):
            raise NodeFsError(
                f"{self.name}: cannot read {', '.join(map(str, wanted))}: {_why(r)}", "check the files, then run again"
            )
        out: dict[PurePosixPath, bytes | None] = {}
        for i, (path, original) in enumerate(zip(wanted, node_paths, strict=True)):
            encoded, code = lines[2 * i], lines[2 * i + 1]
            try:
                one = Result(int(code), base64.b64decode(encoded, validate=True), r.stderr)
            except (ValueError, binascii.Error) as exc:
                raise NodeFsError(f"{self.name}: cannot read {path}: {exc}", "check the file, then run again") from exc
            got = self._decode(path, one, limit)
            out[original] = got[0] if isinstance(got, tuple) else None
        return out

    def exists(self, node_path: PurePosixPath) -> bool:
        return self._sh('test -e "$1"', str(normalise(node_path))).ok

    def readlink(self, node_path: PurePosixPath) -> str | None:
        r = self._sh('test -L "$1" && readlink -- "$1"', str(normalise(node_path)))
        return r.stdout.decode(errors="surrogateescape").removesuffix("\n") if r.ok else None

    # -- writing -------------------------------------------------------------------------

    def write(
        self, node_path: PurePosixPath, content: bytes, mode: int, now: datetime | None = None
    ) -> PurePosixPath | None:
        """One command (:data:`_WRITE`): same bytes and mode, nothing done; else what is there is moved aside to
        the backup directory and the new file put in its place, or, on failure, the old file stays."""
        path = normalise(node_path)
        aside = self.backup_dir / backup_stamp(now) / path.relative_to("/")
        r = self._sh(_WRITE, str(path), f"{mode:o}", str(aside), *_parents(path), "-", *_parents(aside), input=content)
        if r.exit_code == _UNCHANGED:
            return None
        if r.ok:
            return aside if r.stdout.startswith(b"aside\n") else None
        if r.exit_code in (_IS_DIR, _NOT_REGULAR, _PARENT_IS_FILE):
            self._decode(path, r, MAX_READ_BYTES)  # raises what reading it would
        if r.exit_code == _ASIDE_EXISTS:
            raise NodeFsError(
                f"{self.name}: cannot move {path} to {aside}: that exists already; nothing was written", "run again"
            )
        error = self._fail(f"write {path}", r)
        error.message += "; what was there is unchanged"
        raise error

    def write_many(
        self, files: Sequence[tuple[PurePosixPath, bytes, int]], now: datetime | None = None
    ) -> list[PurePosixPath | None]:
        """:meth:`write` of many files in ONE command (see ``_WRITE_MANY``); for each file the path its old
        version was moved aside to (None: there was none, or it had the same bytes and mode)."""
        if not files:
            return []
        stamp = backup_stamp(now)
        args: list[str] = []
        for node_path, content, mode in files:
            path = normalise(node_path)
            parents = _parents(path)
            aside = self.backup_dir / stamp / path.relative_to("/")
            args += [str(path), f"{mode:o}", str(len(content)), str(aside), str(len(parents) // 2), *parents]
        r = self.transport.run(
            ["sh", "-c", _WRITE_MANY, "sh", *args],
            input=b"".join(content for _p, content, _m in files),
            timeout=WRITE_MANY_TIMEOUT,
        )
        if not r.ok:
            raise self._fail(f"write {len(files)} file(s) under {normalise(files[0][0]).parent}", r)
        moved: dict[str, PurePosixPath] = {}
        for line in r.stdout.decode(errors="replace").splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "aside":
                orig, _, to = rest.partition(" ")
                moved[orig] = PurePosixPath(to)
        return [moved.get(str(normalise(p))) for p, _c, _m in files]

    def move_aside(self, node_path: PurePosixPath, now: datetime | None = None) -> PurePosixPath | None:
        path = normalise(node_path)
        aside = self.backup_dir / backup_stamp(now) / path.relative_to("/")
        return aside if self._move(path, aside) else None

    def _move(self, path: PurePosixPath, to: PurePosixPath) -> bool:
        """Move ``path`` to the new name ``to`` (see the module docstring); False when nothing is at ``path``."""
        r = self._sh(_MOVE_ASIDE, str(path), str(to), *_parents(to))
        if r.exit_code == _ABSENT:
            return False
        if r.exit_code == _ASIDE_EXISTS:
            raise NodeFsError(
                f"{self.name}: cannot move {path} to {to}: that exists already; nothing was moved", "run again"
            )
        if not r.ok:
            raise self._fail(f"move {path} to {to}", r)
        return True

    def replace_symlink(self, node_path: PurePosixPath, target: str) -> None:
        path = normalise(node_path)
        r = self._sh(_SYMLINK, str(path), target, *_parents(path))
        if not r.ok:
            raise self._fail(f"point {path} at {target}", r)

    def repoint_symlink(
        self, node_path: PurePosixPath, target: str, now: datetime | None = None
    ) -> PurePosixPath | None:
        """One command (:data:`_REPOINT`), with :func:`~kuberevive.io.host.repoint_symlink`'s outcome."""
        path = normalise(node_path)
        aside = self.backup_dir / backup_stamp(now) / path.relative_to("/")
        r = self._sh(_REPOINT, str(path), target, str(aside), *_parents(path), "-", *_parents(aside))
        if r.exit_code == _UNCHANGED:
            return None
        if r.ok:
            return aside if r.stdout.startswith(b"aside\n") else None
        if r.exit_code == _ASIDE_EXISTS:
            raise NodeFsError(
                f"{self.name}: cannot move {path} to {aside}: that exists already; nothing was changed", "run again"
            )
        error = self._fail(f"point {path} at {target}", r)
        error.message += "; what was there is unchanged"
        raise error

    def rename(self, node_path: PurePosixPath, new_path: PurePosixPath) -> None:
        path, new = normalise(node_path), normalise(new_path)
        r = self._sh(_RENAME, str(path), str(new), *_parents(new))
        what = f"{self.name}: cannot rename {path} to {new}"
        if r.exit_code == _ABSENT:
            raise NodeFsError(f"{what}: {path} does not exist", "run again")
        if r.exit_code == _ASIDE_EXISTS:
            raise NodeFsError(f"{what}: that exists already; nothing was moved", f"move {new} away, then run again")
        if r.exit_code == _OTHER_FS:
            raise NodeFsError(
                f"{what}: Invalid cross-device link; nothing was moved",
                "check the node's file systems (both must be on the same one), then run again",
            )
        if not r.ok:
            raise self._fail(f"rename {path} to {new}", r)

    @contextlib.contextmanager
    def lock(self, command: str, error: type[KubereviveError] = NodeFsError) -> Iterator[None]:
        lock = self.lock_file
        with self.transport.hold(["sh", "-c", _LOCK, "sh", str(lock), command, *_parents(lock)], FILE_OP_TIMEOUT) as r:
            if r is not None:
                if r.exit_code == _LOCKED:
                    exc = lock_held(error, r.stdout, command, lock)
                    exc.message = f"{self.name}: {exc.message}"
                    raise exc
                raise error(
                    f"{self.name}: cannot open the node's lock {lock}: {_why(r)}; nothing was written",
                    f"make {lock.parent} a writable directory on the node, then run again",
                )
            yield

    # -- processes -------------------------------------------------------------------------

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = DEFAULT_TIMEOUT) -> Result:
        return self.transport.run(argv, input=input, timeout=timeout)

    def restart_unit(self, unit: str) -> None:
        self._systemctl("restart", unit)

    def stop_unit(self, unit: str) -> None:
        self._systemctl("stop", unit)

    def _systemctl(self, action: str, unit: str) -> None:
        r = self.transport.run(["systemctl", action, unit], timeout=UNIT_TIMEOUT)
        if not r.ok:
            raise TransportError(
                f"{self.name}: 'systemctl {action} {unit}' failed: {_why(r)}",
                f"look at 'systemctl status {unit}' and 'journalctl -u {unit}' on the node, then run again",
            )

    def containers(self, name: str | None = None) -> list[Container]:
        r = self.transport.run(["crictl", "ps", "-o", "json"], timeout=CRICTL_TIMEOUT)
        if not r.ok:
            raise TransportError(
                f"{self.name}: crictl cannot list containers: {_why(r)}",
                "check that the container runtime runs and /etc/crictl.yaml points at it",
            )
        try:
            return parse_crictl_ps(r.stdout, name)
        except ValueError as exc:
            raise TransportError(f"{self.name}: {exc}", "check the crictl version on the node") from exc

    def stop_containers(self, name: str, cri_socket: str | None = None, grace: int = STOP_GRACE_SECONDS) -> int:
        """Stop the running containers called ``name`` gracefully (the kubelet starts them again from their static
        Pod, reading their files anew), as :meth:`LocalHost.stop_containers` does; how many were stopped."""
        ids = [c.id for c in self.containers(name)]
        for cid in ids:
            r = self.transport.run(crictl_stop(cri_socket, cid, grace), timeout=max(UNIT_TIMEOUT, grace + 30))
            if not r.ok:
                raise TransportError(
                    f"{self.name}: 'crictl stop {cid}' ({name}) failed: {_why(r)}",
                    "check the container runtime on the node, then run again",
                )
        return len(ids)
