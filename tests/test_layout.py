"""The shape of quantlab's code, read from its source: which module imports which (every
import, those inside functions too), and how long each module is."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "quantlab"
MAX_LINES = 450


def _modules():
    """{dotted name: path} of every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name, path, modules):
    """The modules of the package that ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:  # "from quantlab import study" imports a module
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {module for module in found if module in modules and module != name}


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _reach(graph, start):
    seen, todo = set(), [start]
    while todo:
        for module in graph[todo.pop()] - seen:
            seen.add(module)
            todo.append(module)
    return seen


def test_the_reader_sees_every_kind_of_import():
    modules = {"quantlab": None, "quantlab.study": None, "quantlab.study.stages": None,
               "quantlab.stamps": None}
    path = PACKAGE / "study" / "stages.py"
    assert {"quantlab.stamps"} <= _imports("quantlab.study.stages", path, modules)
    assert _imports("quantlab.cli", PACKAGE / "cli.py", {**modules, "quantlab.cli": None}) >= {
        "quantlab.study"}  # imported inside a function


def test_no_module_imports_itself_through_others(graph):
    cycles = sorted(name for name in graph if name in _reach(graph, name))
    assert cycles == []


@pytest.mark.parametrize("reader", ["quantlab.compare", "quantlab.compare_report",
                                    "quantlab.pytest_plugin"])
def test_what_reads_results_and_the_plugin_never_reach_the_study_or_the_fleet(graph, reader):
    reached = _reach(graph, reader)
    assert not {m for m in reached if m.startswith(("quantlab.study", "quantlab.fleet"))}


def test_the_fleet_counts_and_stores_by_the_studys_own_code(graph):
    fleet = set().union(*(graph[m] for m in graph if m.startswith("quantlab.fleet")))
    assert {"quantlab.study.counting", "quantlab.study.stages"} <= fleet


def test_no_module_is_over_450_lines():
    long = {str(path.relative_to(PACKAGE)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
