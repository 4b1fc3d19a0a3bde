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
        g = g[~g["diverged"]]
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
    """Per configuration: mean and standard deviation over seeds of the final metrics.

    ``runs`` has one row per trained model (see ``amortlib.train.run_sweep``)."""
    cols = [c for c in ["neg_elbo", "mse_train", "mse_test", "epochs_to_tol", "seconds_to_tol"]
            if c in runs]
    keys = [k for k in ["dataset", "likelihood", "sigma", "config"] if k in runs]
    g = runs.groupby(keys, sort=False, dropna=False)
    out = g[cols].agg(["mean", "std"])
    out.columns = [f"{c}_{s}" for c, s in out.columns]
    out["seeds"] = g.size()
    if "diverged" in runs:
        out["diverged"] = g["diverged"].sum()
    out = out.reset_index()
    order = {c: i for i, c in enumerate(config_order(runs))}
    out = out.sort_values(keys[:-1] + ["config"], key=lambda s: s.map(order) if s.name == "config" else s)
    return out.reset_index(drop=True).round(digits)


from .claims import Claim, ClaimError, check_claims  # noqa: E402
from .compare import convergence, match_summary, smallest_matching_width, study_table  # noqa: E402
