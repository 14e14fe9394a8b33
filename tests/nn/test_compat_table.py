"""The compatibility table (docs/compatibility.md): every row names tests, and the tests exist."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def compatibility_section() -> str:
    text = (ROOT / "docs" / "compatibility.md").read_text()
    return text.split("# Compatibility with torch.nn.LSTM", 1)[1].split("\n## ", 1)[0]


def test_every_row_names_tests_that_exist():
    section = compatibility_section()
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) > 20
    for row in rows[1:]:  # after the header
        assert re.search(r"`test_\w+\.py::test_\w+`", row), f"no test named in: {row}"
    for file, name in re.findall(r"`(test_\w+\.py)::(test_\w+)`", section):
        tree = ast.parse((Path(__file__).parent / file).read_text())
        functions = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert name in functions, f"{file}::{name} named in the table does not exist"
