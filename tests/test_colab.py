"""Every chapter runs as a Colab user runs it: in an environment that holds only what Colab
preinstalls that matters here, the chapter's own install cell installs amortlib from the
repository at the release tag, then the whole chapter executes (papermill).

What stands in for Colab, and why:

- A fresh virtual environment (no checkout on its path, ``PYTHONPATH`` and the results
  variables unset, a temporary working folder as ``/content``).
- torch and torchvision, as Colab has them preinstalled: rather than a fresh multi-GB install,
  the environment gets the test interpreter's torch, torchvision and their own dependencies
  (numpy, pillow, sympy, the CUDA libraries, ...) through a ``.pth`` file naming a folder of
  symlinks to exactly those distributions. pip sees them as installed and leaves them alone; they
  sit outside the environment, so pip could never uninstall them. Seconds instead of minutes.
- The kernel packages at the versions Colab pins (``google-colab`` requires them; reported in
  public issue threads of 2024-2025): IPython 7.34.0, ipykernel 6.17.1, ipywidgets 7.7.1, and
  pip 24.1.2. The
  install must leave them in place (an upgrade there means "restart the runtime").
- ``google.colab``, imported at kernel start as in Colab, is a stand-in whose
  ``output.enable_custom_widget_manager()`` only records that it was called (the real one
  talks to Colab's front end).
- The repository is a local git repository of this working tree with the release tag, and each
  chapter's install URL (``git+https://github.com/...@vX``) is pointed at it
  (``git+file://...@vX``), nothing else of the cell changed.

Data: ``$AMORTLIB_DATA`` as for the other tests (Colab downloads it through torchvision).
The Python is this interpreter's (Colab's is 3.12; the symlinked torch is built for this one).
"""
from __future__ import annotations

import copy
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from amortlib import links

ROOT = Path(__file__).resolve().parent.parent
#: What Colab's runtime pins for its own kernel (see the module docstring).
COLAB_KERNEL = {"ipython": "7.34.0", "ipykernel": "6.17.1", "ipywidgets": "7.7.1"}
#: Colab's pip (2025): its requirement parser reads git+file:/// URLs, 23.x's does not.
COLAB_PIP = "pip==24.1.2"
PREINSTALLED = ("torch", "torchvision")
CHAPTERS = links.chapters(ROOT)

COLAB_STANDIN = '''\
"""Stand-in for Colab's google.colab.output (tests/test_colab.py): records the call only."""
import os


def enable_custom_widget_manager():
    with open(os.environ["COLAB_SIM_WIDGETS_MARKER"], "a") as f:
        f.write("enabled\\n")
'''


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"$ {' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _closure(names) -> list[md.Distribution]:
    """The installed distributions ``names`` need, themselves included."""
    seen, todo, out = set(), list(names), []
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        out.append(dist)
        for req in map(Requirement, dist.requires or []):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return out


def _link_preinstalled(site: Path, into: Path) -> list[str]:
    into.mkdir()
    names = []
    for dist in _closure(PREINSTALLED):
        names.append(dist.metadata["Name"])
        base = Path(dist.locate_file(""))
        for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if not (into / top).exists() and (base / top).exists():
                (into / top).symlink_to(base / top)
    (site / "colab-preinstalled.pth").write_text(str(into) + "\n")
    return names


def _release_repository(dest: Path) -> str:
    """A git repository of this working tree (tracked and new, not ignored files) with the
    release tag; returns its git+file URL."""
    files = _run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT).split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "commit.gpgsign=false"]
    _run([*git, "init", "-q"], cwd=dest)
    _run([*git, "add", "-A"], cwd=dest)
    _run([*git, "commit", "-q", "-m", "release"], cwd=dest)
    _run([*git, "tag", links.release_tag()], cwd=dest)
    return f"git+file://{dest}"


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout (the install cell installs from a git repository)")
    if shutil.which("git") is None:
        pytest.fail("needs git")
    tmp = tmp_path_factory.mktemp("colab")
    repo_url = _release_repository(tmp / "repository")
    env_dir = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(env_dir)])
    py = env_dir / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    linked = _link_preinstalled(site, tmp / "preinstalled")
    _run([str(py), "-m", "pip", "install", "-q", COLAB_PIP])
    _run([str(py), "-m", "pip", "install", "-q", *(f"{k}=={v}" for k, v in COLAB_KERNEL.items())])
    (site / "google" / "colab").mkdir(parents=True)
    (site / "google" / "colab" / "__init__.py").write_text("")
    (site / "google" / "colab" / "output.py").write_text(COLAB_STANDIN)
    ipython_dir = tmp / "ipython"
    (ipython_dir / "profile_default" / "startup").mkdir(parents=True)
    (ipython_dir / "profile_default" / "startup" / "00-colab.py").write_text("import google.colab\n")
    marker = tmp / "widgets-enabled"
    kernels = tmp / "jupyter" / "kernels" / "colab-sim"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(py), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab stand-in", "language": "python",
        "env": {"IPYTHONDIR": str(ipython_dir), "COLAB_SIM_WIDGETS_MARKER": str(marker)}}))
    content = tmp / "content"
    content.mkdir()
    before = _versions(py)
    return dict(py=py, repo_url=repo_url, jupyter_path=str(tmp / "jupyter"), marker=marker,
                content=content, linked=linked, before=before, site=site)


def _versions(py) -> dict:
    out = _run([str(py), "-c", "import json, importlib.metadata as m; print(json.dumps("
                "{d.metadata['Name'].lower(): (d.version, str(d.locate_file(''))) for d in m.distributions()}))"])
    return json.loads(out)


@pytest.fixture
def colab_env(monkeypatch, colab):
    """The process environment papermill starts the kernel with: no checkout anywhere."""
    for var in ("PYTHONPATH", "AMORTLIB_RESULTS", "AMORTLIB_RESULTS_ROOT", "AMORTLIB_BOOK_ROOT",
                "VIRTUAL_ENV", "JUPYTER_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JUPYTER_PATH", colab["jupyter_path"])
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    return colab


@pytest.mark.slow
@pytest.mark.parametrize("ipynb", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_in_colab_after_its_install_cell(ipynb, colab_env, tmp_path):
    import nbformat
    import papermill as pm

    colab = colab_env
    nb = nbformat.read(ipynb, as_version=4)
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    install = next(c for c in nb.cells if c.cell_type == "code")
    published = f"git+{links.repository_url(ROOT)}@{links.release_tag()}"
    assert install.source.count(published) == 1, f"{ipynb.name}: the install cell does not install {published}"
    install.source = install.source.replace(published, f"{colab['repo_url']}@{links.release_tag()}")
    colab["marker"].unlink(missing_ok=True)

    out = tmp_path / ipynb.name
    pm.execute_notebook(nb, str(out), kernel_name="colab-sim", cwd=str(colab["content"]),
                        progress_bar=False, request_save_on_cell_execute=False,
                        execution_timeout=900)

    assert colab["marker"].read_text().count("enabled") == 1, "the widget manager was not enabled"
    where = _run([str(colab["py"]), "-c", "import amortlib, amortlib.paths as p; "
                  "print(amortlib.__file__); print(p.checkout())"], cwd=colab["content"]).split()
    assert where[0].startswith(str(colab["site"])) and where[1] == "None", where
    after = _versions(colab["py"])
    for name in [*COLAB_KERNEL, *(n.lower() for n in colab["linked"])]:
        assert after.get(name) == colab["before"].get(name), \
            f"the install replaced Colab's {name}: {colab['before'].get(name)} -> {after.get(name)}"
    executed = nbformat.read(out, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors


@pytest.mark.slow
def test_installed_package_runs_a_sweep_and_has_the_whole_book(colab_env, tmp_path):
    """A non-editable install (the one the chapters' install cell made, or makes now) runs
    `amortlib sweep` and holds every file the book build reads."""
    colab = colab_env
    py = colab["py"]
    if "amortlib" not in _versions(py):
        _run([str(py), "-m", "pip", "install", "-q", f"amortlib @ {colab['repo_url']}@{links.release_tag()}"])
    amortlib_cmd = py.parent / "amortlib"
    _run([str(amortlib_cmd), "sweep", "--profile", "test", "--dataset", "mnist", "--no-progress"],
         cwd=tmp_path)
    units = sorted(p.name for p in (tmp_path / "results" / "test" / "units").glob("*.json"))
    assert units == ["mnist-gaussian-s0.3.json"], units
    assert (tmp_path / "results" / "test" / "runs" / "mnist-gaussian-s0.3.ipynb").is_file()

    copy_dir = tmp_path / "book"
    _run([str(py), "-c", f"from amortlib.paths import prepare_book_copy; prepare_book_copy({str(copy_dir)!r})"])
    tracked = _run(["git", "ls-files", "_config.yml", "_toc.yml", "book", "notebooks",
                    "results/published"], cwd=ROOT).split()
    missing = [f for f in tracked if not (copy_dir / f).is_file()]
    assert not missing, f"files of the book missing from the installed package: {missing}"
