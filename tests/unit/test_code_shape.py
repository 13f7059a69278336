"""Functions fit on a screen: no function or method in app/ runs over MAX_LINES lines (from its `def`, decorators
not counted, to its last line)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"
MAX_LINES = 60

# Today's offenders, {qualified name: length}. This list only shrinks: shorten a function and drop (or lower) its
# entry; never add one, never raise one.
ALLOWED: dict[str, int] = {}


def function_lengths(tree: ast.Module, module: str) -> Iterator[tuple[str, int]]:
    """(module.Class.function, lines) for every function and method, nested ones included."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}.{child.name}"
                yield name, (child.end_lineno or child.lineno) - child.lineno + 1
                yield from walk(child, name)
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}.{child.name}")
            else:
                yield from walk(child, prefix)

    return walk(tree, module)


def all_lengths() -> dict[str, int]:
    lengths: dict[str, int] = {}
    for path in sorted(APP.rglob("*.py")):
        module = ".".join(path.relative_to(APP.parent).with_suffix("").parts)
        lengths.update(function_lengths(ast.parse(path.read_text(), str(path)), module))
    return lengths


def test_no_function_is_longer_than_a_screen() -> None:
    too_long = {name: length for name, length in all_lengths().items() if length > MAX_LINES}
    new = {name: length for name, length in too_long.items() if name not in ALLOWED}
    grown = {name: (ALLOWED[name], length) for name, length in too_long.items() if length > ALLOWED.get(name, length)}
    assert not new, f"over {MAX_LINES} lines (split them): {new}"
    assert not grown, f"allowed long functions that grew (allowed, now): {grown}"


def test_the_allowed_list_names_only_functions_that_exist() -> None:
    """A stale entry would let a new function of the same name grow back to the old length unnoticed."""
    lengths = all_lengths()
    assert not [name for name in ALLOWED if name not in lengths]
