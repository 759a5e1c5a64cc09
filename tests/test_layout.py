"""The package layout: one subpackage per stage, imports running one way between them, and no
two modules importing each other (directly or round a loop).

`python tests/test_layout.py` prints the import edges between subpackages.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "regmix"

# Lowest first: a subpackage may import only those before it (and the top-level helpers).
ORDER = ("data", "search", "training", "evaluation", "workflow", "observe", "report", "cli")
TOP_LEVEL = ("errors", "files", "parallel")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The regmix modules a file imports anywhere in it (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def module_graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    known = set(files)
    graph = {name: imported_modules(path, known) - {name} for name, path in files.items()}
    # `from regmix.search import runs` names the module, not its package's __init__.
    for edges in graph.values():
        edges -= {name for name in list(edges) if any(e.startswith(name + ".") for e in edges)}
    return graph


def subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or parts[1] in ORDER else "top"


def package_edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], int]:
    edges: dict[tuple[str, str], int] = defaultdict(int)
    for module, imports in graph.items():
        for other in imports:
            pair = (subpackage(module), subpackage(other))
            if pair[0] != pair[1] and other != "regmix":
                edges[pair] += 1
    return dict(edges)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_round_a_loop():
    assert cycles(module_graph()) == []


def test_imports_run_one_way_between_subpackages():
    rank = {name: i for i, name in enumerate(ORDER)} | {"top": -1}
    upward = [f"{a} imports {b}" for (a, b) in package_edges(module_graph()) if rank[b] >= rank[a]]
    assert upward == []


def test_every_module_lives_in_a_stage_subpackage():
    loose = sorted(
        path.stem for path in PACKAGE.glob("*.py") if path.stem not in (*TOP_LEVEL, "__init__")
    )
    assert loose == []
    for name in ORDER:
        assert ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))


if __name__ == "__main__":
    graph = module_graph()
    for (a, b), count in sorted(package_edges(graph).items()):
        print(f"{a:>9} -> {b:<9} {count:3d} import(s)")
    loops = cycles(graph)
    print("cycles:", loops or "none")
    sys.exit(1 if loops else 0)
