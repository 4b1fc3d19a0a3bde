"""An explorer for chapter 1: fit a Gaussian q(z) to a two-mode 1-D posterior by hand or by
reparameterised-gradient ascent, and watch log p(x) = ELBO + KL(q || p(z | x)) hold.

``VIExplorer()`` is an ipywidgets ``VBox``: sliders for q's mean and log-scale, an "optimise"
button (``fit_gaussian``: a few hundred Adam steps on the reparameterised ELBO gradient, from
the current sliders), the three numbers as text, and a plotly figure redrawn in an ``Output``
widget. The figure is an ordinary plotly figure rendered by ``amortlib.plots`` into the Output
widget's state, so a page that stored the widget state (the built book) shows it without a
kernel.

All the numbers come from ``amortlib.theory.vi1d``; the figures from ``amortlib.plots.vi``.
"""
from __future__ import annotations

import ipywidgets as widgets
import numpy as np

from ..plots.vi import LOG_SCALE_RANGE, MEAN_RANGE, stats_text, vi_figure
from ..theory import vi1d
from . import show_figure


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
        text = stats_text(s, sep=" &nbsp;·&nbsp; ")
        self.status.value = f"<b>{text}</b>" + (f"<br><i>{note}</i>" if note else "")
        mean, log_scale = self.q
        title = f"q = N(m, s²) with m = {mean:.2f}, s = exp({log_scale:.2f}) = {np.exp(log_scale):.3g}"
        fig = vi_figure(self.model, mean, log_scale, posterior=self.posterior, title=title)
        show_figure(self.plot, fig)

    def optimise(self) -> vi1d.FitTrace:
        """Run ``fit_gaussian`` from the current q, showing a few frames of its path."""
        trace = vi1d.fit_gaussian(self.model, *self.q, **self.fit_options)
        steps = len(trace.mean) - 1
        checkpoints = np.unique(np.linspace(0, steps, self.frames + 1).round().astype(int)[1:])
        for t in checkpoints:
            self.set_q(trace.mean[t], trace.log_scale[t], redraw=False)
            self.redraw(note=f"reparameterised-gradient ascent: step {t} of {steps}")
        return trace
