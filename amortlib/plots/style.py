"""The look shared by the book's figures: one layout (title, size, white template, legend below)."""
from __future__ import annotations

import plotly.graph_objects as go

#: Margins (pixels) of a figure whose axis titles sit left and below.
MARGIN = dict(l=60, r=20, t=45, b=40)


def layout(fig: go.Figure, title: str, height: int = 420, *, margin: dict | None = None,
           legend_y: float = -0.18, **extra) -> go.Figure:
    """Title at the top left, ``height`` pixels, plotly's white template, a horizontal legend
    below the plot (at ``legend_y`` of the plot's height); ``extra`` goes to ``update_layout``."""
    fig.update_layout(title=dict(text=title, font=dict(size=14), x=0.01, xanchor="left"),
                      height=height, template="plotly_white", margin=margin or MARGIN, **extra,
                      legend=dict(orientation="h", yanchor="top", y=legend_y, xanchor="left", x=0.0))
    return fig
