"""The per-image gap explorer of chapter 6: a dropdown of configurations (and one of seeds)
that redraws the histogram of per-datapoint amortization gaps (``plots.gap.histogram_figure``)."""
from __future__ import annotations

import ipywidgets as widgets
import pandas as pd

from ..plots.gap import configs_in_order, histogram_figure
from . import show_figure


class ImageGapExplorer(widgets.VBox):
    """A dropdown of configurations (and one of seeds) that redraws the per-datapoint gap
    histogram of ``per_image`` (``GapMeasurement.per_image()`` of both splits, stacked)."""

    def __init__(self, per_image: pd.DataFrame, config: str | None = None):
        self.per_image = per_image
        order = configs_in_order(per_image)
        self.config = widgets.Dropdown(options=order, value=config or order[-1],
                                       description="inference function",
                                       style={"description_width": "initial"})
        self.seed = widgets.Dropdown(options=sorted(int(s) for s in per_image.seed.unique()),
                                     description="seed")
        self.plot = widgets.Output(layout=widgets.Layout(min_height="400px"))
        super().__init__([widgets.HBox([self.config, self.seed]), self.plot])
        self.config.observe(lambda _c: self.redraw(), names="value")
        self.seed.observe(lambda _c: self.redraw(), names="value")
        self.redraw()

    def redraw(self) -> None:
        show_figure(self.plot, histogram_figure(self.per_image, self.config.value, self.seed.value))
