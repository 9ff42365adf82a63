"""The packages are layered app -> worker -> training -> model: no package imports one above it (not even inside
a function), and no module-level import cycle exists between modules."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORDER = ["model", "training", "worker", "app"]  # each may import the ones before it


def imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Modules of our packages that ``path`` imports (``from x import y`` may name the module ``x.y``)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in ORDER}


def modules() -> dict[str, Path]:
    found = {}
    for pkg in ORDER:
        for f in (REPO / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = f
    return found


def test_no_package_imports_one_above_it():
    bad = []
    for name, path in modules().items():
        here = ORDER.index(name.split(".")[0])
        for m in imports(path, top_level_only=False):
            if ORDER.index(m.split(".")[0]) > here:
                bad.append(f"{name} imports {m}")
    assert not bad, bad


def test_no_module_level_import_cycles():
    mods = modules()
    graph = {n: {m for m in imports(p, top_level_only=True) if m in mods and m != n} for n, p in mods.items()}
    cycles = []
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(" -> ".join([*path[path.index(m) :], m]))
            elif m not in state:
                visit(m, [*path, m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, cycles
