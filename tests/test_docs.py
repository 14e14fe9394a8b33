"""The documentation site builds in strict mode: a broken link between pages, a stale
reference to code, or a docstring the API reference cannot read fails the build. And
the built site shows no raw markup: math in docstrings is written for Markdown
(``$...$``, ``$$ ... $$``) and typeset by MathJax, never left as reST ``:math:``."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
RAW_RST_MATH = (":math:", ".. math::")

needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
    reason="needs mkdocs and mkdocstrings (pip install -e '.[docs]'; the test extra has them)",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built once, strictly, from this checkout's docs and src."""
    site_dir = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return site_dir


@needs_mkdocs
def test_docs_build_in_strict_mode(site):
    assert (site / "api" / "index.html").is_file()
    assert "hdetach.LSTM" in (site / "api" / "index.html").read_text()


@needs_mkdocs
def test_the_built_site_has_no_raw_rst_math(site):
    # Search index included: it is what the site's search box shows.
    found = {
        f"{path.relative_to(site)}: {marker!r} x{text.count(marker)}"
        for path in [*site.rglob("*.html"), *site.rglob("*.json")]
        for text in [path.read_text(errors="replace")]
        for marker in RAW_RST_MATH
        if marker in text
    }
    assert not found, sorted(found)


@needs_mkdocs
def test_the_api_page_typesets_its_math(site):
    html = (site / "api" / "index.html").read_text()
    # arithmatex (generic mode) wraps the math for MathJax: inline \(...\), display \[...\].
    inline = re.findall(r'<span class="arithmatex">\\\((.+?)\\\)</span>', html, re.S)
    display = re.findall(r'<div class="arithmatex">\\\[(.+?)\\\]</div>', html, re.S)
    assert any(r"\mathrm{sg}" in m for m in inline), "LSTM's inline math is not typeset"
    assert any(r"\tanh(c_t)" in m for m in display), "LSTM's equations are not a display block"
    # Every $ pair became a container: none is left as text outside code.
    prose = re.sub(r"<(pre|code)\b.*?</\1>", "", html, flags=re.S)
    prose = re.sub(r'<(span|div) class="arithmatex">.*?</\1>', "", prose, flags=re.S)
    assert not re.findall(r"\$[^$\s<>][^$<>]*\$", prose)
    # ...and the page loads MathJax after its configuration.
    scripts = re.findall(r'<script src="([^"]+)"', html)
    config = next(i for i, src in enumerate(scripts) if src.endswith("javascripts/mathjax.js"))
    assert any("mathjax@3" in src for src in scripts[config + 1 :]), scripts
    assert (site / "javascripts" / "mathjax.js").is_file()


def test_no_docstring_uses_rst_math():
    """The same rule at the source, without mkdocs: the library's docstrings are what
    help() shows and what the API page renders."""
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "src" / "hdetach").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(marker in line for marker in RAW_RST_MATH)
    ]
    assert not found, found


def test_every_docs_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert pages and all(page in nav for page in pages)
