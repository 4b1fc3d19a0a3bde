"""Interactive explorers (ipywidgets) used by the book's notebooks; their figures live in
``amortlib.plots``."""
from __future__ import annotations


def show_figure(output, fig) -> None:
    """Draw the plotly ``fig`` into the ``ipywidgets.Output`` ``output`` by setting its outputs
    directly: the figure lives in the widget's own state, so a saved notebook (the static book)
    shows it without a kernel."""
    from ..plots import register
    bundle = register(make_default=False).to_mimebundle(fig.to_dict())
    output.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)
