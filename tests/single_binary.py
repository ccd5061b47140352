"""The single executable (packaging/build-binary.sh) for tests: built once per source tree and cached.

The cache key is the sha256 of every file under src/ and packaging/ plus pyproject.toml, so a warm run reuses
the file and any change to the product rebuilds it. Two test workers asking at once build it once (flock).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _source_key() -> str:
    digest = hashlib.sha256()
    files = [REPO / "pyproject.toml"]
    for top in ("src", "packaging"):
        files += sorted(p for p in (REPO / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def single_binary() -> Path:
    """The path of dist-style ``kuberevive`` built from this checkout (building it if needed, a few minutes)."""
    cache = Path(os.environ.get("KUBEREVIVE_CACHE", "/var/cache/kuberevive")) / "single-binary"
    out = cache / _source_key()
    binary = out / "kuberevive"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.is_file():
            build = subprocess.run(
                ["bash", str(REPO / "packaging" / "build-binary.sh"), str(out)],
                capture_output=True,
                text=True,
                timeout=1200,
                check=False,
            )
            if build.returncode != 0 or not binary.is_file():
                raise AssertionError(
                    f"packaging/build-binary.sh failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
                )
    return binary
