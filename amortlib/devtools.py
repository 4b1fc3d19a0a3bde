"""Maintainer helpers: sync a notebook from its Jupytext twin and execute it in place
(outputs and widget state stored, for the book and the nbval regression tests). The results
chapter reads the results committed with the book (``results/published/quick``, as the tests
do) unless ``AMORTLIB_RESULTS`` says otherwise.

    python -m amortlib.devtools notebooks/04_experiment.py [...]
"""
from __future__ import annotations

import sys
from pathlib import Path


def execute(py_path: str, timeout: int = 1800) -> Path:
    import os

    import jupytext
    import nbclient

    from .results import results_root

    py = Path(py_path)
    os.environ.setdefault("AMORTLIB_RESULTS", str(results_root() / "published" / "quick"))  # the kernel inherits it
    nb = jupytext.read(py)
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(py.parent)}}).execute()
    out = py.with_suffix(".ipynb")
    jupytext.write(nb, out)
    return out


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print("executed", execute(p))
