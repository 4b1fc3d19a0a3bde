"""Figures of the theory chapters (2 and 7): F-VI, A-VI and constant-VI fitted to the small
models of ``amortlib.theory.fit``. They take the dicts returned by ``compare`` and
``width_sweep``; ``amortlib.widgets.gap_explorer.GapExplorer`` redraws ``compare_figure``.
Plotted numbers are rounded to 5 significant figures (and curves thinned) so that stored
notebook outputs are small and stable.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..theory import fit as tf
from .format import sig3
from .style import layout

COLORS = {"factorized": "#4c72b0", "amortized": "#dd8452", "constant": "#55a868",
          "exact": "#222222", "x": "#c44e52", "x,x_next": "#4c72b0"}
MODEL_LABELS = {"normal_normal": "normal-normal", "nonlinear": "nonlinear", "saw": "saw series"}
INPUT_LABELS = {"x": "x_n", "x,x_next": "(x_n, x_{n+1})"}
BUTTON_LABELS = {"x": "x_n", "x,x_next": "(x_n, x_n+1)"}
WIDTHS = (None, 1, 2, 4, 8, 16, 32, 64)
GAP_FLOOR = 1e-6
#: Margins of these figures: room for subplot titles above, none needed below.
MARGIN = dict(l=60, r=20, t=60, b=20)


def _layout(fig: go.Figure, title: str, height: int = 440) -> go.Figure:
    return layout(fig, title, height, margin=MARGIN, legend_y=-0.16)


def _r(values, digits: int = 5) -> list:
    """Round to ``digits`` significant figures, as plain floats (stable stored outputs)."""
    arr = np.atleast_1d(np.asarray(values, dtype=float))
    return [float(f"{v:.{digits}g}") for v in arr]


def _thin(curve: np.ndarray, points: int = 201) -> tuple[list, list]:
    idx = np.unique(np.linspace(0, len(curve) - 1, points).round().astype(int))
    return [int(i) for i in idx], _r(curve[idx])


# ----------------------------------------------------------------------------- ELBO curves
def compare_figure(res: dict, title: str | None = None) -> go.Figure:
    """ELBO per datapoint against Adam step for F-VI, A-VI and constant-VI (``compare``'s
    output), the final values after the L-BFGS polish as markers, log p(x) as a dashed line,
    and the two gaps as bars (log scale; gaps below 1e-6 are drawn at 1e-6)."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.68, 0.32], horizontal_spacing=0.12,
                        subplot_titles=("ELBO per datapoint during optimisation",
                                        "gap to F-VI"))
    finals = []
    for fam in tf.FAMILIES:
        r = res[fam]
        steps, ys = _thin(r.curve)
        fig.add_trace(go.Scatter(x=steps, y=ys, mode="lines", name=r.label,
                                 line=dict(color=COLORS[fam], width=2.5,
                                           dash="dot" if fam == "constant" else None),
                                 legendgroup=fam), row=1, col=1)
        fig.add_trace(go.Scatter(x=[len(r.curve) - 1], y=_r(r.elbo), mode="markers",
                                 marker=dict(color=COLORS[fam], size=10, symbol="diamond"),
                                 name=f"{r.label} after L-BFGS", showlegend=False,
                                 legendgroup=fam), row=1, col=1)
        finals.append(r.elbo)
    log_ev = res["log_evidence"]
    n_steps = len(res["factorized"].curve) - 1
    fig.add_trace(go.Scatter(x=[0, n_steps], y=_r([log_ev, log_ev]), mode="lines",
                             name="log p(x) per datapoint (exact)",
                             line=dict(color=COLORS["exact"], dash="dash", width=1.5)),
                  row=1, col=1)
    top = max(log_ev, max(finals))
    bottom = min(finals)
    span = max(top - bottom, 0.05)
    fig.update_yaxes(range=_r([bottom - 0.35 * span, top + 0.1 * span]), title_text="ELBO / N",
                     row=1, col=1)
    fig.update_xaxes(title_text="Adam step", row=1, col=1)
    gaps = {"amortized": res["gap_amortized"], "constant": res["gap_constant"]}
    fig.add_trace(go.Bar(
        x=[res[f].label for f in gaps], y=_r([max(g, GAP_FLOOR) for g in gaps.values()]),
        marker_color=[COLORS[f] for f in gaps], text=[sig3(g) for g in gaps.values()],
        textposition="outside", showlegend=False, cliponaxis=False), row=1, col=2)
    fig.update_yaxes(type="log", range=[-6.5, 2.5], title_text="nats per datapoint", row=1, col=2)
    if title is None:
        a = res["amortized"]
        title = (f"{MODEL_LABELS[a.model]} model, n = {a.n}, seed = {a.seed}: "
                 f"{a.label} on {INPUT_LABELS[a.inputs]}")
    return _layout(fig, title)


# ----------------------------------------------------------------------------- chapter 2
def means_figure(res: dict, x_grid: np.ndarray | None = None) -> go.Figure:
    """Normal-normal model: posterior means E[z_n] against x_n for F-VI (one free value per n),
    the affine A-VI encoder (a function of x, drawn beyond the data), constant-VI and the exact
    posterior mean function; right panel: the standard deviations of z_n (averaged over n) and
    theta, exact and under each q (mean-field: below the exact ones)."""
    model, data = res["model"], res["data"]
    x = data["x"].numpy()
    exact = model.exact_posterior(data)
    if x_grid is None:
        pad = 0.25 * (x.max() - x.min())
        x_grid = np.linspace(x.min() - pad, x.max() + pad, 121)
    grid = torch.as_tensor(x_grid, dtype=tf.DTYPE)
    mu_a, ls_a = res["amortized"].encoder(grid[:, None])
    ideal = exact["ideal_slope"] * x_grid + exact["ideal_intercept"]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.12,
                        subplot_titles=("mean of q(z_n) against x_n",
                                        "posterior standard deviations"))
    fig.add_trace(go.Scatter(x=_r(x_grid), y=_r(ideal), mode="lines",
                             name="exact E[z_n | x] (ideal inference function)",
                             line=dict(color=COLORS["exact"], width=6), opacity=0.25),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=_r(x_grid), y=_r(mu_a.numpy()), mode="lines",
                             name=f"{res['amortized'].label}: g(x), drawn on new x too",
                             line=dict(color=COLORS["amortized"], width=2)), row=1, col=1)
    fig.add_trace(go.Scatter(x=_r(x), y=_r(res["factorized"].mu), mode="markers",
                             name="F-VI: one free mean per datapoint",
                             marker=dict(color=COLORS["factorized"], size=7, symbol="circle-open",
                                         line=dict(width=1.5))), row=1, col=1)
    fig.add_trace(go.Scatter(x=_r(x_grid[[0, -1]]), y=_r([res["constant"].mu[0]] * 2),
                             mode="lines", name="constant-VI: one mean for all",
                             line=dict(color=COLORS["constant"], width=2, dash="dot")),
                  row=1, col=1)
    fig.update_xaxes(title_text="x_n", row=1, col=1)
    fig.update_yaxes(title_text="E_q[z_n]", row=1, col=1)
    bars = [("exact posterior", float(exact["var_z"].mean()) ** 0.5, exact["var_theta"] ** 0.5,
             COLORS["exact"])]
    for fam in tf.FAMILIES:
        r = res[fam]
        bars.append((r.label, float(np.exp(r.log_sigma).mean()), float(np.exp(r.glob[1])),
                     COLORS[fam]))
    for name, sd_z, sd_theta, color in bars:
        fig.add_trace(go.Bar(x=["z_n", "theta"], y=_r([sd_z, sd_theta]), name=name,
                             marker_color=color, showlegend=False,
                             hovertemplate=f"{name}: %{{y:.4f}}<extra></extra>"), row=1, col=2)
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="exact (black), F-VI, A-VI, constant-VI", row=1, col=2)
    fig.update_yaxes(title_text="posterior sd", range=[0, 0.75], row=1, col=2)
    return _layout(fig, "Normal-normal model: three variational families and the exact posterior",
                   height=470)


# ----------------------------------------------------------------------------- chapter 7
def width_figure(sweeps: dict, title: str, floor_line: tuple[str, float] | None = None,
                 heldout: dict | None = None) -> go.Figure:
    """Amortization gap against encoder width, one line per sweep (``{label: width_sweep}``),
    optional held-out gaps (``{label: {width: gap}}``, dotted) and an optional horizontal
    reference line ``(label, value)``. The affine encoder is drawn at width 0 ("affine")."""
    fig = go.Figure()
    ticks = None
    palette = ["#dd8452", "#4c72b0", "#55a868", "#c44e52"]
    for (label, sw), color in zip(sweeps.items(), palette):
        widths = list(sw["gaps"])
        xs = [0.5 if w is None else w for w in widths]
        ticks = xs
        fig.add_trace(go.Scatter(x=xs, y=_r([max(g, GAP_FLOOR) for g in sw["gaps"].values()]),
                                 mode="lines+markers", name=f"{label} (training data)",
                                 line=dict(color=color, width=2.5), marker=dict(size=8)))
        if heldout and label in heldout:
            ho = heldout[label]
            fig.add_trace(go.Scatter(x=xs, y=_r([max(ho[w], GAP_FLOOR) for w in widths]),
                                     mode="lines+markers", name=f"{label} (new data)",
                                     line=dict(color=color, width=1.5, dash="dot"),
                                     marker=dict(size=6, symbol="square-open")))
    if floor_line is not None:
        fig.add_hline(y=floor_line[1], line=dict(color="#888888", dash="dash"),
                      annotation_text=floor_line[0], annotation_position="top left")
    fig.update_xaxes(type="log", title_text="encoder width k",
                     tickvals=ticks, ticktext=["affine" if t == 0.5 else str(int(t)) for t in ticks])
    fig.update_yaxes(type="log", title_text="amortization gap (nats per datapoint)",
                     exponentformat="power")
    return _layout(fig, title)


def inference_function_figure(sweep: dict, widths=(1, 4, 64)) -> go.Figure:
    """Nonlinear model: the F-VI optimum (mu_n, log omega_n) against x_n — the ideal inference
    function, sampled at the data — and A-VI encoders of a few widths drawn as functions of x."""
    data = sweep["data"]
    x = data["x"].numpy()
    fvi = sweep["factorized"]
    grid = np.linspace(x.min(), x.max(), 301)
    g = torch.as_tensor(grid, dtype=tf.DTYPE)[:, None]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("mean of q(z_n)", "log sd of q(z_n)"))
    for col, vals in ((1, fvi.mu), (2, fvi.log_sigma)):
        fig.add_trace(go.Scatter(x=_r(x), y=_r(vals), mode="markers", name="F-VI optimum",
                                 marker=dict(color=COLORS["factorized"], size=5),
                                 showlegend=col == 1), row=1, col=col)
    palette = ["#c44e52", "#dd8452", "#55a868", "#8172b3"]
    by_width = {r.width: r for r in sweep["amortized"]}
    for w, color in zip(widths, palette):
        r = by_width[w]
        mu, ls = r.encoder(g)
        for col, vals in ((1, mu), (2, ls)):
            fig.add_trace(go.Scatter(x=_r(grid), y=_r(vals.numpy()), mode="lines",
                                     name=r.label, line=dict(color=color, width=2),
                                     showlegend=col == 1), row=1, col=col)
    fig.update_xaxes(title_text="x_n")
    return _layout(fig, "F-VI's optimum (the ideal inference function) and A-VI encoders",
                   height=430)


def saw_figure(data: dict, model, n_show: int = 60) -> go.Figure:
    """The first points of a saw series and the exact posterior mean of z_n (which needs
    x_n and x_{n+1})."""
    x = data["x"].numpy()[: n_show + 1]
    mean_z = model.exact_posterior(data)["mean_z"].numpy()[:n_show]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("observed series x_n", "E[z_n | x] = (x_{n+1} - rho x_n) / (1 + sigma^2)"))
    fig.add_trace(go.Scatter(x=list(range(1, len(x) + 1)), y=_r(x), mode="lines+markers",
                             name="x_n", line=dict(color="#4c72b0")), row=1, col=1)
    fig.add_trace(go.Bar(x=list(range(1, len(mean_z) + 1)), y=_r(mean_z), name="E[z_n | x]",
                         marker_color="#dd8452"), row=2, col=1)
    fig.update_xaxes(title_text="n", row=2, col=1)
    return _layout(fig, "A saw series: each step's innovation z_n links x_n to x_{n+1}", height=460)


# ----------------------------------------------------------------------------- the widget
