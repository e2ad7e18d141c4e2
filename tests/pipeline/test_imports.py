"""The heavy libraries each have one home in the pipeline (ARCHITECTURE.md): only the modules of
``pipeline/engines/dali/`` import DALI and nvImageCodec, only ``pipeline/extractor/session.py`` imports
onnxruntime. A test reads every module's imports (top level, in functions, under TYPE_CHECKING)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.paths import ROOT

PACKAGE = ROOT / "preprocess"
HOMES = {"nvidia.dali": "preprocess/pipeline/engines/dali/", "nvidia.nvimgcodec": "preprocess/pipeline/engines/dali/",
         "onnxruntime": "preprocess/pipeline/extractor/session.py"}


def importers(library: str, files: list[Path], root: Path = ROOT) -> set[str]:
    """The files (relative to ``root``) that import ``library`` or one of its modules."""
    out = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(n == library or n.startswith(f"{library}.") for n in names):
                out.add(str(path.relative_to(root)))
    return out


def test_each_heavy_library_is_imported_in_its_one_home() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    for library, home in HOMES.items():
        found = importers(library, files)
        assert found, f"nothing imports {library}: the rule checks nothing"
        assert {f for f in found if not f.startswith(home)} == set(), library


def test_the_check_sees_imports_in_functions(tmp_path: Path) -> None:
    stray = tmp_path / "stray.py"
    stray.write_text("def f() -> None:\n    from nvidia.dali import fn\n")
    other = tmp_path / "other.py"
    other.write_text("import onnxruntime as ort\n")
    assert importers("nvidia.dali", [stray, other], tmp_path) == {"stray.py"}
    assert importers("onnxruntime", [stray, other], tmp_path) == {"other.py"}
