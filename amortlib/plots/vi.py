"""Figures of chapter 1: a Gaussian q(z) against a two-mode 1-D posterior
(``amortlib.theory.vi1d``); ``amortlib.widgets.vi_explorer.VIExplorer`` redraws ``vi_figure``."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..theory import vi1d
from .style import layout

MEAN_RANGE = (-5.0, 5.0)
LOG_SCALE_RANGE = (-2.5, 1.0)
X_RANGE = (-6.0, 6.0)
POSTERIOR_COLOR = "#4c72b0"
Q_COLOR = "#dd8452"
FIT_COLORS = ("#dd8452", "#55a868", "#c44e52", "#8172b3")


def _plot_grid(n: int = 601) -> np.ndarray:
    return np.linspace(*X_RANGE, n)


def stats_text(s: vi1d.Summary, sep: str = "   ") -> str:
    return sep.join([f"ELBO = {s.elbo:.3f}", f"KL(q‖p(z|x)) = {s.kl:.3f}",
                     f"ELBO + KL = {s.elbo + s.kl:.3f}", f"log p(x) = {s.log_evidence:.3f}"])


def _posterior_traces(model: vi1d.CauchyLocationModel, posterior: vi1d.Posterior, z):
    density = np.exp(model.log_joint(z) - posterior.log_evidence)
    obs = np.asarray(model.x, dtype=float)
    return [
        go.Scatter(x=z, y=density, name="posterior p(z | x)", mode="lines", fill="tozeroy",
                   line=dict(color=POSTERIOR_COLOR, width=2)),
        go.Scatter(x=obs, y=np.zeros_like(obs), name="observations x", mode="markers",
                   marker=dict(symbol="x-thin", size=12, line=dict(width=2, color="black"))),
    ]


def _layout(fig: go.Figure, title: str, height: int = 460) -> go.Figure:
    layout(fig, title, height, margin=dict(l=55, r=20, t=45, b=20), legend_y=-0.14, hovermode="x unified")
    fig.update_xaxes(title_text="z", range=list(X_RANGE))
    fig.update_yaxes(title_text="density", rangemode="tozero")
    return fig


def vi_figure(model: vi1d.CauchyLocationModel, mean: float, log_scale: float,
              posterior: vi1d.Posterior | None = None, title: str | None = None) -> go.Figure:
    """The posterior and q = N(mean, exp(log_scale)^2); the title defaults to the identity's
    numbers (ELBO, KL, their sum, log p(x))."""
    posterior = posterior if posterior is not None else vi1d.posterior_on_grid(model)
    s = vi1d.summary(model, mean, log_scale, posterior)
    z = _plot_grid()
    q = np.exp(vi1d.gaussian_log_density(z, mean, log_scale))
    fig = go.Figure(_posterior_traces(model, posterior, z))
    fig.add_trace(go.Scatter(x=z, y=q, name=f"q = N({mean:.2f}, {np.exp(log_scale):.2f}²)",
                             mode="lines", line=dict(color=Q_COLOR, width=3)))
    return _layout(fig, stats_text(s) if title is None else title)


def fits_figure(model: vi1d.CauchyLocationModel, fits: dict[str, tuple[float, float]],
                posterior: vi1d.Posterior | None = None) -> go.Figure:
    """The posterior and several Gaussians q, e.g. the end points of ``fit_gaussian`` runs
    from different starts; ``fits`` maps a label to (mean, log_scale)."""
    posterior = posterior if posterior is not None else vi1d.posterior_on_grid(model)
    z = _plot_grid()
    fig = go.Figure(_posterior_traces(model, posterior, z))
    for (label, (mean, log_scale)), color in zip(fits.items(), FIT_COLORS * len(fits)):
        s = vi1d.summary(model, mean, log_scale, posterior)
        q = np.exp(vi1d.gaussian_log_density(z, mean, log_scale))
        fig.add_trace(go.Scatter(x=z, y=q, mode="lines", line=dict(color=color, width=3),
                                 name=f"{label}: ELBO {s.elbo:.2f}, KL {s.kl:.2f}"))
    return _layout(fig, f"Gaussian fits; log p(x) = {posterior.log_evidence:.3f}")
