"""Functions fit on a screen: no function or method in app/ runs over MAX_LINES lines (from its `def`, decorators
not counted, to its last line)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"
MAX_LINES = 60


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
    assert not too_long, f"over {MAX_LINES} lines (split them): {too_long}"


def test_the_measure_counts_nested_functions_and_methods() -> None:
    """The check can fail: a long method inside a class and a long closure inside a function are both seen."""
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_LINES))
    source = (
        f"class A:\n    def long(self) -> None:\n{body}\n\ndef outer() -> None:\n    def inner() -> None:\n{body}\n"
    )
    lengths = dict(function_lengths(ast.parse(source), "m"))
    assert lengths["m.A.long"] == MAX_LINES + 1
    assert lengths["m.outer.inner"] == MAX_LINES + 1 and lengths["m.outer"] == MAX_LINES + 2
