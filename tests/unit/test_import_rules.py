"""Import rules over the whole package, read with ``ast`` (nothing is imported): no import cycle between
modules under src/kuberevive (imports under ``TYPE_CHECKING`` and inside functions count too), and no module
uses another module's ``_private`` name (``from m import _x``, ``m._x``) or a ``_private`` module outside its
own package."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import kuberevive

PACKAGE = Path(kuberevive.__file__).parent


def _modules(base: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in sorted(base.rglob("*.py")):
        parts = list(path.relative_to(base.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


class _Imports:
    def __init__(self, modules: dict[str, Path]) -> None:
        self.modules = modules
        self.edges: dict[str, set[str]] = {m: set() for m in modules}
        self.private_uses: list[str] = []

    def _target(self, name: str) -> str | None:
        while name and name not in self.modules:
            name = name.rpartition(".")[0]
        return name or None

    def _private_module(self, importer: str, path: Path, target: str) -> None:
        for i, part in enumerate(target.split(".")):
            owner = ".".join(target.split(".")[:i])
            if _private(part) and not (importer + ".").startswith(owner + "."):
                self.private_uses.append(f"{path}: imports the private module {target}")

    def scan(self, module: str, path: Path) -> None:
        tree = ast.parse(path.read_text(), str(path))
        aliases: dict[str, str] = {}  # local name -> kuberevive module
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    target = self._target(a.name) if a.name.startswith("kuberevive") else None
                    if target:
                        self._edge(module, path, target)
                        aliases[a.asname or a.name] = target
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                if node.level:
                    pkg = _package(module, path).split(".")
                    base = ".".join([*pkg[: len(pkg) - node.level + 1], node.module])
                if not base.startswith("kuberevive"):
                    continue
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    if sub in self.modules:
                        self._edge(module, path, sub)
                        aliases[a.asname or a.name] = sub
                        continue
                    target = self._target(base)
                    if target:
                        self._edge(module, path, target)
                        if _private(a.name) and target != module:
                            self.private_uses.append(f"{path}:{node.lineno}: from {target} import {a.name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and _private(node.attr):
                target = aliases.get(node.value.id)
                if target and target != module:
                    self.private_uses.append(f"{path}:{node.lineno}: {node.value.id}.{node.attr} ({target})")

    def _edge(self, module: str, path: Path, target: str) -> None:
        self._private_module(module, path, target)
        if target != module:
            self.edges[module].add(target)


def _scan(modules: dict[str, Path]) -> _Imports:
    imports = _Imports(modules)
    for module, path in modules.items():
        imports.scan(module, path)
    return imports


def _cycles(edges: dict[str, set[str]]) -> Iterator[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(v: str) -> Iterator[list[str]]:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                yield from visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                yield sorted(comp)

    for v in sorted(edges):
        if v not in index:
            yield from visit(v)


def test_no_import_cycle_under_src() -> None:
    imports = _scan(_modules())
    assert len(imports.edges) > 80  # the whole package was read
    assert list(_cycles(imports.edges)) == []


def test_no_module_uses_another_modules_private_names() -> None:
    assert _scan(_modules()).private_uses == []


def test_the_checks_can_fail(tmp_path: Path) -> None:
    pkg = tmp_path / "kuberevive"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "_helpers.py").write_text("def x() -> None: ...\n")
    (pkg / "core" / "a.py").write_text("from kuberevive.core import _helpers\nfrom kuberevive.core.b import f\n")
    (pkg / "core" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from kuberevive.core.a import g\ndef f() -> None: ...\n"
    )
    (pkg / "run.py").write_text(
        "from kuberevive.core import b\nfrom kuberevive.core.b import _hidden\nfrom kuberevive.core._helpers import x\n"
        "b._secret()\n"
    )
    imports = _scan(_modules(pkg))
    assert list(_cycles(imports.edges)) == [["kuberevive.core.a", "kuberevive.core.b"]]
    found = "\n".join(imports.private_uses)
    assert "from kuberevive.core.b import _hidden" in found and "b._secret (kuberevive.core.b)" in found
    assert "run.py: imports the private module kuberevive.core._helpers" in found
    assert "a.py: imports the private module" not in found  # core/a.py may use core/_helpers.py


#: (layer, layers it may never import): the pure core and model import no I/O, and nothing below the executors
#: (run/) or the command line (cli/) imports them.
LAYER_RULES = {
    "kuberevive.core": ("kuberevive.io", "kuberevive.run", "kuberevive.cli"),
    "kuberevive.model": ("kuberevive.io", "kuberevive.run", "kuberevive.cli"),
    "kuberevive.io": ("kuberevive.run", "kuberevive.cli"),
}


def _layer_breaks(imports: _Imports) -> list[str]:
    found = []
    for module, targets in sorted(imports.edges.items()):
        for layer, banned in LAYER_RULES.items():
            if module == layer or module.startswith(layer + "."):
                found += [f"{module} imports {t}" for t in sorted(targets) if any(t.startswith(b) for b in banned)]
    return found


def test_io_core_and_model_never_import_the_layers_above_them() -> None:
    assert _layer_breaks(_scan(_modules())) == []


def test_the_layer_check_can_fail(tmp_path: Path) -> None:
    pkg = tmp_path / "kuberevive"
    for sub in ("io", "run", "core"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "run" / "waiting.py").write_text("def wait_for() -> None: ...\n")
    (pkg / "io" / "etcdrestore.py").write_text("from kuberevive.run.waiting import wait_for\n")
    (pkg / "core" / "pure.py").write_text("import kuberevive.io.etcdrestore\n")
    assert _layer_breaks(_scan(_modules(pkg))) == [
        "kuberevive.core.pure imports kuberevive.io.etcdrestore",
        "kuberevive.io.etcdrestore imports kuberevive.run.waiting",
    ]


def test_the_product_never_imports_a_dev_only_package() -> None:
    """jsonschema (docs/json.md) and the test tools are dev extras: the single executable does not carry them."""
    dev_only = {"jsonschema", "pytest"}
    found = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            found += [f"{module}: {n}" for n in names if n.split(".")[0] in dev_only]
    assert found == []
