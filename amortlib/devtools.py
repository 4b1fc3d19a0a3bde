"""Maintainer helpers: execute a chapter from its Jupytext twin in place (outputs and widget
state stored, for the book and the nbval regression tests), and run those regression tests.
The results chapter reads the results committed with the book (``results/published/quick``,
as the tests do) unless ``AMORTLIB_RESULTS`` says otherwise.

    python -m amortlib.devtools notebooks/04_experiment.py [...]     # re-execute, store outputs
    python -m amortlib.devtools nbval [pytest args]                   # compare them (make test)

Both run the kernels under ``REPRODUCIBLE_NUMERICS`` (one thread), so the stored outputs do not
depend on the machine's core count. What they still depend on: a few cells train models for
hundreds of optimiser steps (chapter 6's per-image fits of q(z), chapter 7's nonlinear and saw
encoders), and their printed numbers move in the third digit with the last bits of the
arithmetic, which differ between CPUs (MKL's and ATen's kernels are chosen per instruction set:
the recorded outputs of those cells failed on another CI machine. Pinning the kernels with
MKL_CBWR / ATEN_CPU_CAPABILITY made a run 2-3x slower, and under an emulated AVX2 CPU MKL's
vector log and sqrt still gave other last bits). Those cells carry the
``nbval-ignore-output`` tag: nbval still executes them (an error fails the test), and their
science is asserted with tolerances in ``tests/test_theory.py`` and ``tests/test_gap.py``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: Environment of the kernels that record and check the chapters' outputs: one thread (float
#: reductions are split by thread, so the last digits depend on the thread count).
REPRODUCIBLE_NUMERICS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _numerics_env() -> None:
    """Set ``REPRODUCIBLE_NUMERICS`` (and the published results) in this process's
    environment, which every kernel started from it inherits."""
    from .results import results_root

    os.environ.update(REPRODUCIBLE_NUMERICS)
    os.environ.setdefault("AMORTLIB_RESULTS", str(results_root() / "published" / "quick"))


def execute(py_path: str, timeout: int = 1800) -> Path:
    import jupytext
    import nbclient

    _numerics_env()
    py = Path(py_path)
    nb = jupytext.read(py)
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(py.parent)}}).execute()
    out = py.with_suffix(".ipynb")
    jupytext.write(nb, out)
    return out


def nbval(args: list[str]) -> int:
    """pytest --nbval on the chapters (``notebooks`` unless paths are given), with the
    project's sanitizers, under ``REPRODUCIBLE_NUMERICS``."""
    _numerics_env()
    root = Path(__file__).resolve().parents[1]
    paths = [a for a in args if not a.startswith("-")] or [str(root / "notebooks")]
    opts = [a for a in args if a.startswith("-")]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", *paths,
           "--nbval-sanitize-with", str(root / "tests" / "nbval_sanitize.cfg"), *opts]
    return subprocess.call(cmd)


if __name__ == "__main__":
    if sys.argv[1:2] == ["nbval"]:
        sys.exit(nbval(sys.argv[2:]))
    for p in sys.argv[1:]:
        print("executed", execute(p))
