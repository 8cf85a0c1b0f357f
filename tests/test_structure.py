"""Structure rules of the code base, checked with ``ast`` (no imports executed).

* No import cycle among the modules of ``unlearn_audit/`` and ``attacks/``: every import
  counts, also those inside functions (a lazy import only hides a cycle), except imports under
  ``if TYPE_CHECKING:``.
* No function longer than ``MAX_FUNCTION`` lines and no module longer than ``MAX_MODULE``
  lines; the justified exceptions are listed here and in the README (Development).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("unlearn_audit", "attacks")
MAX_FUNCTION = 80
MAX_MODULE = 600
# path -> why it may be longer; function "path:name" -> why.
LONG_MODULES: dict[str, str] = {}
LONG_FUNCTIONS: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of import nodes inside ``if TYPE_CHECKING:`` blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                for sub in ast.walk(inner):
                    skip.add(id(sub))
    return skip


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        names = [base] + [f"{base}.{alias.name}" for alias in node.names]
    return {name for name in names if name in known}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_nodes(tree)
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skip:
                edges |= _imported(module, path, node, known)
        graph[module] = edges - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None; plain depth-first search."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_cycle_finder_finds_a_hand_made_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_relative_and_lazy_imports_are_edges(tmp_path):
    tree = ast.parse("def f():\n    from . import b\n    from .c import d\n")
    path = tmp_path / "a.py"
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    known = {"pkg.a", "pkg.b", "pkg.c"}
    got = set().union(*(_imported("pkg.a", path, n, known) for n in nodes))
    assert got == {"pkg.b", "pkg.c"}


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 20
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _lengths():
    for path in _modules().values():
        rel = str(path.relative_to(ROOT))
        text = path.read_text(encoding="utf-8")
        yield "module", rel, len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield "function", f"{rel}:{node.name}", node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("kind", ["module", "function"])
def test_sizes(kind):
    limit, allowed = (MAX_MODULE, LONG_MODULES) if kind == "module" else (MAX_FUNCTION, LONG_FUNCTIONS)
    too_long = {name: n for k, name, n in _lengths() if k == kind and n > limit and name not in allowed}
    assert not too_long, f"{kind}s over {limit} lines: {too_long}"


def test_exceptions_are_still_needed():
    """An entry in the exception lists that is no longer over the limit must be removed."""
    sizes = {name: n for _, name, n in _lengths()}
    stale = [name for name in LONG_MODULES if sizes.get(name, 0) <= MAX_MODULE]
    stale += [name for name in LONG_FUNCTIONS if sizes.get(name, 0) <= MAX_FUNCTION]
    assert not stale, f"remove from the exception lists: {stale}"
