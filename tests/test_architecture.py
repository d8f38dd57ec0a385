"""The layout holds its rules: no import cycle (imports inside functions count), small modules and
functions, a docstring on every package saying what it owns, and CONTRIBUTING's layout table
listing every package and top-level module. Everything is read from the source, nothing imported."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "frmargin"
#: the limits of CONTRIBUTING's guides
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 100


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package's __init__) for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_package)
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks (not imported at run time)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                inside.update(id(n) for n in ast.walk(child))
    return inside


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, anywhere in its body (functions included)."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        here = name.split(".") if is_package else name.split(".")[:-1]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in modules]
                targets += subs
                if len(subs) < len(node.names):  # names from the module itself
                    targets.append(mod)
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_counting_imports_inside_functions():
    assert cycles(import_graph()) == []


def test_no_module_or_function_too_long():
    long_modules, long_functions = [], []
    for name, (path, _) in _modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}: {length} lines")
    assert long_modules == [], f"modules over {MAX_MODULE_LINES} lines"
    assert long_functions == [], f"functions over {MAX_FUNCTION_LINES} lines"


def test_every_package_says_what_it_owns():
    for name, (path, is_package) in _modules().items():
        if is_package:
            doc = ast.get_docstring(ast.parse(path.read_text()))
            assert doc and len(doc.split()) >= 8, f"{name}/__init__.py has no docstring saying what it owns"


def _layout_table() -> str:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    start = text.index("## Layout")
    return text[start : text.index("\n## ", start + 1)]


@pytest.mark.parametrize(
    "entry",
    sorted(
        [f"`{p.name}/`" for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
        + [f"`{p.name}`" for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    ),
)
def test_contributing_lists_every_package_and_top_level_module(entry):
    assert entry in _layout_table(), f"CONTRIBUTING.md's layout does not list {entry}"


def test_contributing_lists_nothing_that_is_gone():
    table = _layout_table()
    listed = {
        cell
        for cell in table.split("`")
        if cell.endswith((".py", "/")) and "/" not in cell.rstrip("/") and "*" not in cell
    }
    trees = (PACKAGE, ROOT / "benchmarks")
    present = {p.name + "/" for t in (*trees, ROOT) for p in t.iterdir() if p.is_dir()}
    present |= {p.name for t in trees for p in t.rglob("*.py")}
    assert listed - present == set(), "CONTRIBUTING.md lists files that do not exist"
