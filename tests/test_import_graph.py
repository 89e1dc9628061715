"""No import circles among the project's modules (include/ and plugins/trading_grid/).

The graph is read from the source with ``ast``, so nothing is imported. Every import counts, at any
depth: module level, inside functions, under ``if TYPE_CHECKING:``, in ``try``, and
``importlib.import_module("...")`` with a literal name. An edge goes to the module Python would
execute:

- ``from include.x import y`` is an edge to ``include.x.y`` when that is a module, else to ``include.x``;
- importing ``include.x.y`` also executes the package ``include.x`` (its ``__init__.py``), so that is an
  edge too, except when ``include.x`` contains the importing module: a module's own packages are
  always imported before the module runs, so a sibling import ``from include.x.errors import ...``
  inside ``include.x`` adds no edge to ``include.x``;
- a package's ``__init__.py`` importing its own submodules is an edge from the package to them;
- a module importing itself (or names from itself) is no circle and is left out.

A circle is a strongly connected component of more than one module (Tarjan); the failure names one
path around each, with the file and line of every import on it.
"""
from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# (directory that is the top-level package, its import name)
PROJECT_PACKAGES = ((REPO / "include", "include"), (REPO / "plugins" / "trading_grid", "trading_grid"))


@dataclass(frozen=True)
class ImportSite:
    """Where one module imports another (the first such line is kept per pair)."""

    path: Path
    line: int

    def describe(self, root: Path) -> str:
        try:
            shown = self.path.relative_to(root)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}"


Graph = dict[str, dict[str, ImportSite]]


def project_modules(packages: tuple[tuple[Path, str], ...]) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py under each package directory."""
    modules: dict[str, Path] = {}
    for directory, name in packages:
        for path in sorted(directory.rglob("*.py")):
            parts = [name, *path.relative_to(directory).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _package_of(module: str, path: Path) -> str:
    """The package a module's relative imports start from."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _absolute(node: ast.ImportFrom, module: str, path: Path) -> str:
    if not node.level:
        return node.module or ""
    base = _package_of(module, path).split(".")
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join([*base, *([node.module] if node.module else [])])


def _literal_import_module(node: ast.Call) -> str | None:
    """The name in ``importlib.import_module("a.b")`` / ``__import__("a.b")`` when it is a literal."""
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if called not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def imported_names(tree: ast.AST, module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every dotted name the module imports (``from a import b`` gives ``a.b``), with its line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, path)
            for alias in node.names:
                # a.b when b is a module, else a: _executed_modules keeps the longest known prefix
                yield (source if alias.name == "*" else f"{source}.{alias.name}"), node.lineno
        elif isinstance(node, ast.Call):
            name = _literal_import_module(node)
            if name:
                yield name, node.lineno


def _executed_modules(name: str, importer: str, modules: dict[str, Path]) -> list[str]:
    """The project modules that importing ``name`` from ``importer`` can execute."""
    parts = name.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    known = [p for p in prefixes if p in modules]
    if not known:
        return []
    target = known[-1]
    # Packages containing the importer are already imported (parents run before their children).
    executed = [p for p in known[:-1] if not (importer == p or importer.startswith(p + "."))]
    return [*executed, target]


def import_graph(packages: tuple[tuple[Path, str], ...]) -> tuple[Graph, dict[str, Path]]:
    """Module -> {imported project module -> first import site}, and the modules found."""
    modules = project_modules(packages)
    graph: Graph = {module: {} for module in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name, line in imported_names(tree, module, path):
            for target in _executed_modules(name, module, modules):
                if target != module:
                    graph[module].setdefault(target, ImportSite(path, line))
    return graph, modules


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, {})))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(components)


def circles(graph: Graph) -> list[list[str]]:
    """The components of more than one module: each is at least one import circle."""
    return [c for c in strongly_connected(graph) if len(c) > 1]


def one_circle_path(graph: Graph, component: list[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    members, start = set(component), component[0]
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child not in members:
                continue
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, node, start]
            if child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"{component} is not strongly connected")


def describe_circles(graph: Graph, root: Path) -> str:
    lines = []
    for component in circles(graph):
        path = one_circle_path(graph, component)
        hops = [f"{a} -> {b} ({graph[a][b].describe(root)})" for a, b in zip(path, path[1:])]
        lines.append(f"circle among {', '.join(component)}:\n    " + "\n    ".join(hops))
    return "\n".join(lines)


# ---- the project ------------------------------------------------------------------------------


def test_no_import_circles_in_include_and_plugins():
    graph, _ = import_graph(PROJECT_PACKAGES)
    report = describe_circles(graph, REPO)
    assert not report, f"import circles found:\n{report}"


def test_the_graph_sees_the_project():
    """Guards against a vacuous pass (wrong roots, a walker that misses imports)."""
    graph, modules = import_graph(PROJECT_PACKAGES)
    assert len(modules) > 50
    assert "include.intake.ledger" in graph["include.schema"]  # module level
    assert "include.schema" in graph["include.catalog.runtime"]  # inside a function
    assert "trading_grid.hooks.trading_grid" in graph["include.catalog.runtime"]  # across packages
    assert "include.intake" in graph["include.catalog.runtime"] or any(
        "include.intake" in targets for targets in graph.values()
    )  # a package executed by importing its submodule
    assert "include.intake.ledger" in graph["include.intake"]  # a package importing its own submodule


# ---- the detector on synthetic trees ----------------------------------------------------------


def _write_tree(root: Path, files: dict[str, str]) -> tuple[tuple[Path, str], ...]:
    for relative, text in files.items():
        path = root / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return ((root / "pkg", "pkg"),)


def _circles_in(tmp_path: Path, files: dict[str, str]) -> list[list[str]]:
    graph, _ = import_graph(_write_tree(tmp_path, {"__init__.py": "", **files}))
    return circles(graph)


def test_a_circle_through_a_function_level_import_is_found(tmp_path):
    found = _circles_in(tmp_path, {
        "a.py": "from pkg.b import helper\n",
        "b.py": "def helper():\n    from pkg import c\n    return c\n",
        "c.py": "import pkg.a\n",
    })
    assert found == [["pkg.a", "pkg.b", "pkg.c"]]


def test_a_circle_through_a_package_init_is_found(tmp_path):
    # pkg.sub/__init__ imports pkg.sub.x; pkg.other imports pkg.sub.y, which executes pkg.sub/__init__.
    found = _circles_in(tmp_path, {
        "sub/__init__.py": "from pkg.sub.x import X\n",
        "sub/x.py": "if False:\n    from pkg.other import O\nX = 1\n",
        "sub/y.py": "",
        "other.py": "from pkg.sub.y import *\nO = 1\n",
    })
    assert found == [["pkg.other", "pkg.sub", "pkg.sub.x"]]


def test_relative_and_import_module_edges_are_found(tmp_path):
    found = _circles_in(tmp_path, {
        "a/__init__.py": "",
        "a/one.py": "from . import two\n",
        "a/two.py": "import importlib\nimportlib.import_module('pkg.a.one')\n",
    })
    assert found == [["pkg.a.one", "pkg.a.two"]]


def test_siblings_under_a_package_that_imports_them_are_no_circle(tmp_path):
    found = _circles_in(tmp_path, {
        "sub/__init__.py": "from pkg.sub.ledger import Ledger\nfrom pkg.sub.errors import Oops\n",
        "sub/errors.py": "class Oops(Exception):\n    pass\n",
        "sub/ledger.py": "from pkg.sub.errors import Oops\nfrom .errors import Oops as Again\nLedger = 1\n",
        "self_ref.py": "def f():\n    from pkg.self_ref import f as g\n    return g\n",
    })
    assert found == []


def test_the_failure_names_a_path_with_its_import_lines(tmp_path):
    packages = _write_tree(tmp_path, {"__init__.py": "", "a.py": "\n\nimport pkg.b\n", "b.py": "from pkg import a\n"})
    graph, _ = import_graph(packages)
    assert describe_circles(graph, tmp_path) == (
        "circle among pkg.a, pkg.b:\n"
        "    pkg.a -> pkg.b (pkg/a.py:3)\n"
        "    pkg.b -> pkg.a (pkg/b.py:1)"
    )
