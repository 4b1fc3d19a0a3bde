"""An explorer for chapter 1: fit a Gaussian q(z) to a two-mode 1-D posterior by hand or by
reparameterised-gradient ascent, and watch log p(x) = ELBO + KL(q || p(z | x)) hold.

``VIExplorer()`` is an ipywidgets ``VBox``: sliders for q's mean and log-scale, an "optimise"
button (``fit_gaussian``: a few hundred Adam steps on the reparameterised ELBO gradient, from
the current sliders), the three numbers as text, and a plotly figure redrawn in an ``Output``
widget. The figure is an ordinary plotly figure rendered by ``amortlib.plots`` into the Output
widget's state, so a page that stored the widget state (the built book) shows it without a
kernel.

All the numbers come from ``amortlib.theory.vi1d``.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import ipywidgets as widgets

from amortlib.plots import register
from amortlib.theory import vi1d

MEAN_RANGE = (-5.0, 5.0)
LOG_SCALE_RANGE = (-2.5, 1.0)
X_RANGE = (-6.0, 6.0)
POSTERIOR_COLOR = "#4c72b0"
Q_COLOR = "#dd8452"
FIT_COLORS = ("#dd8452", "#55a868", "#c44e52", "#8172b3")


def _plot_grid(n: int = 601) -> np.ndarray:
    return np.linspace(*X_RANGE, n)


def _stats_text(s: vi1d.Summary, sep: str = "   ") -> str:
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
    fig.update_layout(
        title=dict(text=title, font=dict(size=14), x=0.01, xanchor="left"), height=height,
        template="plotly_white", margin=dict(l=55, r=20, t=45, b=20), hovermode="x unified",
        legend=dict(orientation="h", yanchor="top", y=-0.14, xanchor="left", x=0.0),
    )
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
    return _layout(fig, _stats_text(s) if title is None else title)


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


class VIExplorer(widgets.VBox):
    """Sliders for q = N(m, s^2), an "optimise" button, the ELBO/KL/log p(x) text, the figure."""

    def __init__(self, model: vi1d.CauchyLocationModel | None = None, mean: float = -3.0,
                 log_scale: float = 0.0, steps: int = 300, lr: float = 0.05,
                 n_samples: int = 16, seed: int = 0, frames: int = 6):
        self.model = model if model is not None else vi1d.CauchyLocationModel()
        self.posterior = vi1d.posterior_on_grid(self.model)
        self.fit_options = dict(steps=steps, lr=lr, n_samples=n_samples, seed=seed)
        self.frames = max(1, int(frames))
        slider = dict(continuous_update=False, readout_format=".2f",
                      style={"description_width": "initial"},
                      layout=widgets.Layout(width="320px"))
        self.mean_slider = widgets.FloatSlider(
            value=mean, min=MEAN_RANGE[0], max=MEAN_RANGE[1], step=0.05,
            description="mean m", **slider)
        self.log_scale_slider = widgets.FloatSlider(
            value=log_scale, min=LOG_SCALE_RANGE[0], max=LOG_SCALE_RANGE[1], step=0.05,
            description="log-scale log s", **slider)
        self.optimise_button = widgets.Button(
            description="optimise", button_style="primary",
            tooltip=f"{steps} steps of reparameterised-gradient ascent on the ELBO (Adam)")
        self.status = widgets.HTML()
        self.plot = widgets.Output(layout=widgets.Layout(min_height="430px"))
        self._redrawing = False
        super().__init__([
            widgets.HBox([self.mean_slider, self.log_scale_slider, self.optimise_button]),
            self.status,
            self.plot,
        ])
        self.mean_slider.observe(self._on_slider, names="value")
        self.log_scale_slider.observe(self._on_slider, names="value")
        self.optimise_button.on_click(lambda _button: self.optimise())
        self.redraw()

    @property
    def q(self) -> tuple[float, float]:
        return float(self.mean_slider.value), float(self.log_scale_slider.value)

    def summary(self) -> vi1d.Summary:
        return vi1d.summary(self.model, *self.q, self.posterior)

    def _on_slider(self, _change) -> None:
        if not self._redrawing:
            self.redraw()

    def set_q(self, mean: float, log_scale: float, redraw: bool = True) -> None:
        """Move the sliders (clipped to their ranges) and redraw once."""
        self._redrawing = True
        try:
            self.mean_slider.value = float(np.clip(mean, *MEAN_RANGE))
            self.log_scale_slider.value = float(np.clip(log_scale, *LOG_SCALE_RANGE))
        finally:
            self._redrawing = False
        if redraw:
            self.redraw()

    def redraw(self, note: str = "") -> None:
        s = self.summary()
        text = _stats_text(s, sep=" &nbsp;·&nbsp; ")
        self.status.value = f"<b>{text}</b>" + (f"<br><i>{note}</i>" if note else "")
        mean, log_scale = self.q
        title = f"q = N(m, s²) with m = {mean:.2f}, s = exp({log_scale:.2f}) = {np.exp(log_scale):.3g}"
        fig = vi_figure(self.model, mean, log_scale, posterior=self.posterior, title=title)
        # Set the Output widget's outputs directly (not `with self.plot: display(fig)`): the
        # figure then lives in the widget's own state, whichever frontend (or none) routes
        # display messages, and a saved notebook keeps it for the static book.
        bundle = register(make_default=False).to_mimebundle(fig.to_dict())
        self.plot.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)

    def optimise(self) -> vi1d.FitTrace:
        """Run ``fit_gaussian`` from the current q, showing a few frames of its path."""
        trace = vi1d.fit_gaussian(self.model, *self.q, **self.fit_options)
        steps = len(trace.mean) - 1
        checkpoints = np.unique(np.linspace(0, steps, self.frames + 1).round().astype(int)[1:])
        for t in checkpoints:
            self.set_q(trace.mean[t], trace.log_scale[t], redraw=False)
            self.redraw(note=f"reparameterised-gradient ascent: step {t} of {steps}")
        return trace
