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

from .metrics import METRIC_COLUMNS, RUN_KEYS

SCHEMA_VERSION = 1
RUN_COLUMNS = RUN_KEYS + ["config", "final_epoch", "neg_elbo", "mse_train", "mse_test", "wall_s",
                          "diverged", "epochs_to_tol", "seconds_to_tol", "active_units", "kl_z"]


class ResultsError(ValueError):
    """A results file is missing, corrupt or inconsistent; the message names it."""


# ---------------------------------------------------------------- atomic writes
def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
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


def atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    import io
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_json(obj, path: Path) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())


# ---------------------------------------------------------------- units
def unit_name(dataset: str, likelihood: str, sigma: float) -> str:
    """File stem of one sweep unit, e.g. ``mnist-gaussian-s0.3`` or ``fashion_mnist-bernoulli``."""
    return f"{dataset}-{likelihood}" + (f"-s{sigma:g}" if likelihood == "gaussian" else "")


def save_unit(result, folder: Path, unit: str | None = None, recon: dict | None = None) -> Path:
    """Write one finished sweep (``SweepResult``) into ``folder/units``; the JSON goes last."""
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
    meta = dict(schema=SCHEMA_VERSION, unit=unit, config=cfg.to_dict(), info=result.info)
    atomic_write_json(meta, units / f"{unit}.json")
    return units / f"{unit}.json"


def unit_done(folder: Path, unit: str, config: dict | None = None) -> bool:
    """True when the unit's marker JSON exists and its data files are readable and valid.
    With ``config``, a finished unit made with other settings is an error, not a skip."""
    meta_path = Path(folder) / "units" / f"{unit}.json"
    if not meta_path.exists():
        return False
    meta = read_unit_meta(meta_path)
    if config is not None:
        ignore = {"progress", "data_root", "device"}
        mine = {k: v for k, v in config.items() if k not in ignore}
        theirs = {k: v for k, v in meta["config"].items() if k not in ignore}
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        if diff:
            raise ResultsError(
                f"{meta_path} was produced with other settings ({', '.join(f'{k}: {theirs.get(k)!r} there, {mine[k]!r} now' for k in diff)}); "
                f"write to another results folder (--out) or delete that unit")
    _read_parquet(meta_path.with_name(f"{unit}.metrics.parquet"), METRIC_COLUMNS)
    _read_parquet(meta_path.with_name(f"{unit}.runs.parquet"), RUN_COLUMNS)
    return True


def read_unit_meta(path: Path) -> dict:
    try:
        meta = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ResultsError(f"corrupt results file {path}: {err}") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA_VERSION or "config" not in meta:
        raise ResultsError(f"corrupt results file {path}: not a schema-{SCHEMA_VERSION} unit record")
    return meta


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
    return df


def load_results(folder: Path) -> dict:
    """All finished units of a results folder, validated:
    ``{"metrics": DataFrame, "runs": DataFrame, "meta": {unit: dict}, "folder": Path}``.
    Raises ``ResultsError`` naming the first corrupt file or duplicate key."""
    folder = Path(folder)
    metas = sorted((folder / "units").glob("*.json"))
    if not metas:
        raise ResultsError(f"no finished results in {folder} (expected {folder}/units/*.json); "
                           f"run `amortlib sweep` first")
    metrics, runs, meta = [], [], {}
    for mp in metas:
        m = read_unit_meta(mp)
        unit = mp.name[: -len(".json")]
        meta[unit] = m
        met = _read_parquet(mp.with_name(f"{unit}.metrics.parquet"), METRIC_COLUMNS)
        run = _read_parquet(mp.with_name(f"{unit}.runs.parquet"), RUN_COLUMNS)
        for df, keys, p in [(met, RUN_KEYS + ["epoch"], f"{unit}.metrics.parquet"),
                            (run, RUN_KEYS, f"{unit}.runs.parquet")]:
            dup = df.duplicated(keys)
            if dup.any():
                raise ResultsError(f"corrupt results file {mp.parent / p}: {int(dup.sum())} duplicate rows "
                                   f"for key ({', '.join(keys)})")
        metrics.append(met.assign(unit=unit))
        runs.append(run.assign(unit=unit))
    metrics, runs = pd.concat(metrics, ignore_index=True), pd.concat(runs, ignore_index=True)
    for df, keys, what in [(metrics, RUN_KEYS + ["epoch"], "metrics"), (runs, RUN_KEYS, "runs")]:
        dup = df.duplicated(keys)
        if dup.any():
            raise ResultsError(f"inconsistent results in {folder}: units overlap on {int(dup.sum())} {what} rows")
    return dict(metrics=metrics, runs=runs, meta=meta, folder=folder)


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
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").exists() and (checkout / "notebooks").is_dir():
        return checkout / "results"
    return Path.cwd() / "results"


def newest_results(root: Path | None = None) -> Path:
    """The results folder to show: ``$AMORTLIB_RESULTS`` if set, else the most recently
    finished of ``results/<profile>`` and ``results/published/<profile>``."""
    pinned = os.environ.get("AMORTLIB_RESULTS")
    if pinned:
        return Path(pinned)
    root = Path(root) if root else results_root()
    cands = [p for p in list(root.glob("*/units")) + list(root.glob("published/*/units"))
             if any(p.glob("*.json"))]
    if not cands:
        raise ResultsError(f"no results under {root}: run `amortlib sweep --profile quick`")
    newest = max(cands, key=lambda p: max(_finished_at(j) for j in p.glob("*.json")))
    return newest.parent


def _finished_at(meta_path: Path) -> float:
    try:
        return float(json.loads(meta_path.read_text())["info"].get("finished_at", meta_path.stat().st_mtime))
    except Exception:
        return meta_path.stat().st_mtime
