"""Fail when a function or method in the package is longer than the limit (default 60 lines).

The length is counted from the ``def`` line (decorators excluded) to the function's last line,
docstring and comments included: what a reader has to hold in mind. Nested functions count
towards their parent too. Usage: ``python scripts/function_length.py [--max N] [PATH...]``
(default: preprocess/).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

LIMIT = 60
ROOT = Path(__file__).resolve().parents[1]

# Functions over the limit that are known and owned by another change: "path::qualified.name".
# Each entry is a debt with an owner; the list should shrink to nothing.
ALLOWED: frozenset[str] = frozenset({
})


def functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{node.name}"
            yield name, node
            yield from functions(node, f"{name}.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")


def too_long(path: Path, limit: int) -> Iterator[tuple[str, int, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for name, fn in functions(tree):
        length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
        if length > limit:
            yield name, fn.lineno, length


def _relative(path: Path) -> str:
    """``path`` relative to the repository (as ALLOWED names it), wherever the script is run from."""
    full = path.resolve()
    return full.relative_to(ROOT).as_posix() if full.is_relative_to(ROOT) else full.as_posix()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["preprocess"])
    parser.add_argument("--max", type=int, default=LIMIT)
    args = parser.parse_args(argv)
    bad = 0
    for root in map(Path, args.paths):
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            for name, line, length in too_long(path, args.max):
                if f"{_relative(path)}::{name}" in ALLOWED:
                    continue
                print(f"{path}:{line}: {name} is {length} lines long (at most {args.max})")
                bad += 1
    if bad:
        print(f"{bad} function(s) over {args.max} lines: split them (see ARCHITECTURE.md)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
