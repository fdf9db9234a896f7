"""The rooms' contracts and the import graph.

The contracts (pyproject's [tool.importlinter], checked statically by `lint-imports`): core imports
neither torch nor Qt (nor the engine, the GUI or the CLI), the engine never imports Qt (nor the GUI or the
CLI), the GUI never imports the engine or torch. The same is checked at run time for core and the GUI
(an import made by a library at run time is invisible to a static graph). And no module of lora_studio
takes part in an import circle: every import counts, lazy ones in functions and `TYPE_CHECKING` ones too,
because a circle hides which module owns a concept even where Python happens to resolve it.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lora_studio

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(lora_studio.__file__).resolve().parent


# --- the contracts ----------------------------------------------------------------------------------

def test_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "lint-imports is missing: install the test extra (pip install -e \".[test]\")"
    done = subprocess.run([lint, "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout, done.stdout


def _imported_after(module: str) -> set[str]:
    code = f"import sys, {module}, pkgutil, importlib\n" \
        f"pkg = sys.modules['{module}']\n" \
        "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n" \
        "    importlib.import_module(m.name)\n" \
        "print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_core_imports_neither_torch_nor_qt():
    mods = _imported_after("lora_studio.core")
    assert "torch" not in mods
    assert not any(m.startswith("PySide6") for m in mods)
    assert not any(m.startswith("lora_studio.engine") or m.startswith("lora_studio.gui") for m in mods)


@pytest.mark.parametrize("forbidden", ["torch", "diffusers", "transformers", "lora_studio.engine"])
def test_gui_never_imports_the_engine_side(forbidden):
    mods = _imported_after("lora_studio.gui")
    assert forbidden not in mods


def test_cli_help_imports_nothing_heavy():
    code = "import sys; from lora_studio import cli; print('torch' in sys.modules, 'PySide6' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- no import circles ------------------------------------------------------------------------------

def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, read from the source with `ast` (nothing is imported).

    `from a.b import c` imports the module a.b.c when there is one, else the module a.b; relative imports
    are resolved against the importing module; imports of other packages are left out."""
    files = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = here[: len(here) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in files and t != name)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of modules (Tarjan), each as a path that returns to its
    start: ["a", "b", "a"]."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        # Recursive: the package has a few hundred modules, far below Python's recursion limit.
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle_in(graph, set(g)) for g in sorted(groups)]


def _circle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """The shortest circle through the group's first module (breadth-first inside the group)."""
    start = min(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in came_from:
                    came_from[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{sorted(group)} is not strongly connected")


def test_no_import_circles_in_lora_studio():
    circles = find_cycles(import_graph(PACKAGE))
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_circle_finder_names_a_circle(tmp_path):
    # The test above passes only if the walker sees circles: show it one of each kind of import.
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")  # lazy and relative
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n")
    (pkg / "d.py").write_text("import pkg.a\nimport os\n")  # imports into the circle, not part of it
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.d"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
