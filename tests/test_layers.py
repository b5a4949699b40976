"""The layers run one way: ``analysis`` (pure theory) imports nothing from ``fastsgd``, at module
level or inside a function, so the theory can be used, tested and cited on its own."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import statement in the file, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_imported_modules_sees_nested_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from fastsgd.io import load\n    return load\n")
    assert imported_modules(source) == [(1, "os"), (4, "fastsgd.io")]


def test_analysis_imports_nothing_from_fastsgd():
    upward = [f"{path.relative_to(ROOT)}:{line} imports {module}"
              for path in sorted((ROOT / "analysis").rglob("*.py"))
              for line, module in imported_modules(path)
              if module == "fastsgd" or module.startswith("fastsgd.")]
    assert upward == []
    assert len(list((ROOT / "analysis").rglob("*.py"))) >= 6  # the walk saw the package
