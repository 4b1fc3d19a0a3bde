"""Results on disk: crash-safe writes, resumable units, validated reads.

Layout of a results folder (e.g. ``results/quick``)::

    units/<unit>.metrics.parquet   tidy per-epoch metrics of one sweep unit (all its models)
    units/<unit>.runs.parquet      one row per model: final metrics, time to tolerance, latent use
    units/<unit>.recon.npz         a few images and each configuration's reconstructions
    units/<unit>.json              config, machine, timings; written LAST: it marks the unit done
    runs/<unit>.ipynb              the executed experiment notebook (provenance)

Every file is written to a temporary name, fsynced and renamed, so a killed process leaves
either the old state or the new one, never half a file. Reading validates the schema and
rejects duplicate keys, naming the bad file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .experiment import unit_name  # noqa: F401  (part of this module's API)
from .metrics import METRIC_COLUMNS, RUN_KEYS, mark_blowups

SCHEMA_VERSION = 1
RUN_COLUMNS = RUN_KEYS + ["config", "final_epoch", "neg_elbo", "mse_train", "mse_test", "wall_s",
                          "diverged", "epochs_to_tol", "seconds_to_tol", "active_units", "kl_z"]


class ResultsError(ValueError):
    """A results file is missing, corrupt or inconsistent; the message names it."""


# ---------------------------------------------------------------- atomic writes
def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically: temp file in the same folder, fsync, rename.
    The file gets the usual permissions (0666 less the umask), not the temp file's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    import io
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_json(obj, path: Path) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())


# ---------------------------------------------------------------- units
def save_unit(result, folder: Path, unit: str | None = None, recon: dict | None = None,
              tables: dict | None = None) -> Path:
    """Write one finished sweep (``SweepResult``) into ``folder/units``; the JSON goes last.
    ``tables``: further frames saved as ``<unit>.<name>.parquet`` (e.g. ``{"gap": ...}``)."""
    cfg = result.cfg
    unit = unit or unit_name(cfg.dataset, cfg.likelihood, cfg.sigma)
    units = Path(folder) / "units"
    atomic_write_parquet(result.metrics, units / f"{unit}.metrics.parquet")
    atomic_write_parquet(result.runs, units / f"{unit}.runs.parquet")
    if recon is not None:
        import io
        buf = io.BytesIO()
        np.savez_compressed(buf, **recon)
        atomic_write_bytes(units / f"{unit}.recon.npz", buf.getvalue())
    for name, df in (tables or {}).items():
        atomic_write_parquet(df, units / f"{unit}.{name}.parquet")
    meta = dict(schema=SCHEMA_VERSION, unit=unit, config=cfg.to_dict(), info=result.info,
                tables=sorted(tables or {}))
    atomic_write_json(meta, units / f"{unit}.json")
    return units / f"{unit}.json"


def clean_partial_writes(folder: Path) -> list[Path]:
    """Remove the temporary files of writes that a killed process left half done."""
    gone = []
    for tmp in (Path(folder) / "units").glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        gone.append(tmp)
    return gone


def discard_unfinished(folder: Path, unit: str) -> list[Path]:
    """Remove the files of ``unit`` when its marker JSON (written last) is absent: what a unit
    stopped half-way through writing left. Readers never see them (they go by the marker);
    this keeps the folder holding whole units only."""
    units = Path(folder) / "units"
    if (units / f"{unit}.json").exists():
        return []
    gone = sorted(units.glob(f"{unit}.*"))
    for f in gone:
        f.unlink(missing_ok=True)
    return gone


#: Settings that do not change the numbers: a finished unit made with other values is reused.
_NOT_RESULTS = {"progress", "data_root", "device", "profile"}
#: Settings added after results were first published, with the value that reproduces what the
#: code did before them: a unit record without one reads as made with that value.
ADDED_SETTINGS = {"local_lr": None, "warmup_epochs": 0, "lr_decay": "none"}


def unit_done(folder: Path, unit: str, config: dict | None = None) -> bool:
    """True when the unit's marker JSON exists and its data files are readable and valid.
    With ``config``, a finished unit made with other settings is an error, not a skip."""
    meta_path = Path(folder) / "units" / f"{unit}.json"
    if not meta_path.exists():
        return False
    meta = read_unit_meta(meta_path)
    if config is not None:
        mine = {k: v for k, v in config.items() if k not in _NOT_RESULTS}
        theirs = {k: v for k, v in meta["config"].items() if k not in _NOT_RESULTS}
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        if diff:
            raise ResultsError(
                f"{meta_path} was produced with other settings ({', '.join(f'{k}: {theirs.get(k)!r} there, {mine[k]!r} now' for k in diff)}); "
                f"write to another results folder (--out) or delete that unit")
    try:
        read_unit(meta_path.parent.parent, unit)
    except ResultsError as err:
        raise ResultsError(f"{err}; delete {meta_path.parent / unit}.* to redo that unit") from None
    return True


def read_unit_meta(path: Path) -> dict:
    try:
        meta = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ResultsError(f"corrupt results file {path}: {err}") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA_VERSION or not isinstance(meta.get("config"), dict):
        raise ResultsError(f"corrupt results file {path}: not a schema-{SCHEMA_VERSION} unit record")
    unit = Path(path).name[: -len(".json")]
    if meta.get("unit") != unit:
        raise ResultsError(f"corrupt results file {path}: it records unit {meta.get('unit')!r}, its name says {unit!r}")
    if not isinstance(meta.get("info", {}), dict):
        raise ResultsError(f"corrupt results file {path}: its 'info' is not a record")
    meta.setdefault("info", {})
    meta["config"] = {**ADDED_SETTINGS, **meta["config"]}
    return meta


#: Column kinds checked on read: b bool, i integer, f float (or integer), O text.
_KINDS = {"dataset": "O", "likelihood": "O", "sigma": "f", "family": "O", "width": "i", "seed": "i",
          "config": "O", "epoch": "i", "final_epoch": "i", "neg_elbo": "f", "mse_train": "f",
          "mse_test": "f", "wall_s": "f", "sweep_wall_s": "f", "diverged": "b",
          "epochs_to_tol": "f", "seconds_to_tol": "f", "active_units": "i", "kl_z": "f"}
_NULLABLE = {"width", "neg_elbo", "mse_train", "mse_test", "wall_s", "sweep_wall_s", "epochs_to_tol",
             "seconds_to_tol", "kl_z"}


def _kind_ok(series: pd.Series, kind: str) -> bool:
    from pandas.api import types as t
    if kind == "b":
        return t.is_bool_dtype(series)
    if kind == "i":
        return t.is_integer_dtype(series) or (series.isna().all() and len(series) > 0)
    if kind == "f":
        return t.is_numeric_dtype(series) and not t.is_bool_dtype(series)
    return t.is_object_dtype(series) or t.is_string_dtype(series)


def _read_parquet(path: Path, columns, keys=None) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except FileNotFoundError:
        raise ResultsError(f"missing results file {path}") from None
    except Exception as err:  # pyarrow raises several types for damaged files
        raise ResultsError(f"corrupt results file {path}: {type(err).__name__}: {err}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ResultsError(f"corrupt results file {path}: missing columns {', '.join(missing)}")
    if df.empty:
        raise ResultsError(f"corrupt results file {path}: no rows")
    bad = [f"{c} ({df[c].dtype})" for c in columns if c in _KINDS and not _kind_ok(df[c], _KINDS[c])]
    if bad:
        raise ResultsError(f"corrupt results file {path}: wrong column types: {', '.join(bad)}")
    nulls = [c for c in columns if c not in _NULLABLE and df[c].isna().any()]
    if nulls:
        raise ResultsError(f"corrupt results file {path}: missing values in {', '.join(nulls)}")
    if keys:
        dup = df.duplicated(keys)
        if dup.any():
            raise ResultsError(f"corrupt results file {path}: {int(dup.sum())} duplicate rows for key "
                               f"({', '.join(keys)})")
    return df


def read_unit(folder: Path, unit: str) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """One finished unit, validated: (meta, metrics, runs). ``ResultsError`` names the bad file."""
    units = Path(folder) / "units"
    meta = read_unit_meta(units / f"{unit}.json")
    met_path, run_path = units / f"{unit}.metrics.parquet", units / f"{unit}.runs.parquet"
    met = _read_parquet(met_path, METRIC_COLUMNS, RUN_KEYS + ["epoch"])
    run = _read_parquet(run_path, RUN_COLUMNS, RUN_KEYS)
    cfg = meta["config"]
    for path, df in [(met_path, met), (run_path, run)]:
        for col in ["dataset", "likelihood"]:
            other = sorted(set(df[col]) - {cfg.get(col)})
            if other:
                raise ResultsError(f"corrupt results file {path}: rows for {col} {', '.join(map(repr, other))} "
                                   f"in a unit recorded as {cfg.get(col)!r}")
    key = lambda df: set(map(tuple, df[["config", "seed"]].astype(str).values.tolist()))
    if key(met) != key(run):
        raise ResultsError(f"inconsistent results files {met_path} and {run_path}: they hold different models")
    return meta, met, run


def load_results(folder: Path, errors: str = "raise") -> dict:
    """All finished units of a results folder, validated:
    ``{"metrics": DataFrame, "runs": DataFrame, "meta": {unit: dict}, "folder": Path,
    "problems": [str]}``.

    ``errors="raise"`` (default): ``ResultsError`` naming the first corrupt file or duplicate
    key. ``errors="skip"``: bad units are left out and described in ``problems``."""
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors={errors!r} is invalid: expected 'raise' or 'skip'")
    folder = Path(folder)
    metas = sorted((folder / "units").glob("*.json"))
    if not metas:
        raise ResultsError(f"no finished results in {folder} (expected {folder}/units/*.json); "
                           f"run `amortlib sweep` first")
    metrics, runs, meta, problems = [], [], {}, []
    for mp in metas:
        unit = mp.name[: -len(".json")]
        try:
            m, met, run = read_unit(folder, unit)
        except ResultsError as err:
            if errors == "raise":
                raise
            problems.append(str(err))
            continue
        meta[unit] = m
        metrics.append(met.assign(unit=unit))
        runs.append(run.assign(unit=unit))
    if not meta:
        raise ResultsError(f"no readable results in {folder}: " + "; ".join(problems))
    metrics, runs = pd.concat(metrics, ignore_index=True), pd.concat(runs, ignore_index=True)
    for df, keys, what in [(metrics, RUN_KEYS + ["epoch"], "metrics"), (runs, RUN_KEYS, "runs")]:
        dup = df.duplicated(keys, keep=False)
        if dup.any():
            units = ", ".join(sorted(df.loc[dup, "unit"].unique()))
            raise ResultsError(f"inconsistent results in {folder}: units {units} overlap on "
                               f"{int(df.duplicated(keys).sum())} {what} rows")
    metrics, runs = mark_blowups(metrics, runs)
    return dict(metrics=metrics, runs=runs, meta=meta, folder=folder, problems=problems,
                gap=_optional_table(folder, meta, "gap"), final=_optional_table(folder, meta, "final"),
                audit=_optional_table(folder, meta, "audit"))


def _optional_table(folder: Path, meta: dict, name: str) -> pd.DataFrame | None:
    """The ``<unit>.<name>.parquet`` frames of the units whose record lists ``name``, joined."""
    frames = []
    for unit, m in meta.items():
        if name in m.get("tables", []):
            path = Path(folder) / "units" / f"{unit}.{name}.parquet"
            frames.append(_read_parquet(path, ["config", "seed"]).assign(unit=unit))
    return pd.concat(frames, ignore_index=True) if frames else None


def load_recon(folder: Path, unit: str) -> dict:
    path = Path(folder) / "units" / f"{unit}.recon.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ResultsError(f"missing results file {path}") from None
    except Exception as err:
        raise ResultsError(f"corrupt results file {path}: {err}") from None


# ---------------------------------------------------------------- finding results
def results_root() -> Path:
    """Folder holding the ``<profile>`` results folders: ``$AMORTLIB_RESULTS_ROOT``, else the
    checkout's ``results/`` when amortlib runs from a source checkout (so notebooks executed in
    ``notebooks/`` find it), else ``./results``."""
    if os.environ.get("AMORTLIB_RESULTS_ROOT"):
        return Path(os.environ["AMORTLIB_RESULTS_ROOT"])
    from .paths import checkout
    root = checkout()
    return root / "results" if root is not None else Path.cwd() / "results"


def is_published(folder: Path) -> bool:
    """Whether ``folder`` holds results committed with the book (``results/published/<profile>``),
    as opposed to a reader's own run."""
    return Path(folder).resolve().parent.name == "published"


def newest_results(root: Path | None = None) -> Path:
    """The results folder to show: ``$AMORTLIB_RESULTS`` if set, else the most recently
    finished of ``results/<profile>`` and ``results/published/<profile>`` (for an installed
    amortlib, also the published results installed with it)."""
    pinned = os.environ.get("AMORTLIB_RESULTS")
    if pinned:
        return Path(pinned)
    root = Path(root) if root else results_root()
    from .paths import published_results  # the checkout's, or those installed with the package
    found = [*root.glob("*/units"), *root.glob("published/*/units"), *published_results().glob("*/units")]
    cands = [p for p in dict.fromkeys(p.resolve() for p in found) if any(p.glob("*.json"))]
    if not cands:
        raise ResultsError(f"no results under {root}: run `amortlib sweep --profile quick`")
    newest = max(cands, key=lambda p: max(_finished_at(j) for j in p.glob("*.json")))
    return newest.parent


def _finished_at(meta_path: Path) -> float:
    try:
        return float(json.loads(meta_path.read_text())["info"].get("finished_at", meta_path.stat().st_mtime))
    except Exception:
        return meta_path.stat().st_mtime
