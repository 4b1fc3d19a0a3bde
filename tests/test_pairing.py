"""Every chapter notebook is a Jupytext pair whose halves agree, and starts with the Colab cell.

notebooks/NN_name.ipynb (what the book renders, with stored outputs for nbval) and
notebooks/NN_name.py (py:percent, what is edited and reviewed) must hold the same cells; the
notebook's metadata declares the pairing. The title carries an "Open in Colab" badge and the first
code cell installs amortlib's release in Colab, both derived (``amortlib.links``) from the
repository URL that _config.yml sets, the only place it is set.
"""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest
import yaml

import amortlib
from amortlib import links

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHAPTER_SCRIPTS = sorted(p for p in (ROOT / "notebooks").glob("*.py")
                         if re.match(r"\d\d_", p.name))

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
def test_first_code_cell_installs_the_release_from_the_configured_repository(ipynb):
    url = repository_url()
    nb = jupytext.read(ipynb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{ipynb.name} has no code cell"
    first = code[0].source.strip()
    urls = re.findall(r"git\+(https?://[^\s\"'@]+)", first)
    assert urls == [url], f"{ipynb.name}: first code cell installs from {urls}, _config.yml " \
                          f"says {url}"
    assert f"@{links.release_tag()}\"" in first, f"{ipynb.name}: the install is not pinned to the release"
    assert first == links.install_cell(), \
        f"{ipynb.name}: the first code cell must be exactly\n{links.install_cell()}\n" \
        f"(python -m amortlib.links writes it)"


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_title_cell_has_the_colab_badge_of_the_release(ipynb):
    nb = jupytext.read(ipynb)
    title = next(c for c in nb.cells if c.cell_type == "markdown").source
    assert title.startswith("# "), f"{ipynb.name}: the first markdown cell is not the title"
    expected = (f"https://colab.research.google.com/github/"
                f"{repository_url().removeprefix('https://github.com/')}/blob/"
                f"{links.release_tag()}/notebooks/{ipynb.name}")
    assert links.badge(ipynb.stem) in title.splitlines()[:3], f"{ipynb.name}: no Colab badge under the title"
    assert expected in title
    assert (ipynb.parent / links.BADGE_IMAGE).is_file(), links.BADGE_IMAGE


def test_links_are_in_sync_with_the_one_repository_setting():
    """Badges, install cells and the launch buttons' branch derive from _config.yml's
    repository.url and the package version: nothing left to rewrite."""
    stale = links.sync(ROOT, check=True)
    assert not stale, f"out of date (run `python -m amortlib.links`): {stale}"
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    assert cfg["branch"] == links.release_tag() == f"v{amortlib.__version__}"
    import subprocess

    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True).stdout.split()
    files = [ROOT / f for f in listed] or [p for p in ROOT.rglob("*") if ".venv" not in p.parts]
    hits = [p for p in files if p.is_file() and p.suffix in {".py", ".md", ".yml", ".yaml", ".toml", ".cfg", ".txt"}
            and p.name != "_config.yml" and repository_url() in p.read_text(errors="replace")]
    # the chapters' .py halves hold the derived cells; nothing else spells the URL out
    assert {p.parent.name for p in hits} <= {"notebooks"}, [str(p) for p in hits]


def test_jupytext_sync_is_a_no_op(tmp_path):
    """`jupytext --sync` (with jupytext.toml) changes no chapter of a clean tree."""
    import shutil
    import subprocess
    import sys

    for name in ("jupytext.toml",):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "notebooks").mkdir()
    for p in (ROOT / "notebooks").iterdir():
        if p.suffix in (".py", ".ipynb"):
            shutil.copy2(p, tmp_path / "notebooks" / p.name)
    before = {p.name: p.read_bytes() for p in (tmp_path / "notebooks").iterdir()}
    scripts = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "notebooks").glob("*.py"))
    proc = subprocess.run([sys.executable, "-m", "jupytext", "--sync", *scripts], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    after = {p.name: p.read_bytes() for p in (tmp_path / "notebooks").iterdir()}
    assert [n for n in before if before[n] != after[n]] == []
