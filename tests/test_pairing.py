"""Every chapter notebook is a Jupytext pair whose halves agree, and starts with the Colab cell.

notebooks/NN_name.ipynb (what the book renders, with stored outputs for nbval) and
notebooks/NN_name.py (py:percent, what is edited and reviewed) must hold the same cells; the
notebook's metadata declares the pairing. The first code cell installs amortlib in Colab from
the repository whose URL _config.yml sets (the only place it is set).
"""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHAPTER_SCRIPTS = sorted(p for p in (ROOT / "notebooks").glob("*.py")
                         if re.match(r"\d\d_", p.name))

FIRST_CELL = '''\
# In Colab, install amortlib from the book's repository; elsewhere this does nothing.
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "amortlib @ git+{url}"], check=True)'''


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/*.ipynb"


@pytest.mark.parametrize("script", CHAPTER_SCRIPTS, ids=lambda p: p.name)
def test_every_script_has_a_notebook(script):
    assert script.with_suffix(".ipynb").is_file(), \
        f"{script.name} has no .ipynb twin: jupytext --sync {script.relative_to(ROOT)}"


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_and_script_hold_the_same_cells(ipynb):
    script = ipynb.with_suffix(".py")
    assert script.is_file(), f"{ipynb.name} has no .py twin (py:percent)"
    nb = jupytext.read(ipynb)
    py = jupytext.read(script)
    formats = nb.metadata.get("jupytext", {}).get("formats", "")
    assert set(formats.split(",")) >= {"ipynb", "py:percent"}, \
        f"{ipynb.name}: metadata jupytext.formats is {formats!r}, expected 'ipynb,py:percent'"
    a, b = _cells(nb), _cells(py)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, (f"{ipynb.name} and {script.name} differ at cell {i}: run "
                        f"`jupytext --sync {script.relative_to(ROOT)}`\n"
                        f"ipynb: {x!r}\npy:    {y!r}")
    assert len(a) == len(b), f"{ipynb.name} has {len(a)} cells, {script.name} has {len(b)}"


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_installs_from_the_configured_repository(ipynb):
    url = repository_url()
    nb = jupytext.read(ipynb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{ipynb.name} has no code cell"
    first = code[0].source.strip()
    urls = re.findall(r"git\+(https?://[^\s\"'@]+)", first)
    assert urls == [url], f"{ipynb.name}: first code cell installs from {urls}, _config.yml " \
                          f"says {url}"
    assert first == FIRST_CELL.format(url=url), \
        f"{ipynb.name}: the first code cell must be exactly\n{FIRST_CELL.format(url=url)}"
