"""The README's and the docs' examples run as written."""

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"
LIBRARY = Path(__file__).parents[1] / "docs" / "library.md"


def test_quick_start_runs(capsys):
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README quick start", "exec"), {})
    printed = capsys.readouterr().out
    losses = [float(v) for v in re.findall(r"loss ([0-9.]+)", printed)]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_population_example_runs(capsys):
    section = LIBRARY.read_text().split("## Populations", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README populations", "exec"), {})
    assert len(re.findall(r"'[0-9.]+'", capsys.readouterr().out)) == 4
