"""Comparisons the results chapter states: does A-VI match F-VI, from which width, how much
faster, and is the latent used at all? All numbers come from the tidy results frames.

Seeds are paired: models with the same seed share their decoder initialisation and noise
(common random numbers), so differences are taken per seed, then summarised over seeds.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import RUN_KEYS, config_order, first_below

GROUP = ["dataset", "likelihood", "sigma"]


def convergence(metrics: pd.DataFrame, baselines: dict, frac: float = 0.9, elbo_rel: float = 0.01,
                abs_tol: float = 0.07) -> pd.DataFrame:
    """Per run, epochs (and the model's own seconds) to three tolerances:

    - ``abs``: train MSE < ``abs_tol`` (the reference's 0.07),
    - ``rel``: train MSE < ``frac`` x the mean-image MSE of the same images (``baselines``:
      {unit: mean-image train MSE}); reaching it needs the latent variable,
    - ``elbo``: negative ELBO within ``elbo_rel`` (relative) of the run's final value.
    Resolution is the logging cadence (log-spaced epochs)."""
    rows = []
    for key, g in metrics[~metrics["diverged"]].sort_values("epoch").groupby(
            RUN_KEYS + ["config", "unit"], dropna=False, sort=False):
        ep, wall = g["epoch"].tolist(), dict(zip(g["epoch"], g["wall_s"]))
        final = g["neg_elbo"].iloc[-1]
        base = baselines[key[-1]]
        e_abs = first_below(ep, g["mse_train"].tolist(), abs_tol)
        e_rel = first_below(ep, g["mse_train"].tolist(), frac * base)
        e_elbo = first_below(ep, (g["neg_elbo"] - final).abs().tolist(), elbo_rel * abs(final) + 1e-12)
        row = dict(zip(RUN_KEYS + ["config", "unit"], key))
        for name, e in [("abs", e_abs), ("rel", e_rel), ("elbo", e_elbo)]:
            row[f"epochs_to_{name}"] = e
            row[f"seconds_to_{name}"] = wall.get(e, np.nan)
        row["mse_train_rel"] = g["mse_train"].iloc[-1] / base
        rows.append(row)
    return pd.DataFrame(rows)


def _paired(runs: pd.DataFrame, col: str, ref: str = "F-VI") -> pd.DataFrame:
    """Per dataset/likelihood/config: ``col`` of each seed next to the reference config's."""
    base = runs[runs["config"] == ref][GROUP + ["seed", col]].rename(columns={col: f"{col}_ref"})
    return runs.merge(base, on=GROUP + ["seed"], how="inner")


def match_summary(runs: pd.DataFrame, tol_nats: float = 1.0, speed_col: str = "epochs_to_abs") -> pd.DataFrame:
    """Per dataset, likelihood setting and configuration: the ELBO gap to F-VI,
    neg_elbo - neg_elbo_F in nats per image (mean and min..max over seeds; positive = worse than
    F-VI), whether it is at most ``tol_nats`` for every seed ("matches"), and the speed-up in
    ``speed_col`` over F-VI (F-VI's epochs / this configuration's, per seed). Diverged runs are
    left out (``seeds`` counts the runs used)."""
    runs = runs[~runs["diverged"].astype(bool)] if "diverged" in runs else runs
    p = _paired(runs, "neg_elbo")
    p["gap_nats"] = p["neg_elbo"] - p["neg_elbo_ref"]
    if speed_col in runs:
        p = _paired(p, speed_col)
        p["speedup"] = p[f"{speed_col}_ref"] / p[speed_col]
    g = p.groupby(GROUP + ["config"], sort=False, dropna=False)
    out = g.agg(gap_nats=("gap_nats", "mean"), gap_nats_min=("gap_nats", "min"),
                gap_nats_max=("gap_nats", "max"), seeds=("seed", "nunique"))
    out["matches"] = g["gap_nats"].apply(lambda s: bool((s <= tol_nats).all()))
    if "speedup" in p:
        out["speedup"] = g["speedup"].mean()
        out["speedup_min"] = g["speedup"].min()
        out["speedup_max"] = g["speedup"].max()
    out = out.reset_index()
    order = {c: i for i, c in enumerate(config_order(runs))}
    return out.sort_values(GROUP + ["config"], key=lambda s: s.map(order) if s.name == "config" else s,
                           ignore_index=True)


def smallest_matching_width(summary: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and likelihood setting: the smallest A-VI width from which every wider
    encoder also matches F-VI (NaN if none)."""
    rows = []
    for key, g in summary[summary["config"].str.startswith("A-VI")].groupby(GROUP, sort=False):
        g = g.assign(width=g["config"].str.extract(r"k=(\d+)")[0].astype(int)).sort_values("width")
        ok = g["matches"].tolist()
        k = next((w for i, w in enumerate(g["width"]) if all(ok[i:])), np.nan)
        rows.append(dict(zip(GROUP, key), matching_width=k))
    return pd.DataFrame(rows)


def baselines(res: dict, split: str = "train") -> dict:
    """{unit: mean-image MSE} of a loaded results folder (``split`` train or test)."""
    return {u: m["info"][f"mean_image_mse_{split}"] for u, m in res["meta"].items()}


def likelihood_label(likelihood: str, sigma: float) -> str:
    return "Bernoulli" if likelihood == "bernoulli" else f"Gaussian σ={sigma:g}"


def study_table(res: dict, frac: float = 0.9, gap: pd.DataFrame | None = None) -> pd.DataFrame:
    """The likelihood-scale study: per dataset, likelihood setting and configuration, means over
    the seeds that did not diverge (``seeds``; ``diverged`` counts the others; a configuration
    whose every seed diverged keeps its row, with no means) of the final
    negative ELBO, active units, train MSE relative to the mean image, test MSE (and relative),
    epochs to the three tolerances of ``convergence``, and the mean amortization gap on train
    and test images when ``gap`` (from ``amortlib.gap``) is given."""
    conv = convergence(res["metrics"], baselines(res), frac=frac)
    runs = res["runs"].merge(conv[RUN_KEYS + ["mse_train_rel", "epochs_to_abs", "epochs_to_rel", "epochs_to_elbo"]],
                             on=RUN_KEYS, how="left")
    order = {c: i for i, c in enumerate(config_order(runs))}
    diverged = runs.loc[runs["diverged"].astype(bool), GROUP + ["config", "seed"]]
    runs = runs[~runs["diverged"].astype(bool)]
    test_base = baselines(res, "test")
    runs["mse_test_rel"] = runs["mse_test"] / runs["unit"].map(test_base)
    cols = ["neg_elbo", "active_units", "mse_train_rel", "mse_test", "mse_test_rel", "epochs_to_abs",
            "epochs_to_rel", "epochs_to_elbo"]
    g = runs.groupby(GROUP + ["config"], sort=False, dropna=False)
    out = g[cols].mean()
    out["neg_elbo_sd"] = g["neg_elbo"].std()
    out["seeds"] = g.size()
    out = out.reset_index()
    n_div = diverged.groupby(GROUP + ["config"]).size().rename("diverged").reset_index()
    # outer: a configuration whose every seed diverged keeps its row (no means, seeds 0)
    out = out.merge(n_div, on=GROUP + ["config"], how="outer").fillna({"diverged": 0, "seeds": 0})
    out[["seeds", "diverged"]] = out[["seeds", "diverged"]].astype(int)
    if gap is not None and not gap.empty:
        ok = gap.merge(diverged.assign(_dead=True), on=GROUP + ["config", "seed"], how="left")
        ok = ok[ok["_dead"].isna()]
        for split in ("train", "test"):
            gt = ok[ok["split"] == split].groupby(GROUP + ["config"], dropna=False)["gap_mean"].mean()
            out = out.merge(gt.rename(f"gap_{split}").reset_index(), on=GROUP + ["config"], how="left")
    out.insert(1, "setting", [likelihood_label(l, s) for l, s in zip(out["likelihood"], out["sigma"])])
    return out.sort_values(["dataset", "likelihood", "sigma", "config"],
                           key=lambda s: s.map(order) if s.name == "config" else s, ignore_index=True)
