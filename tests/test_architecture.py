"""The gates that keep the architecture easy to see: every import goes down the layers (ARCHITECTURE.md), no
import cycle inside the package, no function in it over 60 lines (scripts/function_length.py, run by
scripts/check), one declaration of the schema, no module over 450 lines, Any in at most 5% of the signatures."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from typing import get_type_hints

from preprocess.rows.records import FailureFields, Item, ItemFields, ItemRecord, StoredItem
from preprocess.rows.schema import FAILURE_COLUMNS, ITEM_COLUMNS, Column, FailureRow, ItemRow
from tests.paths import ROOT

PACKAGE = ROOT / "preprocess"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports: at the top, inside functions, and for type checking."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out & known


# The floors, lowest first (ARCHITECTURE.md). A module may import its own folder and any lower floor; two
# folders on one floor never import each other (sources and rows; pipeline and store; the faces).
FLOORS: dict[str, int] = {
    "core": 0,
    "sources": 1, "rows": 1,
    "pipeline": 2, "store": 2,
    "drivers": 3,
    "tune": 4, "serve": 4, "torchdata": 4, "history": 4, "notebook": 4, "verify": 4,  # the faces
    "cli": 5,  # the command line: the face over every face
    "preprocess": 5,  # the package's __init__: the public Python surface, over the faces
    "__main__": 6,
}


def room(module: str) -> str:
    """The folder (or root module) of a package module: ``preprocess.store.writer`` -> ``store``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def against_the_floors(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes up a floor, or sideways into another folder of the same floor."""
    bad = []
    for module, targets in sorted(graph.items()):
        here = room(module)
        for target in sorted(targets):
            there = room(target)
            if there != here and FLOORS[there] >= FLOORS[here]:
                bad.append(f"{module} -> {target}")
    return bad


def package_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports(path, set(paths)) - {name} for name, path in paths.items()}


def test_every_import_goes_down_the_floors() -> None:
    graph = package_graph()
    assert {room(m) for m in graph} == set(FLOORS)  # a new folder takes a floor here first
    assert against_the_floors(graph) == []
    # and the check can fail: up a floor, and sideways on one floor
    assert against_the_floors({"preprocess.store.reader": {"preprocess.pipeline.images"},
                               "preprocess.rows.schema": {"preprocess.core.errors"},
                               "preprocess.serve.app": {"preprocess.cli.app"},
                               "preprocess.core.units": {"preprocess.drivers.run"}}) == [
        "preprocess.core.units -> preprocess.drivers.run",
        "preprocess.serve.app -> preprocess.cli.app",
        "preprocess.store.reader -> preprocess.pipeline.images"]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while (w := stack.pop()) != v:
                group.append(w)
            if group:
                found.append(sorted([v, *group]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_in_the_package() -> None:
    graph = package_graph()
    # the check sees lazy imports
    assert graph["preprocess.pipeline.extractor.build"] >= {"preprocess.pipeline.extractor.session"}
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # and finds cycles


def test_the_function_length_gate(tmp_path: Path) -> None:
    script = [sys.executable, str(ROOT / "scripts" / "function_length.py")]
    ok = subprocess.run([*script, str(PACKAGE)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout
    long = tmp_path / "long.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    long.write_text(f"class A:\n    def fine(self) -> None:\n        pass\n\n    def method(self) -> None:\n{body}\n")
    long.write_text(long.read_text().replace("    x", "        x"))
    bad = subprocess.run([*script, str(long)], capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "A.method is 61 lines long" in bad.stdout and "fine" not in bad.stdout


def test_one_declaration_of_the_rows() -> None:
    """Every row field but the embedding is a column, in the dataclass's order: adding a field to
    ItemRow (or FailureRow) is what adds the column."""
    assert [c.name for c in ITEM_COLUMNS] == [f.name for f in dataclasses.fields(ItemRow) if f.name != "embedding"]
    assert [c.name for c in FAILURE_COLUMNS] == [f.name for f in dataclasses.fields(FailureRow)]
    assert {c.part for c in ITEM_COLUMNS} == {"data", "stored", "source", "origin"}


def _python_type(col: Column) -> type:
    return {"bytes": bytes, "str": str, "int": int, "float": float}[col.kind]


def test_the_read_records_mirror_the_rows() -> None:
    """The reader's typed records (rows/records.py) have every column of the rows, in order, with its
    Python type: adding a field to ItemRow fails here until the records have it too."""
    fields = get_type_hints(ItemFields)
    assert list(fields) == [c.name for c in ITEM_COLUMNS if c.name != "jpeg"]
    assert all(fields[c.name] is _python_type(c) for c in ITEM_COLUMNS if c.name != "jpeg")
    assert list(get_type_hints(FailureFields)) == [c.name for c in FAILURE_COLUMNS]
    assert all(get_type_hints(FailureFields)[c.name] is _python_type(c) for c in FAILURE_COLUMNS)
    assert set(get_type_hints(ItemRecord)) - set(fields) == {"index"}
    assert set(get_type_hints(Item)) - set(fields) == {"index", "jpeg", "image"}
    assert set(get_type_hints(StoredItem)) - set(fields) == {"jpeg", "embedding"}
    assert Item.__optional_keys__ == frozenset({"image"})  # only with a decoder


# Issue 20's budgets: a module a reader can hold in mind, and types at the seams.
MAX_MODULE_LINES = 450
MAX_ANY_SHARE = 0.05


def test_no_module_is_over_the_line_budget() -> None:
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {long}"


def test_any_is_in_few_signatures() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from signatures import signatures  # scripts/ is not a package
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    total, with_any = signatures(PACKAGE)
    share = sum(with_any.values()) / total
    assert total > 500 and share <= MAX_ANY_SHARE, (f"{share:.1%} of {total} signatures use Any "
                                                     f"(python scripts/signatures.py --by-module): {with_any}")


def test_no_pattern_ends_in_a_dollar() -> None:
    """A regex's ``$`` also matches before a final newline: ``^[A-Z]{20}$`` took 'ID\\n' as a snapshot id and
    ``nl\\n`` as a branch name. Whole-string patterns end in ``\\Z`` (or use ``re.fullmatch``)."""
    found = re.compile(r"""re\.(?:compile|match|search)\(\s*r?["'][^"']*\$["']""")
    bad = [f"{p.relative_to(ROOT)}:{n}" for p in PACKAGE.rglob("*.py")
           for n, text in enumerate(p.read_text().splitlines(), 1) if found.search(text)]
    assert not bad, bad
