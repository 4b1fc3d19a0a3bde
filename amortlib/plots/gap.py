"""Figures of the gap measurements of trained models (chapter 6, "Measuring the gap"), shown
by ``amortlib.plots``'s renderer; ``amortlib.widgets.image_gaps.ImageGapExplorer`` redraws
``histogram_figure``."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..metrics import config_order
from .style import layout

SPLIT_COLORS = {"train": "#4c72b0", "test": "#dd8452"}
CONFIG_COLORS = ("#4c72b0", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def configs_in_order(df) -> list[str]:
    """The configurations of ``df`` in the book's order (F-VI, A-VI by width, constant-VI)."""
    return config_order(df) if {"family", "width"} <= set(df.columns) else list(df["config"].unique())


def gap_figure(summary: pd.DataFrame, value: str = "gap", title: str | None = None) -> go.Figure:
    """Mean gap per configuration with its 95% interval, one colour per split; ``summary`` as
    returned by ``summarise`` (columns config, split, <value>_mean, <value>_lo, <value>_hi)."""
    order = configs_in_order(summary)
    fig = go.Figure()
    for split, g in summary.groupby("split", sort=False):
        g = g.set_index("config").reindex([c for c in order if c in set(g["config"])])
        mean = g[f"{value}_mean"].to_numpy(float)
        fig.add_trace(go.Scatter(
            x=list(g.index), y=mean, mode="markers", name=f"{split} images",
            marker=dict(size=10, color=SPLIT_COLORS.get(split)),
            error_y=dict(type="data", symmetric=False, array=g[f"{value}_hi"].to_numpy(float) - mean,
                         arrayminus=mean - g[f"{value}_lo"].to_numpy(float)),
            hovertemplate="%{x}: %{y:.3g} nats<extra>" + split + "</extra>"))
    fig.update_yaxes(title_text="amortization gap (nats / image)", rangemode="tozero")
    fig.update_xaxes(title_text="inference function", type="category", categoryorder="array",
                     categoryarray=order)
    return layout(fig, title or "Amortization gap ELBO(q*) − ELBO(q_enc): mean and 95% interval")


def decomposition_figure(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Stacked bars per configuration (mean over seeds): approximation gap (log p - ELBO(q*))
    below, amortization gap (ELBO(q*) - ELBO(q_enc)) on top; their sum is the inference gap."""
    order = configs_in_order(table)
    g = table.groupby("config", sort=False)[["approx_gap", "amort_gap"]].mean().reindex(order)
    fig = go.Figure([
        go.Bar(x=order, y=g["approx_gap"], name="approximation gap  log p(x) − ELBO(q*)",
               marker_color="#8172b3", hovertemplate="%{x}: %{y:.3g} nats<extra></extra>"),
        go.Bar(x=order, y=g["amort_gap"], name="amortization gap  ELBO(q*) − ELBO(q_enc)",
               marker_color="#dd8452", hovertemplate="%{x}: %{y:.3g} nats<extra></extra>")])
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title_text="nats / image")
    fig.update_xaxes(title_text="inference function", type="category")
    return layout(fig, title or "The inference gap, split (Cremer et al. 2018)")


def iwae_figure(iwae: pd.DataFrame, title: str | None = None) -> go.Figure:
    """IWAE_K against K (mean over images and seeds), one line per configuration and proposal,
    drawn relative to the configuration's best estimate of log p(x): IWAE at the largest K
    with q* as proposal. Lines rise towards 0; the encoder's proposal rises more slowly."""
    order = configs_in_order(iwae)
    g = iwae.groupby(["config", "proposal", "K"], sort=False)["iwae_mean"].mean().reset_index()
    fig = go.Figure()
    for i, cfg in enumerate(order):
        ref = g[(g.config == cfg) & (g.proposal == "q*")].sort_values("K")["iwae_mean"].iloc[-1]
        for prop, dash in (("q*", "solid"), ("encoder", "dot")):
            h = g[(g.config == cfg) & (g.proposal == prop)].sort_values("K")
            if h.empty:
                continue
            fig.add_trace(go.Scatter(x=h["K"], y=h["iwae_mean"] - ref, mode="lines+markers",
                                     name=f"{cfg}, proposal {prop}", legendgroup=cfg,
                                     line=dict(color=CONFIG_COLORS[i % len(CONFIG_COLORS)], dash=dash),
                                     hovertemplate="K = %{x}: %{y:.3g} nats<extra>" + f"{cfg}, {prop}"
                                     + "</extra>"))
    k_max = int(iwae["K"].max())
    fig.update_xaxes(title_text="importance samples K", type="log")
    fig.update_yaxes(title_text=f"IWAE_K − IWAE_{k_max}(q*)  (nats / image)")
    return layout(fig, title or "IWAE_K rises with K towards log p(x) (solid: proposal q*, "
                   "dotted: the encoder's q)", height=480)


def refinement_figure(refine: pd.DataFrame, split: str | None = None, title: str | None = None) -> go.Figure:
    """Gap left after K refinement steps from the encoder's output (mean over seeds, with the
    pooled 95% interval), one line per configuration; x is K on a log axis (K = 0 drawn at 0.5)."""
    if split is not None:
        refine = refine[refine["split"] == split]
    order = configs_in_order(refine)
    fig = go.Figure()
    for i, cfg in enumerate(order):
        g = refine[refine.config == cfg].groupby("steps")
        mean = g["gap_mean"].mean()
        se = np.sqrt((g["gap_se"].apply(lambda s: (s ** 2).sum()))) / g.size()
        ks = mean.index.to_numpy()
        x = np.where(ks == 0, 0.5, ks)
        fig.add_trace(go.Scatter(x=x, y=mean.to_numpy(), mode="lines+markers", name=cfg,
                                 line=dict(color=CONFIG_COLORS[i % len(CONFIG_COLORS)]),
                                 error_y=dict(type="data", array=1.96 * se.to_numpy()),
                                 customdata=ks, hovertemplate="K = %{customdata}: %{y:.3g} nats<extra>"
                                 + cfg + "</extra>"))
    ticks = sorted(refine["steps"].unique())
    fig.update_xaxes(title_text="refinement steps K (0 = the encoder alone)", type="log",
                     tickvals=[0.5 if k == 0 else k for k in ticks], ticktext=[str(k) for k in ticks])
    fig.update_yaxes(title_text="gap left, ELBO(q*) − ELBO(q_K) (nats)", rangemode="tozero")
    return layout(fig, title or "Semi-amortized inference: the gap after K gradient steps")


def dividend_figure(cost: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Gap against inference cost: seconds to infer q(z) for the images (log axis) and the gap
    each method leaves, per configuration (first seed): the encoder, refinement steps, F-VI to
    the stopping rule from the encoder and from the prior."""
    order = configs_in_order(cost)
    fig = go.Figure()
    for i, cfg in enumerate(order):
        g = cost[cost.config == cfg]
        g = g[g.seed == g.seed.min()]
        color = CONFIG_COLORS[i % len(CONFIG_COLORS)]
        path = g[g.method != "F-VI from prior"].sort_values("seconds")
        fig.add_trace(go.Scatter(x=path["seconds"], y=path["gap_mean"], mode="lines+markers",
                                 name=cfg, legendgroup=cfg, line=dict(color=color),
                                 customdata=path["method"],
                                 hovertemplate="%{customdata}: %{x:.3g} s, gap %{y:.3g} nats<extra>"
                                 + cfg + "</extra>"))
        enc = g[g.method == "encoder"]
        fig.add_trace(go.Scatter(x=enc["seconds"], y=enc["gap_mean"], mode="markers",
                                 marker=dict(symbol="diamond", size=12, color=color),
                                 showlegend=False, legendgroup=cfg, hoverinfo="skip"))
        prior = g[g.method == "F-VI from prior"]
        fig.add_trace(go.Scatter(x=prior["seconds"], y=prior["gap_mean"], mode="markers",
                                 marker=dict(symbol="x", size=11, color=color),
                                 name=f"{cfg}: F-VI from the prior", legendgroup=cfg,
                                 hovertemplate="F-VI from the prior: %{x:.3g} s, gap %{y:.3g} nats<extra>"
                                 + cfg + "</extra>"))
    n = int(cost["n_images"].iloc[0]) if "n_images" in cost else None
    fig.update_xaxes(title_text=f"seconds to infer q(z) for {n:,} new images" if n else "seconds",
                     type="log")
    fig.update_yaxes(title_text="amortization gap left (nats / image)")
    return layout(fig, title or "The amortization dividend: gap against inference cost "
                   "(diamond: one encoder pass)", height=460)


def histogram_figure(per_image: pd.DataFrame, config: str, seed: int | None = None,
                     bins: int = 40) -> go.Figure:
    """Histogram of per-datapoint gaps of one configuration (one seed), train and test overlaid."""
    g = per_image[per_image.config == config]
    seed = g.seed.min() if seed is None else seed
    g = g[g.seed == seed]
    lo, hi = float(g.gap.min()), float(g.gap.max())
    size = max((hi - lo) / bins, 1e-6)
    fig = go.Figure()
    for split, h in g.groupby("split", sort=False):
        fig.add_trace(go.Histogram(x=h["gap"], name=f"{split} images (mean {h.gap.mean():.3g})",
                                   xbins=dict(start=lo, end=hi + size, size=size), opacity=0.6,
                                   marker_color=SPLIT_COLORS.get(split)))
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text="per-image amortization gap (nats)")
    fig.update_yaxes(title_text="images")
    return layout(fig, f"{config}, seed {seed}: gap of each image", height=400)
