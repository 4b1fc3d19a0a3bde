"""Where the book's own files are: the source checkout amortlib runs from, or the copies
shipped inside the installed package.

A source checkout (``pip install -e .``, the Makefile) has them in the repository. An installed
amortlib (Colab, Binder, ``pip install "amortlib @ git+<repository>@v<version>"``) carries them
as package data in ``amortlib/_book/``, laid out as in the repository (see ``pyproject.toml``):

- ``notebooks/``: the chapters; chapter 4 (``04_experiment``) is what ``amortlib sweep`` executes,
- ``results/published/<profile>/``: the results committed with the book, which chapter 5 shows
  when there are none of the reader's own,
- ``_config.yml``, ``_toc.yml``, ``book/``: what ``python -m amortlib.book build`` needs. The
  installed files are read-only in spirit, so the book is built in a copy of them in the
  working folder (``./amortlib-book``, or ``$AMORTLIB_BOOK_ROOT``).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
#: The book's files shipped with an installed amortlib (absent in a source checkout).
SHIPPED = PACKAGE / "_book"
#: Set by ``python -m amortlib.book build`` for its Sphinx process: the book being built.
BOOK_ROOT_ENV = "AMORTLIB_BOOK_ROOT"
#: Where an installed amortlib builds its book, below the working folder.
BOOK_COPY = "amortlib-book"


def checkout() -> Path | None:
    """The source checkout amortlib is imported from, or None for an installed package."""
    root = PACKAGE.parent
    if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir():
        return root
    return None


def book_files() -> Path:
    """The folder laid out as the repository (``notebooks/``, ``results/published/``, ...):
    the checkout, else the installed package's copy (which may be missing, if amortlib was
    installed some other way; :func:`prepare_book_copy` and the runner say so)."""
    root = checkout()
    return root if root is not None else SHIPPED


def experiment_notebook() -> Path:
    """Chapter 4, the notebook ``amortlib sweep`` executes (its ``.ipynb``)."""
    return book_files() / "notebooks" / "04_experiment.ipynb"


def published_results() -> Path:
    """The folder holding the results committed with the book, one ``<profile>`` folder each."""
    return book_files() / "results" / "published"


def book_root() -> Path:
    """The book that ``python -m amortlib.book`` builds: ``$AMORTLIB_BOOK_ROOT``, else the
    checkout, else ``./amortlib-book`` (made by :func:`prepare_book_copy`)."""
    if os.environ.get(BOOK_ROOT_ENV):
        return Path(os.environ[BOOK_ROOT_ENV]).resolve()
    root = checkout()
    return root if root is not None else Path.cwd() / BOOK_COPY


def prepare_book_copy(dest: Path) -> Path:
    """Copy the installed book's files into ``dest`` (a checkout needs no copy: returned as
    is). Files already there are replaced by the installed version; builds and caches stay."""
    dest = Path(dest)
    src = book_files()
    if src.resolve() == dest.resolve():
        return dest
    if not (src / "_config.yml").is_file():
        raise FileNotFoundError(f"amortlib is installed without the book's files ({src} is missing): "
                                f"reinstall it from the repository, or work in a source checkout")
    for path in sorted(src.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.name != "__init__.py":
            target = dest / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return dest
