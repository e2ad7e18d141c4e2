"""Counts the package's function signatures that use ``Any`` (issue 20's budget: at most 5%).

    python scripts/signatures.py [--by-module]

A signature "uses Any" when ``Any`` appears in a parameter or return annotation (``dict[str, Any]``
included). tests/test_architecture.py holds the budget; this prints where the Any are.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _uses_any(node: ast.expr | None) -> bool:
    return node is not None and any((isinstance(n, ast.Name) and n.id == "Any") or
                                    (isinstance(n, ast.Attribute) and n.attr == "Any") for n in ast.walk(node))


def signatures(package: Path) -> tuple[int, Counter[str]]:
    """(every function signature in ``package``, per module the number that use Any)."""
    total, with_any = 0, Counter[str]()
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                total += 1
                args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
                args += [a for a in (node.args.vararg, node.args.kwarg) if a is not None]
                if _uses_any(node.returns) or any(_uses_any(a.annotation) for a in args):
                    with_any[str(path.relative_to(package.parent))] += 1
    return total, with_any


def main() -> None:
    total, with_any = signatures(ROOT / "preprocess")
    n = sum(with_any.values())
    print(f"{n} of {total} signatures use Any ({n / total:.1%})")
    if "--by-module" in sys.argv:
        for module, count in with_any.most_common():
            print(f"{count:4d}  {module}")


if __name__ == "__main__":
    main()
