#!/usr/bin/env bash
# Builds dist/kuberevive: one file for linux/amd64 that runs on a node without Python (PyInstaller --onefile:
# a small bootloader that unpacks the interpreter, the kuberevive package and its libraries to a private
# temporary directory and runs them). Needs python3 >= 3.11 with its shared library (pyenv and Debian have it)
# and the network to PyPI (or a pip cache); the versions bundled are pinned in packaging/requirements.txt.
# Prints the file's sha256. Usage: bash packaging/build-binary.sh [OUT_DIR]   (default: dist)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
work=build/binary
python=${PYTHON:-python3}
rm -rf "$work"
mkdir -p "$work" "$out"
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check --no-input -r packaging/requirements.txt
"$work/venv/bin/pip" install -q --disable-pip-version-check --no-input --no-deps .
# the same inputs give the same bundle: fixed hash seed, timestamps from the last commit
export PYTHONHASHSEED=0
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 315532800)
export SOURCE_DATE_EPOCH
"$work/venv/bin/pyinstaller" --onefile --name kuberevive --noconfirm --clean --log-level WARN \
  --distpath "$out" --workpath "$work/pyinstaller" --specpath "$work" \
  --collect-submodules kuberevive --collect-data kuberevive --collect-submodules asyncssh \
  packaging/entry.py
rm -rf "$work"
sha256sum "$out/kuberevive"
