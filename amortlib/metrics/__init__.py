"""Metrics on tidy results: evaluation cadence, reconstruction error, time to tolerance, the
mean-image baseline, latent usage, and per-configuration summaries."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

#: Columns of the tidy per-epoch metrics frame (one row per model and logged epoch).
METRIC_COLUMNS = ["dataset", "likelihood", "sigma", "family", "width", "seed", "config", "epoch",
                  "neg_elbo", "mse_train", "mse_test", "wall_s", "sweep_wall_s", "diverged"]
RUN_KEYS = ["dataset", "likelihood", "sigma", "family", "width", "seed"]


def eval_epochs(epochs: int, points: int = 100) -> list[int]:
    """About ``points`` log-spaced epochs in [1, epochs], always including 1 and the last."""
    e = np.unique(np.round(np.logspace(0, np.log10(epochs), points)).astype(int))
    return sorted(set(e.tolist()) | {1, epochs})


def mse(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Mean squared error per model: x [n, D], recon [M, n, D] -> [M]."""
    return (recon - x).square().mean(dim=(-2, -1))


def mean_image_mse(x_fit: torch.Tensor, x_eval: torch.Tensor | None = None) -> float:
    """MSE of predicting every image in ``x_eval`` (default ``x_fit``) by the mean image of
    ``x_fit``: the reconstruction error of a model that ignores its latent variable."""
    x_eval = x_fit if x_eval is None else x_eval
    return float((x_eval - x_fit.mean(0)).square().mean())


#: A run "blew up" when its negative ELBO leaves what training can explain by this factor (see
#: ``blowups``); like a diverged run, it is listed with its epoch and left out of every mean.
BLOWUP_FACTOR = 10.0


def blowups(metrics: pd.DataFrame, factor: float = BLOWUP_FACTOR) -> pd.DataFrame:
    """Per run: whether it blew up, and the first logged epoch at which it did. With L(e) the
    logged negative ELBO, L1 = L(1) and m(e) = min L up to e, a run blows up at the first e with

        L(e) - L1   > factor * max(|L1|, 1)                      (far above where it started), or
        L(e) - m(e) > factor * max(|m(e)|, L1 - m(e), 1)          (ten times its own scale and
                                                                   its whole descent, regained)

    Early transients (a loss that rises for a few epochs, then falls) stay far below both; a
    finite loss that runs off to 1e6 and beyond meets them. Diverged (NaN) rows are ignored."""
    rows = []
    keys = RUN_KEYS + ["config"]
    live = metrics[~metrics["diverged"].astype(bool)].sort_values("epoch")
    for key, g in live.groupby(keys, dropna=False, sort=False):
        loss, ep = g["neg_elbo"].to_numpy(float), g["epoch"].to_numpy()
        l1, low = loss[0], np.minimum.accumulate(loss)
        hit = (loss - l1 > factor * max(abs(l1), 1.0)) | \
              (loss - low > factor * np.maximum.reduce([np.abs(low), l1 - low, np.ones_like(low)]))
        first = int(ep[np.argmax(hit)]) if hit.any() else None
        rows.append(dict(zip(keys, key), blew_up=first is not None,
                         blew_up_epoch=np.nan if first is None else float(first)))
    out = pd.DataFrame(rows, columns=keys + ["blew_up", "blew_up_epoch"])
    return out.astype({k: metrics[k].dtype for k in keys} | {"blew_up": bool})


def mark_blowups(metrics: pd.DataFrame, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``metrics`` with ``blew_up`` (True from a run's blow-up epoch on) and ``runs`` with
    ``blew_up`` and ``blew_up_epoch``; recomputed from the metrics, so results written before
    the rule existed read the same way as new ones."""
    b = blowups(metrics)
    keys = RUN_KEYS + ["config"]
    runs = runs.drop(columns=["blew_up", "blew_up_epoch"], errors="ignore").merge(b, on=keys, how="left")
    runs["blew_up"] = runs["blew_up"].fillna(False).astype(bool)
    m = metrics.drop(columns=["blew_up"], errors="ignore").merge(b[keys + ["blew_up_epoch"]], on=keys, how="left")
    m["blew_up"] = m["epoch"] >= m["blew_up_epoch"].fillna(np.inf)
    return m.drop(columns="blew_up_epoch"), runs


def excluded(df: pd.DataFrame) -> pd.Series:
    """Rows left out of means: diverged (NaN/inf) or blown up (``blowups``)."""
    out = df["diverged"].astype(bool) if "diverged" in df else pd.Series(False, index=df.index)
    if "blew_up" in df:
        out = out | df["blew_up"].astype(bool)
    return out


def first_below(epochs, values, threshold):
    """First epoch at which ``values`` falls below ``threshold`` (NaN if never)."""
    for e, v in zip(epochs, values):
        if v < threshold:
            return e
    return float("nan")


def kl_per_dim(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Mean over datapoints of KL(q(z_nd) || N(0, 1)) per latent dimension: [M, n, d] -> [M, d]."""
    return 0.5 * ((2 * log_sigma).exp() + mu.square() - 1 - 2 * log_sigma).mean(1)


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """Active latent units (Burda et al. 2016): dims with Var_n E_q[z_nd] > threshold; [M, n, d] -> [M]."""
    return (mu.var(dim=1, unbiased=True) > threshold).sum(-1)


def time_to_tolerance(metrics: pd.DataFrame, tol: float, column: str = "mse_train") -> pd.DataFrame:
    """Per run: first logged epoch with ``column`` < tol and the model's own training seconds
    to reach it (``wall_s`` at that epoch). Resolution is the logging cadence."""
    rows = []
    for key, g in metrics.sort_values("epoch").groupby(RUN_KEYS + ["config"], dropna=False, sort=False):
        g = g[~excluded(g)]
        e = first_below(g["epoch"].tolist(), g[column].tolist(), tol)
        s = g.loc[g["epoch"] == e, "wall_s"].iloc[0] if e == e else float("nan")
        rows.append(dict(zip(RUN_KEYS + ["config"], key), epochs_to_tol=e, seconds_to_tol=s))
    out = pd.DataFrame(rows, columns=RUN_KEYS + ["config", "epochs_to_tol", "seconds_to_tol"])
    return out.astype({k: metrics[k].dtype for k in RUN_KEYS + ["config"]})


def config_order(df: pd.DataFrame) -> list[str]:
    """Configurations in reading order: F-VI, A-VI by width, constant-VI."""
    cfgs = df[["config", "family", "width"]].drop_duplicates()
    rank = {"factorized": 0, "amortized": 1, "constant": 2}
    cfgs = cfgs.assign(_r=cfgs["family"].map(rank), _w=cfgs["width"].fillna(0).astype(float))
    return cfgs.sort_values(["_r", "_w"])["config"].tolist()


def summary_table(runs: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Per configuration: mean and standard deviation over the live seeds (``seeds``) of the
    final metrics; runs that diverged or blew up are counted (``diverged``, ``blew_up``) and
    left out of the means.

    ``runs`` has one row per trained model (see ``amortlib.train.run_sweep``)."""
    cols = [c for c in ["neg_elbo", "mse_train", "mse_test", "epochs_to_tol", "seconds_to_tol"]
            if c in runs]
    keys = [k for k in ["dataset", "likelihood", "sigma", "config"] if k in runs]
    g = runs.groupby(keys, sort=False, dropna=False)
    live = runs[cols].where(~excluded(runs), np.nan).join(runs[keys]).groupby(keys, sort=False, dropna=False)
    out = live[cols].agg(["mean", "std"])
    out.columns = [f"{c}_{s}" for c, s in out.columns]
    out["seeds"] = g.size() - (excluded(runs).groupby([runs[k] for k in keys], sort=False, dropna=False).sum())
    for flag in ("diverged", "blew_up"):
        if flag in runs:
            out[flag] = g[flag].sum()
    out = out.reset_index()
    order = {c: i for i, c in enumerate(config_order(runs))}
    out = out.sort_values(keys[:-1] + ["config"], key=lambda s: s.map(order) if s.name == "config" else s)
    return out.reset_index(drop=True).round(digits)


from .claims import Claim, ClaimError, check_claims  # noqa: E402
from .compare import convergence, match_summary, smallest_matching_width, study_table  # noqa: E402
