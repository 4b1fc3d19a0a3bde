"""The book's repository and release, and everything derived from them: each chapter's
"Open in Colab" badge and Colab install cell, and the book's launch buttons.

The repository's URL is set in one place, ``repository.url`` in ``_config.yml`` (Jupyter Book
makes its repository, issues, Binder and Colab buttons from it); the release is
``v<amortlib.__version__>``, the tag that the badges open and the install cells install, so a
chapter opened in Colab runs against the package it was written for.

    python -m amortlib.links          # rewrite the badges, install cells and launch branch
    python -m amortlib.links --check  # exit 1 and list the files that are out of date

The install cell brings everything a chapter needs: amortlib carries the chapters and the
published results as package data (``amortlib.paths``), and its dependency floors leave
Colab's own kernel packages (IPython, ipykernel, ipywidgets) in place, so no restart is needed.
``enable_custom_widget_manager`` lets Colab's front end draw the chapters' ipywidgets.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from . import __version__
from .paths import book_files

COLAB = "https://colab.research.google.com"
#: The badge image, beside the book's other static files (the built pages load nothing remote).
BADGE_IMAGE = "../book/_static/open-in-colab.svg"
BADGE = "[![Open in Colab]({image})]({url})"
INSTALL_CELL = '''\
# In Colab: install amortlib (with the book's chapters and published results) at this book's
# release and let widgets draw; elsewhere this does nothing.
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "{requirement}"], check=True)
    from google.colab import output
    output.enable_custom_widget_manager()'''
_BADGE_RE = re.compile(r"^\[!\[Open in Colab\]\([^)]*\)\]\([^)]*\)$", re.M)


def _config(root: Path | None = None) -> dict:
    import yaml

    return yaml.safe_load(((root or book_files()) / "_config.yml").read_text())


def repository_url(root: Path | None = None) -> str:
    """``repository.url`` of ``_config.yml``: the one place the repository is named."""
    return _config(root)["repository"]["url"].rstrip("/")


def release_tag() -> str:
    return f"v{__version__}"


def install_requirement(root: Path | None = None) -> str:
    return f"amortlib @ git+{repository_url(root)}@{release_tag()}"


def colab_url(notebook: str, root: Path | None = None) -> str:
    """Colab's page for ``notebooks/<notebook>.ipynb`` of the release."""
    repo = re.sub(r"^https?://github\.com/", "", repository_url(root))
    return f"{COLAB}/github/{repo}/blob/{release_tag()}/notebooks/{notebook}.ipynb"


def badge(notebook: str, root: Path | None = None) -> str:
    return BADGE.format(image=BADGE_IMAGE, url=colab_url(notebook, root))


def install_cell(root: Path | None = None) -> str:
    return INSTALL_CELL.format(requirement=install_requirement(root))


def chapters(root: Path | None = None) -> list[Path]:
    """The chapters' ``.ipynb`` halves (``notebooks/NN_name.ipynb``)."""
    return sorted(p for p in ((root or book_files()) / "notebooks").glob("*.ipynb")
                  if re.match(r"\d\d_", p.name))


def _with_badge(markdown: str, line: str) -> str:
    """The title cell with the badge as the line after its ``# heading``."""
    if _BADGE_RE.search(markdown):
        return _BADGE_RE.sub(line.replace("\\", r"\\"), markdown, count=1)
    head, _, rest = markdown.partition("\n")
    return f"{head}\n\n{line}\n" + rest if rest else f"{head}\n\n{line}"


def _updated_notebook(nb: dict, name: str, root: Path) -> dict:
    cells = nb["cells"]
    md = next(c for c in cells if c["cell_type"] == "markdown")
    code = next(c for c in cells if c["cell_type"] == "code")
    md["source"] = _with_badge("".join(md["source"]), badge(name, root))
    code["source"] = install_cell(root)
    return nb


def _split_lines(nb: dict) -> dict:
    """Sources as nbformat writes them (a list of lines)."""
    for c in nb["cells"]:
        src = "".join(c["source"])
        c["source"] = src.splitlines(keepends=True)
    return nb


def _write_if_changed(path: Path, new: str, check: bool, changed: list) -> None:
    if path.read_text() != new:
        changed.append(path)
        if not check:
            path.write_text(new)


def sync(root: Path | None = None, check: bool = False) -> list[Path]:
    """Make every chapter pair (``.ipynb`` and its ``.py`` twin) and the launch branch of
    ``_config.yml`` agree with the repository URL and the release; returns the files that
    were (with ``check``: that would be) changed."""
    import jupytext

    root = Path(root or book_files())
    changed: list[Path] = []
    for ipynb in chapters(root):
        nb = _split_lines(_updated_notebook(json.loads(ipynb.read_text()), ipynb.stem, root))
        _write_if_changed(ipynb, json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                          check, changed)
        py = ipynb.with_suffix(".py")
        if py.is_file():
            pair = _updated_notebook(jupytext.read(py), ipynb.stem, root)
            _write_if_changed(py, jupytext.writes(pair, fmt="py:percent"), check, changed)
    cfg = root / "_config.yml"
    new = re.sub(r"(?m)^(  branch:\s*).*$", rf"\g<1>{release_tag()}", cfg.read_text())
    _write_if_changed(cfg, new, check, changed)
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m amortlib.links", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    changed = sync(check=args.check)
    for path in changed:
        print(("out of date: " if args.check else "updated: ") + str(path))
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
