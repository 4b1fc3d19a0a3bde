"""Comparisons the results chapter states: does A-VI match F-VI, from which width, how much
faster, and is the latent used at all? All numbers come from the tidy results frames.

Seeds are paired: models with the same seed share their decoder initialisation and noise
(common random numbers), so differences are taken per seed, then summarised over seeds.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import RUN_KEYS, config_order, excluded, first_below

GROUP = ["dataset", "likelihood", "sigma"]


def convergence(metrics: pd.DataFrame, baselines: dict, frac: float = 0.9, elbo_rel: float = 0.01,
                abs_tol: float = 0.07) -> pd.DataFrame:
    """Per run, epochs (and the model's own seconds) to three tolerances:

    - ``abs``: train MSE < ``abs_tol`` (jordandeklerk/Amortized-Bayes's 0.07),
    - ``rel``: train MSE < ``frac`` x the mean-image MSE of the same images (``baselines``:
      {unit: mean-image train MSE}); reaching it needs the latent variable,
    - ``elbo``: negative ELBO within ``elbo_rel`` (relative) of the run's final value.
    Resolution is the logging cadence (log-spaced epochs)."""
    rows = []
    for key, g in metrics[~excluded(metrics)].sort_values("epoch").groupby(
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


#: A verdict ("matches" or not) needs at least this many live seeds (not diverged, not blown up).
MIN_LIVE_SEEDS = 3


def match_summary(runs: pd.DataFrame, tol_nats: float = 1.0, speed_col: str = "epochs_to_abs",
                  min_seeds: int = MIN_LIVE_SEEDS) -> pd.DataFrame:
    """Per dataset, likelihood setting and configuration: the ELBO gap to F-VI,
    neg_elbo - neg_elbo_F in nats per image (mean and min..max over seeds; positive = worse than
    F-VI), whether it is at most ``tol_nats`` for every seed ("matches"), and the speed-up in
    ``speed_col`` over F-VI (F-VI's epochs / this configuration's, per seed). Runs that diverged
    or blew up are left out: ``seeds`` counts the live pairs, ``of`` all seeds, and with fewer
    than ``min_seeds`` live pairs there is no verdict (``matches`` is NA, ``verdict`` says why)."""
    total = runs.groupby(GROUP + ["config"], sort=False, dropna=False)["seed"].nunique().rename("of")
    runs = runs[~excluded(runs)]
    p = _paired(runs, "neg_elbo")
    p["gap_nats"] = p["neg_elbo"] - p["neg_elbo_ref"]
    if speed_col in runs:
        p = _paired(p, speed_col)
        p["speedup"] = p[f"{speed_col}_ref"] / p[speed_col]
    g = p.groupby(GROUP + ["config"], sort=False, dropna=False)
    out = g.agg(gap_nats=("gap_nats", "mean"), gap_nats_min=("gap_nats", "min"),
                gap_nats_max=("gap_nats", "max"), seeds=("seed", "nunique"))
    ok = g["gap_nats"].apply(lambda s: bool((s <= tol_nats).all()))
    if "speedup" in p:
        out["speedup"] = g["speedup"].mean()
        out["speedup_min"] = g["speedup"].min()
        out["speedup_max"] = g["speedup"].max()
    # every configuration keeps its row, one with no live seed too (seeds 0, no verdict)
    out = total.to_frame().join(out, how="left")
    out["seeds"] = out["seeds"].fillna(0).astype(int)
    out["matches"] = ok.reindex(out.index).astype("boolean").where(out["seeds"] >= min_seeds, pd.NA)
    out = out[[c for c in out.columns if c != "of"] + ["of"]].reset_index()
    out["verdict"] = [("matches" if m else "behind") + f" ({n} seeds)" if n >= min_seeds else
                      f"no verdict: {n} of {t} seeds live (needs {min_seeds})"
                      for m, n, t in zip(out["matches"].fillna(False), out["seeds"], out["of"])]
    order = {c: i for i, c in enumerate(config_order(runs))}
    return out.sort_values(GROUP + ["config"], key=lambda s: s.map(order) if s.name == "config" else s,
                           ignore_index=True)


def smallest_matching_width(summary: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and likelihood setting: the smallest A-VI width from which every wider
    encoder also matches F-VI (NaN if none)."""
    rows = []
    for key, g in summary[summary["config"].str.startswith("A-VI")].groupby(GROUP, sort=False):
        g = g.assign(width=g["config"].str.extract(r"k=(\d+)")[0].astype(int)).sort_values("width")
        ok = g["matches"].fillna(False).tolist()     # no verdict counts as not matching
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
    the live seeds (``seeds``; ``diverged`` and ``blew_up`` count the others, a run can be both;
    a configuration with no live seed keeps its row, with no means) of the final
    negative ELBO, active units, train MSE relative to the mean image, test MSE (and relative),
    epochs to the three tolerances of ``convergence``, and the mean amortization gap on train
    and test images when ``gap`` (from ``amortlib.gap``) is given."""
    conv = convergence(res["metrics"], baselines(res), frac=frac)
    runs = res["runs"].merge(conv[RUN_KEYS + ["mse_train_rel", "epochs_to_abs", "epochs_to_rel", "epochs_to_elbo"]],
                             on=RUN_KEYS, how="left")
    order = {c: i for i, c in enumerate(config_order(runs))}
    dead = excluded(runs)
    diverged = runs.loc[dead, GROUP + ["config", "seed"]]
    counts = runs[dead].groupby(GROUP + ["config"])[[f for f in ("diverged", "blew_up") if f in runs]].sum()
    runs = runs[~dead]
    test_base = baselines(res, "test")
    runs["mse_test_rel"] = runs["mse_test"] / runs["unit"].map(test_base)
    cols = ["neg_elbo", "active_units", "mse_train_rel", "mse_test", "mse_test_rel", "epochs_to_abs",
            "epochs_to_rel", "epochs_to_elbo"]
    g = runs.groupby(GROUP + ["config"], sort=False, dropna=False)
    out = g[cols].mean()
    out["neg_elbo_sd"] = g["neg_elbo"].std()
    out["seeds"] = g.size()
    out = out.reset_index()
    # outer: a configuration whose every seed diverged or blew up keeps its row (no means, seeds 0)
    flags = list(counts.columns)
    out = out.merge(counts.reset_index(), on=GROUP + ["config"], how="outer").fillna({f: 0 for f in flags + ["seeds"]})
    out[["seeds", *flags]] = out[["seeds", *flags]].astype(int)
    if gap is not None and not gap.empty:
        ok = gap.merge(diverged.assign(_dead=True), on=GROUP + ["config", "seed"], how="left")
        ok = ok[ok["_dead"].isna()]
        for split in ("train", "test"):
            gt = ok[ok["split"] == split].groupby(GROUP + ["config"], dropna=False)["gap_mean"].mean()
            out = out.merge(gt.rename(f"gap_{split}").reset_index(), on=GROUP + ["config"], how="left")
    out.insert(1, "setting", [likelihood_label(l, s) for l, s in zip(out["likelihood"], out["sigma"])])
    return out.sort_values(["dataset", "likelihood", "sigma", "config"],
                           key=lambda s: s.map(order) if s.name == "config" else s, ignore_index=True)


#: Two-sided 95% quantiles of Student's t with 1..30 degrees of freedom (seeds - 1).
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042)


def t95(df: int) -> float:
    """The two-sided 95% quantile of Student's t with ``df`` degrees of freedom: the table up
    to 30, beyond it the Cornish-Fisher expansion z + (z^3 + z) / (4 df) (within 0.002)."""
    if df <= len(_T95):
        return _T95[df - 1]
    z = 1.959963984540054
    return z + (z ** 3 + z) / (4 * df)


def t_interval(values) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` (per-seed differences) and its 95% t-interval
    (NaN bounds for fewer than two values)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return (float(v.mean()) if len(v) else np.nan), np.nan, np.nan
    half = t95(len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def final_comparison(res: dict, ref: str = "F-VI", min_seeds: int = 5) -> pd.DataFrame:
    """The re-estimated final numbers (``final`` tables of ``amortlib.gap.final_evaluation``):
    per dataset, likelihood setting and configuration, over the live seeds, the mean train
    ELBO (100 draws, KL(theta) included), test ELBO and test log-likelihood (IWAE), and the
    paired per-seed differences to ``ref``, ``ref - config`` (positive: the configuration is
    worse), as a mean with its 95% t-interval over seeds: ``d_train`` (train ELBO), ``d_test``
    (test log-likelihood). ``verdict``: "behind" / "ahead" where the interval excludes 0,
    "level" where it holds 0, none below ``min_seeds`` live seeds."""
    final = res.get("final")
    if final is None or final.empty:
        raise ValueError("these results hold no final tables (units saved before the final "
                         "evaluation was added): rerun the sweep")
    live = res["runs"].loc[~excluded(res["runs"]), GROUP + ["config", "seed"]]
    f = final.merge(live, on=GROUP + ["config", "seed"], how="inner")
    base = f[f["config"] == ref][GROUP + ["seed", "elbo_train", "test_loglik"]]
    p = f.merge(base, on=GROUP + ["seed"], suffixes=("", "_ref"))
    p["d_train"] = p["elbo_train_ref"] - p["elbo_train"]
    p["d_test"] = p["test_loglik_ref"] - p["test_loglik"]
    total = res["runs"].groupby(GROUP + ["config"], sort=False)["seed"].nunique()
    rows = []
    for key, g in p.groupby(GROUP + ["config"], sort=False):
        row = dict(zip(GROUP + ["config"], key), elbo_train=g["elbo_train"].mean(),
                   elbo_test=g["elbo_test"].mean(), test_loglik=g["test_loglik"].mean())
        for col in ("d_train", "d_test"):
            row[col], row[f"{col}_lo"], row[f"{col}_hi"] = t_interval(g[col])
        n = g["seed"].nunique()
        lo, hi = row["d_train_lo"], row["d_train_hi"]
        row["verdict"] = ("reference" if key[-1] == ref else
                          f"no verdict: {n} live seeds (needs {min_seeds})" if n < min_seeds else
                          "behind" if lo > 0 else "ahead" if hi < 0 else "level")
        row["seeds"], row["of"] = n, int(total.get(key, n))
        rows.append(row)
    out = pd.DataFrame(rows)
    order = {c: i for i, c in enumerate(config_order(res["runs"]))}
    return out.sort_values(GROUP + ["config"], key=lambda s: s.map(order) if s.name == "config" else s,
                           ignore_index=True)
