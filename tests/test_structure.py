"""The package's shape: the CLI on top of the domain code, and functions short enough to read as named steps."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "pgrpo"
MAX_FUNCTION_LINES = 80


def modules() -> dict[str, ast.Module]:
    return {path.relative_to(SRC).as_posix(): ast.parse(path.read_text()) for path in sorted(SRC.rglob("*.py"))}


def imports_cli(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(alias.name == "pgrpo.cli" for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (
            node.module == "pgrpo.cli" or (node.module == "pgrpo" and any(a.name == "cli" for a in node.names))
        ):
            return True
    return False


def test_only_the_entry_point_imports_the_cli() -> None:
    importers = {name for name, tree in modules().items() if imports_cli(tree)}
    assert importers == {"__main__.py"}


def test_every_function_fits_on_a_screen() -> None:
    long = [
        f"{name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name, tree in modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"split into named steps (<= {MAX_FUNCTION_LINES} lines): {long}"
