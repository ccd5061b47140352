"""The lab's image cache is shared by every lab instance: one lab's prune must not remove what another still uses."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kuberevive.lab.config import LabConfig
from kuberevive.lab.images import UNUSED_FOR, prune_cache


def _archive(cache: Path, name: str, age: float) -> Path:
    d = cache / name
    d.mkdir(parents=True)
    (d / "image.tar").write_bytes(b"x")
    then = time.time() - age
    os.utime(d, (then, then))
    return d / "image.tar"


def test_prune_keeps_this_labs_archives_and_those_another_lab_used_recently(tmp_path: Path) -> None:
    cfg = LabConfig(cache_dir=tmp_path)
    mine = _archive(cfg.image_cache, "mine", age=UNUSED_FOR * 2)
    other_lab = _archive(cfg.image_cache, "other-version", age=3600)  # e.g. a concurrent lab of another version
    stale = _archive(cfg.image_cache, "stale", age=UNUSED_FOR + 60)
    (cfg.image_cache / "pause-bin").mkdir()
    os.utime(cfg.image_cache / "pause-bin", (0, 0))

    prune_cache(cfg, [mine])

    assert mine.exists() and other_lab.exists() and (cfg.image_cache / "pause-bin").is_dir()
    assert not stale.parent.exists()
