"""No import cycles among the first-party packages (gpt_runtime, gpt_model, gpt_operator), read statically; and
no HTTP (fastapi, starlette, gpt_runtime.errors) imported by the runtime's layers below the HTTP edge.

The graph is built with `ast`, without importing anything:
- a node per module (``pkg/__init__.py`` is the package ``pkg``);
- an edge for each module-level ``import x.y`` / ``from x import y`` of a first-party module: to ``x.y`` when it is
  a module (``from x import y`` where y is a submodule), else to ``x``; relative imports are resolved;
- module level only: imports inside functions and methods are deliberate late binding (optional dependencies, the
  factories' lazy picks) and do not run at import time, so they do not count; neither do imports under
  ``if TYPE_CHECKING:``. Statements under other module-level ``if``/``try``/``with`` blocks do count;
- importing ``a.b.c`` runs ``a`` and ``a.b`` first, but those implicit parent edges are not added (each package's
  ``__init__`` re-exports its own submodules, so every sibling import would otherwise look like a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "gpt_runtime": ROOT / "runtime" / "gpt_runtime",
    "gpt_model": ROOT / "model" / "gpt_model",
    "gpt_operator": ROOT / "operator" / "gpt_operator",
}

# Known cycles, each a sorted tuple of its modules, with why it is left. Empty: keep it that way.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def _module_files(packages: dict[str, Path]) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package's __init__)."""
    modules: dict[str, tuple[Path, bool]] = {}
    for name, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            modules[".".join([name, *parts])] = (path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported (not in functions, not under TYPE_CHECKING)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    walk(node.body)
                walk(node.orelse)
            elif isinstance(node, (ast.Try, ast.TryStar)):
                walk(node.body)
                for handler in node.handlers:
                    walk(handler.body)
                walk(node.orelse)
                walk(node.finalbody)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                walk(node.body)
            # def/async def/class bodies: imports there do not run at import time (class bodies do, but none import)

    walk(tree.body)
    return found


def build_graph(packages: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the first-party modules it imports at module level."""
    modules = _module_files(packages)
    graph: dict[str, set[str]] = {name: set() for name in modules}

    def resolve(target: str) -> str | None:
        while target and target not in modules:  # `import a.b.func`-style names fall back to the module
            target = target.rpartition(".")[0]
        return target or None

    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        for node in _module_level_imports(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base_parts = package.split(".")
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.append(submodule if submodule in modules else base)
            for target in targets:
                resolved = resolve(target)
                if resolved and resolved != name:
                    graph[name].add(resolved)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected component with more than one module (or a self-loop), as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def connect(node: str) -> None:  # Tarjan, iterative so deep graphs do not hit the recursion limit
        nonlocal counter
        work = [(node, iter(sorted(graph[node])))]
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[current] = min(low[current], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[current])
            if low[current] == index[current]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == current:
                        break
                if len(component) > 1 or current in graph[current]:
                    components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_one_cycle(graph, component) for component in components]


def _one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A concrete path start -> ... -> start inside a strongly connected component (breadth-first, shortest)."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"not a cycle: {component}")


def test_first_party_packages_have_no_import_cycles():
    graph = build_graph(PACKAGES)
    edges = sum(len(targets) for targets in graph.values())
    print(f"import graph: {len(graph)} modules, {edges} module-level first-party edges")
    assert len(graph) > 100 and edges > 100  # the walk found the packages

    cycles = find_cycles(graph)
    unexpected = [cycle for cycle in cycles if tuple(sorted(set(cycle))) not in KNOWN_CYCLES]
    for cycle in cycles:
        print("cycle:", " -> ".join(cycle))
    assert not unexpected, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in unexpected)
    stale = KNOWN_CYCLES - {tuple(sorted(set(cycle))) for cycle in cycles}
    assert not stale, f"known cycles that are gone (remove them from KNOWN_CYCLES): {stale}"


def _write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_graph_catches_a_cycle(tmp_path: Path):
    """Positive control: a package with a three-module cycle (one edge a relative `from . import x` of a submodule)."""
    _write(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "a.py": "from pkg.b import thing\n",
            "b.py": "import pkg.c\n",
            "c.py": "from . import a\n",
            "d.py": "from pkg import a\n",  # into the cycle, not part of it
        },
    )
    graph = build_graph({"pkg": tmp_path / "pkg"})
    assert graph["pkg.c"] == {"pkg.a"} and graph["pkg.d"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_the_graph_ignores_what_does_not_run_at_import(tmp_path: Path):
    """TYPE_CHECKING imports and function-level imports make no edge, so they cannot make a cycle."""
    _write(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n",
            "b.py": "import pkg.a\n\ndef late():\n    from pkg import c\n",
            "c.py": "from pkg.b import late\n",
        },
    )
    graph = build_graph({"pkg": tmp_path / "pkg"})
    assert graph == {"pkg": set(), "pkg.a": set(), "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.b"}}
    assert find_cycles(graph) == []


# The layers below the HTTP edge raise gpt_runtime.domain_errors and know nothing of HTTP: the edge
# (gpt_runtime.errors, the routers, deps, the middlewares) maps their errors to statuses and headers.
DOMAIN_LAYERS = (
    "gpt_runtime.services",
    "gpt_runtime.storage",
    "gpt_runtime.auth",
    "gpt_runtime.backends",
    "gpt_runtime.voice",
    "gpt_runtime.mail",
    "gpt_runtime.domain_errors",
)
HTTP_EDGE = ("fastapi", "starlette", "gpt_runtime.errors")


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def all_imports(packages: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> every module it names in an import, anywhere in the file (functions and TYPE_CHECKING blocks
    too: a late import of fastapi is still HTTP knowledge). `from x import y` names x.y when that is a module."""
    modules = _module_files(packages)
    found: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules)
        found[name] = targets
    return found


def http_in_domain_layers(imports: dict[str, set[str]]) -> list[str]:
    """`module -> imported` for each import of the HTTP edge from a domain layer."""
    return sorted(
        f"{module} -> {target}"
        for module, targets in imports.items()
        if _within(module, DOMAIN_LAYERS)
        for target in targets
        if _within(target, HTTP_EDGE)
    )


def test_domain_layers_import_nothing_of_http():
    imports = all_imports(PACKAGES)
    assert sum(_within(module, DOMAIN_LAYERS) for module in imports) > 40  # the walk found the layers
    violations = http_in_domain_layers(imports)
    assert not violations, "HTTP imported below the edge (raise gpt_runtime.domain_errors instead):\n" + "\n".join(
        violations
    )


def test_the_layer_rule_catches_http_below_the_edge(tmp_path: Path):
    """Positive control: a service importing the edge's errors (relatively), a store importing starlette inside a
    function, and the edge itself importing fastapi (allowed)."""
    _write(
        tmp_path / "gpt_runtime",
        {
            "__init__.py": "",
            "errors.py": "from fastapi import Request\n",
            "domain_errors.py": "",
            "services/__init__.py": "",
            "services/quota.py": "from ..errors import NotFound\nfrom gpt_runtime.domain_errors import Conflict\n",
            "storage/__init__.py": "",
            "storage/store.py": "def late():\n    import starlette.requests\n",
        },
    )
    imports = all_imports({"gpt_runtime": tmp_path / "gpt_runtime"})
    assert http_in_domain_layers(imports) == [
        "gpt_runtime.services.quota -> gpt_runtime.errors",
        "gpt_runtime.storage.store -> starlette.requests",
    ]
