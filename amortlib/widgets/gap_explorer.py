"""The amortization-gap explorer of chapter 7.

``GapExplorer()`` is an ipywidgets ``VBox``: controls for the model (normal-normal, nonlinear,
saw), the A-VI encoder width (affine or a one-hidden-layer MLP of width k), its input domain
(x_n or the pair (x_n, x_{n+1})), the data size n and the seed. Every change re-fits F-VI, A-VI and
constant-VI on the same data (``amortlib.theory.fit.compare``, a few seconds on a CPU) and
redraws ``amortlib.plots.theory.compare_figure`` into an ``Output`` widget's state, so a saved
notebook (the built book) shows the last drawing without a kernel.
"""
from __future__ import annotations

import html

import ipywidgets as widgets

from ..plots.format import sig3
from ..plots.theory import BUTTON_LABELS, MODEL_LABELS, WIDTHS, compare_figure
from ..theory import fit as tf
from . import show_figure


class GapExplorer(widgets.VBox):
    """Controls (model, width, input domain, n, seed) and the ``compare_figure`` of ``compare``."""

    def __init__(self, model: str = "nonlinear", width: int | None = 8, inputs: str = "x",
                 n: int | None = None, seed: int = 0, steps: int | None = None):
        self.steps = steps
        style = {"description_width": "initial"}
        self.model_w = widgets.Dropdown(
            options=[(MODEL_LABELS[m], m) for m in tf.MODELS], value=model,
            description="model", style=style, layout=widgets.Layout(width="210px"))
        self.width_w = widgets.Dropdown(
            options=[("affine", 0)] + [(str(w), w) for w in WIDTHS if w is not None],
            value=0 if width is None else int(width), description="A-VI width k",
            style=style, layout=widgets.Layout(width="170px"))
        self.inputs_w = widgets.ToggleButtons(
            options=[(BUTTON_LABELS[i], i) for i in tf.INPUTS], value=inputs,
            description="A-VI encoder sees", style={"description_width": "initial",
                                                      "button_width": "110px"})
        n0 = tf.DEFAULTS[model]["n"] if n is None else int(n)
        self.n_w = widgets.Dropdown(options=sorted({64, 100, 128, 256, 512, n0}), value=n0,
                                    description="n", style=style,
                                    layout=widgets.Layout(width="120px"))
        self.seed_w = widgets.BoundedIntText(value=int(seed), min=0, max=9999, description="seed",
                                             style=style, layout=widgets.Layout(width="130px"))
        self.status = widgets.HTML()
        self.plot = widgets.Output(layout=widgets.Layout(min_height="440px"))
        self.result: dict | None = None
        self._cache: dict = {}
        super().__init__([
            widgets.HBox([self.model_w, self.width_w, self.n_w, self.seed_w]),
            self.inputs_w, self.status, self.plot,
        ])
        for w in (self.model_w, self.width_w, self.inputs_w, self.n_w, self.seed_w):
            w.observe(lambda _change: self.redraw(), names="value")
        self.redraw()

    @property
    def settings(self) -> dict:
        w = self.width_w.value
        return dict(model=self.model_w.value, width=None if w == 0 else int(w),
                    inputs=self.inputs_w.value, n=int(self.n_w.value), seed=int(self.seed_w.value))

    def redraw(self) -> dict:
        s = self.settings
        self.status.value = "<i>fitting F-VI, A-VI and constant-VI…</i>"
        key = tuple(s.values())
        if key not in self._cache:       # switching back to a setting costs nothing
            self._cache[key] = tf.compare(s["model"], width=s["width"], inputs=s["inputs"],
                                          n=s["n"], seed=s["seed"], steps=self.steps)
        res = self._cache[key]
        self.result = res
        show_figure(self.plot, compare_figure(res))
        text = " &nbsp;·&nbsp; ".join([
            f"ELBO/N: F-VI {sig3(res['factorized'].elbo)}",
            f"{html.escape(res['amortized'].label)} {sig3(res['amortized'].elbo)}",
            f"constant-VI {sig3(res['constant'].elbo)}",
            f"log p(x)/N {sig3(res['log_evidence'])}",
            f"<b>amortization gap {sig3(res['gap_amortized'])}</b>"])
        self.status.value = text
        return res
