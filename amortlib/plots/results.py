"""Interactive figures of sweep results (Plotly; they draw offline in the book).

Every figure takes the tidy frames of ``amortlib.results.load_results``. Seeds are drawn as a
band (min to max over seeds) around their mean; clicking a legend entry toggles a whole
configuration; a dropdown switches between the likelihood settings of a dataset.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..metrics import config_order, excluded

#: One colour per configuration, stable across figures.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
LABELS = {"neg_elbo": "negative ELBO (nats / image)", "mse_train": "train MSE",
          "mse_test": "test MSE", "epoch": "epoch (iterations)"}


def colour_map(configs) -> dict:
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(configs)}


def _band(g: pd.DataFrame, metric: str) -> pd.DataFrame:
    s = g.groupby("epoch")[metric]
    return pd.DataFrame({"mean": s.mean(), "lo": s.min(), "hi": s.max()}).reset_index()


def _y_axis(m: pd.DataFrame, metric: str, log_y: bool) -> tuple[str, list]:
    """Axis type and range for one unit: from the lowest seed-mean value to the typical value
    at epoch 1, so a run that blows up leaves the frame instead of flattening every other curve.
    A log axis only when every value is positive (the negative ELBO crosses zero when the
    likelihood is a density above 1, e.g. a Gaussian with small sigma)."""
    means = m.groupby(["config", "epoch"])[metric].mean()
    lo = float(means.min())
    hi = float(means.xs(means.index.get_level_values("epoch").min(), level="epoch").median())
    hi = max(hi, lo + 1e-12)
    if log_y and lo > 0:
        return "log", [np.log10(lo) - 0.05, np.log10(hi) + 0.05]
    pad = 0.05 * (hi - lo)
    return "linear", [lo - pad, hi + pad]


def _tail_axis(m: pd.DataFrame, metric: str, start: float) -> tuple[str, list]:
    """A linear y range for the last stretch of training (epochs >= ``start``): the seed bands
    of the configurations that end within reach of F-VI and of the best (the others, far off,
    leave the frame), so the last nats of a still-falling curve can be read."""
    t = m[m["epoch"] >= start]
    final = t[t["epoch"] == t["epoch"].max()].groupby("config")[metric].mean()
    if final.empty:
        return "linear", None
    best = float(final.min())
    ref = float(final.get("F-VI", best))
    reach = best + 2 * abs(ref - best) + 10.0
    near = final[final <= reach].index
    s = t[t["config"].isin(near)].groupby(["config", "epoch"])[metric]
    lo, hi = float(s.min().min()), float(s.max().max())
    pad = 0.05 * max(hi - lo, 1e-9)
    return "linear", [lo - pad, hi + pad]


def _variant_label(unit_meta: dict) -> str:
    c = unit_meta["config"]
    return "Bernoulli" if c["likelihood"] == "bernoulli" else f"Gaussian σ={c['sigma']:g}"


def curves(res: dict, dataset: str, metric: str = "neg_elbo", baselines: dict | None = None,
           log_y: bool = True, title: str | None = None, last: float | None = None) -> go.Figure:
    """``metric`` against epoch (log x; log y where the values allow), one line + seed band per
    configuration, a dropdown
    over the dataset's likelihood settings. ``baselines``: {unit: y} drawn as a dashed line
    (e.g. the mean-image MSE). ``last`` (a fraction, e.g. 0.5): only the last stretch of
    training, epochs >= (1 - last) E on linear axes, y from the finished values of the
    configurations near F-VI and the best (``_tail_axis``): is a curve still falling?"""
    if last is not None and not (isinstance(last, (int, float)) and 0 < last <= 1):
        raise ValueError(f"last={last!r} is invalid: expected a fraction in (0, 1] of the epochs, or None")
    m = res["metrics"]
    m = m[(m["dataset"] == dataset) & ~excluded(m)]      # a run's curve stops where it diverged or blew up
    units = sorted((u for u in res["meta"] if res["meta"][u]["config"]["dataset"] == dataset),
                   key=lambda u: (res["meta"][u]["config"]["likelihood"] != "gaussian",
                                  res["meta"][u]["config"]["sigma"]))
    if m.empty or not units:
        raise ValueError(f"dataset={dataset!r} has no results in {res['folder']}")
    colours = colour_map(config_order(m))
    tail_from = None if last is None else (1 - last) * float(m["epoch"].max())
    if tail_from is not None:
        m = m[m["epoch"] >= tail_from]
    fig, spans, axes = go.Figure(), [], []
    for k, unit in enumerate(units):
        start = len(fig.data)
        mu = m[m["unit"] == unit]
        axes.append(_y_axis(mu, metric, log_y) if tail_from is None else _tail_axis(mu, metric, tail_from))
        for cfg in config_order(mu):
            b = _band(mu[mu["config"] == cfg], metric)
            col, vis = colours[cfg], k == 0
            fig.add_trace(go.Scatter(x=np.r_[b["epoch"], b["epoch"][::-1]], y=np.r_[b["hi"], b["lo"][::-1]],
                                     fill="toself", fillcolor=col, opacity=0.2, line=dict(width=0),
                                     hoverinfo="skip", legendgroup=cfg, showlegend=False, visible=vis))
            fig.add_trace(go.Scatter(x=b["epoch"], y=b["mean"], mode="lines", name=cfg,
                                     line=dict(color=col, width=2), legendgroup=cfg, visible=vis))
        if baselines and unit in baselines:
            fig.add_trace(go.Scatter(x=[mu["epoch"].min(), mu["epoch"].max()], y=[baselines[unit]] * 2,
                                     mode="lines", name="mean image", visible=k == 0,
                                     line=dict(color="black", dash="dash", width=1.5)))
        spans.append((start, len(fig.data)))
    buttons = []
    for k, unit in enumerate(units):
        vis = [False] * len(fig.data)
        for i in range(*spans[k]):
            vis[i] = True
        buttons.append(dict(label=_variant_label(res["meta"][unit]), method="update",
                            args=[{"visible": vis}, {"yaxis.type": axes[k][0], "yaxis.range": axes[k][1]}]))
    fig.update_layout(
        title=title or (f"{LABELS.get(metric, metric)}: {dataset}"
                        + ("" if tail_from is None else f", the last {last:.0%} of training")),
        template="plotly_white", height=430,
        xaxis=dict(type="log" if tail_from is None else "linear", title=LABELS["epoch"]),
        yaxis=dict(type=axes[0][0], range=axes[0][1], title=LABELS.get(metric, metric)),
        legend=dict(orientation="v", x=1.02, y=1), margin=dict(t=80, r=10),
        updatemenus=[dict(buttons=buttons, direction="down", x=0, xanchor="left", y=1.16, yanchor="top")]
        if len(units) > 1 else [])
    return fig


def tolerance_strip(runs: pd.DataFrame, column: str = "epochs_to_tol", title: str | None = None) -> go.Figure:
    """Per configuration and dataset, every seed's value of ``column`` (a time-to-tolerance) as a
    dot, with the mean as a bar; runs that never reached the tolerance are listed in the title."""
    fig = go.Figure()
    order = config_order(runs)
    colours = colour_map(order)
    for ds, g in runs.groupby("dataset", sort=True):
        agg = g.groupby("config")[column].mean().reindex(order)
        fig.add_trace(go.Bar(x=order, y=agg.values, name=f"{ds} (mean)", opacity=0.35,
                             marker_color=[colours[c] for c in order], showlegend=False, offsetgroup=ds))
        fig.add_trace(go.Scatter(x=g["config"], y=g[column], mode="markers", name=ds,
                                 marker=dict(size=8, symbol="circle" if ds == "mnist" else "diamond",
                                             color="black")))
    never = int(runs[column].isna().sum())
    fig.update_layout(template="plotly_white", height=380, barmode="group",
                      title=(title or column.replace("_", " ")) + (f" ({never} runs never reached it)" if never else ""),
                      yaxis_title=column.replace("_", " "))
    return fig


def reconstruction_grid(recon: dict, title: str = "") -> go.Figure:
    """Originals (top row) and each configuration's reconstructions (one row each), laid out
    with ``torchvision.utils.make_grid``."""
    import torch
    from torchvision.utils import make_grid

    names = ["original"] + [k for k in recon if k != "original"]
    imgs = torch.cat([torch.as_tensor(recon[k]).unsqueeze(1) for k in names]).float() / 255.0
    n = recon["original"].shape[0]
    grid = make_grid(imgs, nrow=n, padding=2, pad_value=1.0)[0].numpy()
    fig = go.Figure(go.Heatmap(z=grid, colorscale="gray_r", showscale=False, hoverinfo="skip"))
    step = 28 + 2
    fig.update_yaxes(autorange="reversed", tickvals=[2 + 14 + step * i for i in range(len(names))],
                     ticktext=names, showgrid=False)
    fig.update_xaxes(showticklabels=False, showgrid=False)
    fig.update_layout(title=title, template="plotly_white", height=60 + 34 * len(names),
                      width=140 + 34 * n, margin=dict(l=110, r=10, t=40, b=10), yaxis_scaleanchor="x")
    return fig


def lr_figure(table: pd.DataFrame, dataset: str, sigma: float | None = None) -> go.Figure:
    """The learning-rate study (``metrics.sensitivity.lr_table``) for one dataset: final negative
    ELBO (mean over the live seeds, bars: their standard deviation)
    against Adam's lr, one line per configuration; F-VI with its own table lr (``local_lr`` !=
    lr) as separate markers. Configurations with no live seed at an lr leave a hole there."""
    t = table[table["dataset"] == dataset]
    if sigma is not None:
        t = t[t["sigma"] == sigma]
    if t.empty:
        raise ValueError(f"dataset={dataset!r} (sigma={sigma!r}) is not in the learning-rate table")
    order = list(dict.fromkeys(t["config"]))
    colours = colour_map(order)
    fig = go.Figure()
    plain = t[t["lr"] == t["local_lr"]]
    for cfg in order:
        g = plain[plain["config"] == cfg].sort_values("lr")
        fig.add_trace(go.Scatter(x=g["lr"], y=g["neg_elbo"], mode="lines+markers", name=cfg,
                                 error_y=dict(type="data", array=g["neg_elbo_sd"].fillna(0)),
                                 line=dict(color=colours[cfg], width=2)))
    local = t[(t["lr"] != t["local_lr"]) & (t["config"] == "F-VI")]
    for _, r in local.iterrows():
        fig.add_trace(go.Scatter(x=[r["lr"]], y=[r["neg_elbo"]], mode="markers",
                                 name=f"F-VI, table lr {r['local_lr']:g}",
                                 error_y=dict(type="data", array=[0 if pd.isna(r["neg_elbo_sd"]) else r["neg_elbo_sd"]]),
                                 marker=dict(color=colours.get("F-VI", "black"), symbol="star", size=13)))
    head = t[t["config"].isin([c for c in order if c.startswith("A-VI k=") and c != "A-VI k=1"] + ["F-VI"])]
    lo, hi = float(head["neg_elbo"].min()), float(head["neg_elbo"].max())
    pad = 0.08 * max(hi - lo, 1.0)
    fig.update_layout(template="plotly_white", height=430,
                      title=f"final negative ELBO against the learning rate: {dataset}"
                            + ("" if sigma is None else f", Gaussian σ={sigma:g}"),
                      xaxis=dict(type="log", title="Adam learning rate (every parameter)"),
                      yaxis=dict(title=LABELS["neg_elbo"], range=[lo - pad, hi + pad]),
                      legend=dict(orientation="v", x=1.02, y=1))
    return fig


def gap_by_n_figure(table: pd.DataFrame) -> go.Figure:
    """The amortization gap against the number of training images (``metrics.datasize.gap_by_n``
    for one dataset and likelihood setting): one line per configuration, train solid and test
    dashed, error bars from the seeds' min to max; log axes (a gap that ran off, e.g. an encoder
    of width 1 on unseen images, stays on the chart; y linear if a gap is not positive)."""
    if table.empty or table[["dataset", "likelihood", "sigma"]].drop_duplicates().shape[0] != 1:
        raise ValueError("table is invalid: expected the gap_by_n rows of exactly one dataset and likelihood setting")
    order = list(dict.fromkeys(table["config"]))
    colours = colour_map(order)
    fig = go.Figure()
    for cfg in order:
        for split, dash in (("train", "solid"), ("test", "dash")):
            g = table[(table["config"] == cfg) & (table["split"] == split)].sort_values("n_obs")
            if g.empty:
                continue
            fig.add_trace(go.Scatter(
                x=g["n_obs"], y=g["gap"], mode="lines+markers", name=f"{cfg} ({split})", legendgroup=cfg,
                line=dict(color=colours[cfg], dash=dash, width=2),
                error_y=dict(type="data", symmetric=False, array=g["gap_max"] - g["gap"],
                             arrayminus=g["gap"] - g["gap_min"])))
    ds = table["dataset"].iloc[0]
    fig.update_layout(template="plotly_white", height=450,
                      title=f"amortization gap against the number of training images: {ds}",
                      xaxis=dict(type="log", title="training images N"),
                      yaxis=dict(type="log" if bool((table["gap_min"] > 0).all()) else "linear",
                                 title="amortization gap (nats / image)"),
                      legend=dict(orientation="v", x=1.02, y=1))
    return fig
