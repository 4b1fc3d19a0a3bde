"""Glue for the experiment notebook (chapter 4): its papermill parameters -> a validated config,
and the side channel through which a notebook run by ``amortlib sweep`` reports its progress.

This module is light on purpose (no torch, no pandas): the CLI validates its arguments through
it before anything heavy is imported.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re

from .config import SweepConfig

#: Parameters of the notebook that are not SweepConfig fields.
NOTEBOOK_ONLY = ("profile", "output", "unit")
#: Set by the runner for the kernel it starts: the file the kernel's epoch progress goes to.
PROGRESS_ENV = "AMORTLIB_PROGRESS_FILE"
_UNIT_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


def unit_name(dataset: str, likelihood: str, sigma: float) -> str:
    """File stem of one sweep unit, e.g. ``mnist-gaussian-s0.3`` or ``fashion_mnist-bernoulli``."""
    return f"{dataset}-{likelihood}" + (f"-s{sigma:g}" if likelihood == "gaussian" else "")


def experiment_config(params: dict) -> tuple[SweepConfig, str | None, str | None]:
    """``params``: the names set by the notebook's ``parameters`` cell and by papermill.
    ``None`` means "the profile's value". Unknown names and bad values raise ValueError
    naming the parameter, before anything trains (the data split sizes included)."""
    params = dict(params)
    known = {f.name for f in dataclasses.fields(SweepConfig)} | set(NOTEBOOK_ONLY)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}: expected names from "
                         + ", ".join(sorted(known)))
    profile = params.pop("profile", "quick")
    output, unit = params.pop("output", None), params.pop("unit", None)
    if output is not None and not isinstance(output, (str, os.PathLike)):
        raise ValueError(f"output={output!r} is invalid: expected a folder path or None")
    if unit is not None and (not isinstance(unit, str) or not _UNIT_RE.match(unit)):
        raise ValueError(f"unit={unit!r} is invalid: expected a file stem of letters, digits, '_', '.', "
                         f"'+' or '-' (or None)")
    overrides = {k: (tuple(v) if isinstance(v, list) else v)
                 for k, v in _lists_from_json(params).items() if v is not None}
    cfg = SweepConfig.from_profile(profile, **overrides)
    path = os.environ.get(PROGRESS_ENV)
    if path and cfg.progress:
        route_progress_to_file(path)
    return cfg, (None if output is None else os.fspath(output)), unit


#: Parameters that take a list (papermill's ``-p`` passes text: give it as JSON).
LIST_PARAMS = tuple(f.name for f in dataclasses.fields(SweepConfig) if isinstance(f.default, tuple))


def _lists_from_json(params: dict) -> dict:
    """``papermill -p widths '[1, 16]'`` passes the text ``'[1, 16]'``: read it as JSON. Other
    text for a list parameter (``1,16``) is an error that says how to pass a list."""
    out = dict(params)
    for name in LIST_PARAMS:
        value = out.get(name)
        if not isinstance(value, str) or (name == "families" and not value.lstrip().startswith("[")):
            continue  # families also takes one name
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, list):
            example = '["amortized", "constant"]' if name == "families" else "[1, 16]"
            raise ValueError(f"{name}={value!r} is invalid: expected a list, as JSON with papermill's -p "
                             f"(-p {name} '{example}') or as YAML with -y (-y '{name}: {example}')")
        out[name] = parsed
    return out


# ---------------------------------------------------------------- progress side channel
def write_progress(path: str, state: dict) -> None:
    """Replace ``path`` with ``state`` as JSON (temp file + rename: readers never see half)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)


def read_progress(path) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def route_progress_to_file(path: str) -> None:
    """Inside a kernel started by ``amortlib sweep``: make the training loop's progress bar
    (``tqdm.auto``) write its state to ``path`` for the runner to show on the terminal, instead
    of drawing a widget or text into the executed notebook (which is kept as provenance)."""
    import tqdm.auto
    import tqdm.std

    class FileProgress(tqdm.std.tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["file"] = open(os.devnull, "w")   # the bar itself draws nowhere
            kwargs["dynamic_ncols"] = False
            kwargs["ncols"] = 80
            super().__init__(*args, **kwargs)

        def display(self, msg=None, pos=None):
            d = self.format_dict
            try:
                write_progress(path, dict(n=d["n"], total=d["total"], elapsed=d["elapsed"],
                                          desc=d.get("prefix") or "", postfix=d.get("postfix") or ""))
            except OSError:
                pass
            return True

        def close(self):
            fp = self.fp
            try:
                super().close()
            finally:
                try:
                    fp.close()
                except Exception:
                    pass

    tqdm.auto.tqdm = FileProgress
