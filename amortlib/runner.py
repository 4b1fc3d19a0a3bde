"""Run a profile's sweep: one papermill execution of the experiment notebook per unit
(dataset x likelihood setting), each kept as provenance, resumable, one writer at a time."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from filelock import FileLock, Timeout

from .config import DATASETS, PROFILES, SweepConfig
from .results import ResultsError, unit_done, unit_name

#: Likelihood settings each profile sweeps: the first is the book's headline setting, the rest
#: form the likelihood-scale study (does the latent get used at all?).
VARIANTS = {
    "quick": [("gaussian", 0.1), ("gaussian", 0.3), ("gaussian", 1.0), ("bernoulli", 1.0)],
    "paper": [("gaussian", 1.0)],
    "test": [("gaussian", 0.3)],
}
EXPERIMENT = Path(__file__).resolve().parent.parent / "notebooks" / "04_experiment.ipynb"


class SweepLocked(RuntimeError):
    """Another sweep is writing into the same results folder."""


def plan(profile: str = "quick", datasets=None, variants=None, **overrides) -> list[tuple[str, SweepConfig]]:
    """The units of a sweep, validated before anything runs: [(unit name, config)]."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is invalid: expected one of {', '.join(PROFILES)}")
    datasets = list(DATASETS) if datasets is None else ([datasets] if isinstance(datasets, str) else list(datasets))
    if not datasets:
        raise ValueError("datasets=[] is invalid: expected one or more of " + ", ".join(DATASETS))
    variants = VARIANTS[profile] if variants is None else list(variants)
    units = []
    for ds in datasets:
        for lik, sigma in variants:
            cfg = SweepConfig.from_profile(profile, dataset=ds, likelihood=lik, sigma=sigma, **overrides)
            units.append((unit_name(cfg.dataset, cfg.likelihood, cfg.sigma), cfg))
    return units


def default_out(profile: str) -> Path:
    from .results import results_root
    return results_root() / profile


def lock(folder: Path) -> FileLock:
    """An exclusive, non-blocking lock on a results folder. It is an OS-level lock (flock), so
    the kernel drops it when its holder dies: a lock file left by a killed sweep is stale and
    simply taken over."""
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / ".sweep.lock"), timeout=0)


def run(units, out: Path, progress: bool = True, log=print) -> list[str]:
    """Execute every unit not already finished in ``out``; returns the units run now."""
    import papermill as pm
    from tqdm.auto import tqdm

    out = Path(out)
    lk = lock(out)
    try:
        lk.acquire()
    except Timeout:
        holder = (out / ".sweep.pid").read_text().strip() if (out / ".sweep.pid").exists() else "?"
        raise SweepLocked(f"another sweep (pid {holder}) is writing to {out}; wait for it to finish "
                          f"or use another --out folder") from None
    try:
        (out / ".sweep.pid").write_text(str(os.getpid()))
        (out / "runs").mkdir(parents=True, exist_ok=True)
        for stale in (out / "runs").glob("*.tmp.ipynb"):
            stale.unlink()
        todo = [(u, c) for u, c in units if not unit_done(out, u, c.to_dict())]
        skipped = len(units) - len(todo)
        if skipped:
            log(f"{skipped} of {len(units)} units already finished in {out}: skipped")
        bar = tqdm(total=len(units), initial=skipped, desc="sweep units", disable=not progress,
                   file=sys.stderr)
        done = []
        for unit, cfg in todo:
            bar.set_postfix_str(unit)
            t0 = time.perf_counter()
            tmp = out / "runs" / f"{unit}.tmp.ipynb"
            base = SweepConfig.from_profile(cfg.profile).to_dict()
            params = {k: v for k, v in cfg.to_dict().items() if v != base[k] or k == "dataset"}
            params.update(profile=cfg.profile, output=str(out.resolve()), unit=unit)
            params.pop("progress", None)
            pm.execute_notebook(str(EXPERIMENT), str(tmp), parameters=params, progress_bar=False,
                                kernel_name="python3", cwd=str(EXPERIMENT.parent))
            os.replace(tmp, out / "runs" / f"{unit}.ipynb")
            if not unit_done(out, unit):
                raise ResultsError(f"the experiment notebook finished {unit} but wrote no results to {out}")
            done.append(unit)
            bar.update(1)
            log(f"finished {unit} in {time.perf_counter() - t0:.0f} s")
        bar.close()
        return done
    finally:
        (out / ".sweep.pid").unlink(missing_ok=True)
        lk.release()
