"""The house rules of the package: imports point one way, functions stay short, ARCHITECTURE.md names every module."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "structvpr"
MAX_FUNCTION_LINES = 60


def test_no_module_imports_one_that_imports_it_back():
    """No cycle, direct or through other modules; imports inside functions count (grimp reads every import)."""
    graph = grimp.build_graph("structvpr", include_external_packages=False)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if graph.chain_exists(importer=imported, imported=importer):
                back = graph.find_shortest_chain(importer=imported, imported=importer)
                cycles.append(f"{importer} -> {' -> '.join(back)}")
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_cycle_check_sees_a_cycle_inside_a_function(tmp_path, monkeypatch):
    """The check above can fail: two modules that import each other, one of them lazily, are found."""
    pkg = tmp_path / "cyclepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclepkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from cyclepkg.a import x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclepkg", include_external_packages=False, cache_dir=None)
    assert graph.chain_exists(importer="cyclepkg.b", imported="cyclepkg.a")
    assert graph.chain_exists(importer="cyclepkg.a", imported="cyclepkg.b")


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_no_function_in_the_package_is_over_60_lines():
    long = [f"{p.relative_to(ROOT)}:{name} ({n} lines)" for p in sorted(PACKAGE.rglob("*.py"))
            for name, n in _functions(p) if n > MAX_FUNCTION_LINES]
    assert not long, long


def test_no_benchmark_main_is_over_60_lines():
    long = [f"{p.name}:main ({n} lines)" for p in sorted((ROOT / "bench").glob("*.py"))
            for name, n in _functions(p) if name == "main" and n > MAX_FUNCTION_LINES]
    assert not long, long


def documented_modules(text: str) -> set[str]:
    """Paths named by the table of rooms: `| room | `a.py`, `b.py` | role |` names room/a.py and room/b.py."""
    import re

    named = set()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not line.startswith("|"):
            continue
        room = cells[0].strip("`")
        for name in re.findall(r"`([\w/]+\.py)`", cells[1]):
            if name != "__init__.py":
                named.add(f"{room}/{name}" if room else name)
    return named


def test_architecture_names_every_module():
    named = documented_modules((ROOT / "ARCHITECTURE.md").read_text())
    modules = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert not sorted(modules - named), f"ARCHITECTURE.md does not name: {sorted(modules - named)}"
    assert not sorted(named - modules), f"ARCHITECTURE.md names modules that do not exist: {sorted(named - modules)}"
