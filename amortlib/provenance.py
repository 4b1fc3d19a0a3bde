"""What a run was made with, and executed notebooks that name no machine.

``record(cfg)`` is stored with every saved unit (``info["provenance"]`` of its JSON, see the
experiment notebook) and in the metadata of its executed notebook (``metadata.amortlib``):

- ``amortlib``: the package version; ``git_commit`` (and ``git_dirty``) of the checkout it ran
  from, or the commit pip recorded when it was installed from the repository, else None;
- ``python`` and ``dependencies_sha256``: SHA-256 of the sorted ``name==version`` lines of
  every installed distribution (``dependencies``: how many), so two runs made with the same
  environment have the same digest;
- ``data_sha256``: SHA-256 of each data file the unit read (paths relative to the data folder).

``clean_notebook`` replaces the absolute paths that papermill records (``input_path``,
``output_path``, the ``output`` parameter, also in the injected parameters cell) by the same
paths relative to the checkout, or to the working folder, or from their ``results/`` part: they
named the machine, not the run. A notebook that ``amortlib sweep`` executed from chapter 4's
Jupytext source records it as ``notebooks/04_experiment.py`` instead of the whole notebook.

    python -m amortlib.provenance clean results/published/quick/runs/*.ipynb
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from . import __version__
from .paths import checkout

#: The experiment notebook's tracked source, as the provenance names it.
EXPERIMENT_SOURCE = "notebooks/04_experiment.py"


def _git(*args) -> str | None:
    root = checkout()
    if root is None or not (root / ".git").exists():
        return None
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def source_commit() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the code that runs: the checkout's HEAD and whether tracked files
    differ from it; for an installed package, the commit pip recorded (dirty unknown)."""
    commit = _git("rev-parse", "HEAD")
    if commit:
        return commit, bool(_git("status", "--porcelain", "--untracked-files=no"))
    try:
        direct = json.loads(md.distribution("amortlib").read_text("direct_url.json") or "{}")
    except (md.PackageNotFoundError, ValueError):
        direct = {}
    return direct.get("vcs_info", {}).get("commit_id"), None


def dependency_lines() -> list[str]:
    names = {}
    for dist in md.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name:
            names[name] = f"{name}=={dist.version}"
    return sorted(names.values())


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_sha256(dataset: str, root=None) -> dict[str, str]:
    """SHA-256 of the train and test files of ``dataset`` in the data folder."""
    from .data import RAW_FILES, TV_CLASS, data_root

    base = data_root(root)
    out = {}
    for split in ("train", "test"):
        for name in RAW_FILES[split]:
            path = base / TV_CLASS[dataset] / "raw" / name
            if path.is_file():
                st = path.stat()
                out[f"{TV_CLASS[dataset]}/raw/{name}"] = _file_sha256(str(path), st.st_size, st.st_mtime_ns)
    return out


def record(cfg) -> dict:
    """The provenance of a run of ``cfg`` (a SweepConfig) in this environment."""
    commit, dirty = source_commit()
    deps = dependency_lines()
    return {
        "amortlib": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "dependencies": len(deps),
        "dependencies_sha256": hashlib.sha256("\n".join(deps).encode()).hexdigest(),
        "data_sha256": data_sha256(cfg.dataset, cfg.data_root),
    }


# ---------------------------------------------------------------- neutral paths
def neutral_path(path) -> str:
    """``path`` relative to the checkout, else to the working folder, else from its last
    ``results`` part, else its name; relative paths are kept."""
    p = Path(os.fspath(path))
    if not p.is_absolute():
        return p.as_posix()
    for base in (checkout(), Path.cwd()):
        if base is not None:
            try:
                return p.resolve().relative_to(base.resolve()).as_posix() or "."
            except ValueError:
                pass
    parts = p.parts
    if "results" in parts:
        i = len(parts) - 1 - parts[::-1].index("results")
        return Path(*parts[i:]).as_posix()
    return p.name


def _is_abs_path(value) -> bool:
    return isinstance(value, str) and value.startswith("/") and "\n" not in value


def clean_notebook(nb: dict, unit: str | None = None, provenance: dict | None = None) -> dict:
    """``nb`` (an executed notebook, as JSON) with neutral paths and, if given, the run's
    provenance in ``metadata.amortlib``. Only metadata and the injected parameters change."""
    meta = nb.setdefault("metadata", {})
    pm = meta.get("papermill")
    renames = {}
    if isinstance(pm, dict):
        params = pm.get("parameters")
        if isinstance(params, dict):
            for k, v in params.items():
                if _is_abs_path(v):
                    renames[v] = params[k] = neutral_path(v)
        src = pm.get("input_path")
        if isinstance(src, dict) or (isinstance(src, str) and src.lstrip().startswith("{")):
            pm["input_path"] = EXPERIMENT_SOURCE   # the runner executed the Jupytext source
        elif _is_abs_path(src):
            pm["input_path"] = neutral_path(src)
        dst = pm.get("output_path")
        if _is_abs_path(dst):
            name = f"{unit}.ipynb" if unit else Path(dst).name
            folder = params.get("output") if isinstance(params, dict) else None
            where = Path(folder) / "runs" if folder else Path(neutral_path(dst)).parent
            pm["output_path"] = (where / name).as_posix()
        env = pm.get("environment_variables")
        if isinstance(env, dict):
            for k, v in env.items():
                if _is_abs_path(v):
                    env[k] = neutral_path(v)
    for cell in nb.get("cells", []):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            for old, new in renames.items():
                src = src.replace(json.dumps(old), json.dumps(new)).replace(repr(old), repr(new))
            cell["source"] = src.splitlines(keepends=True) if isinstance(cell["source"], list) else src
    if provenance:
        meta.setdefault("amortlib", {})["provenance"] = provenance
    return nb


def finish_run_notebook(path: Path, out: Path, unit: str) -> None:
    """For the runner, once a unit's notebook has executed: clean its paths and copy in the
    provenance its unit record holds (rewritten atomically in place)."""
    from .results import atomic_write_bytes

    path = Path(path)
    nb = json.loads(path.read_text())
    try:
        prov = json.loads((Path(out) / "units" / f"{unit}.json").read_text())["info"].get("provenance")
    except (OSError, ValueError, KeyError, AttributeError):
        prov = None
    nb = clean_notebook(nb, unit, prov)
    atomic_write_bytes(path, (json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode())


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m amortlib.provenance",
                                     description="Replace the absolute paths in executed notebooks.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_clean = sub.add_parser("clean", help="neutral paths in executed notebooks, in place")
    p_clean.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    from .results import atomic_write_bytes

    for path in args.notebooks:
        text = path.read_text()
        unit = path.name.removesuffix(".ipynb")
        new = json.dumps(clean_notebook(json.loads(text), unit), indent=1, sort_keys=True,
                         ensure_ascii=False) + "\n"
        if new != text:
            atomic_write_bytes(path, new.encode())
            print(f"cleaned {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
