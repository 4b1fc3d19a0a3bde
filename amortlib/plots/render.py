"""A plotly renderer for notebooks that must also render in a static, offline book.

Plotly's own renderers each serve one frontend: ``plotly_mimetype`` needs a frontend extension
(JupyterLab, VS Code), ``notebook``/``iframe`` inline or fetch plotly.js. This one emits both

- ``application/vnd.plotly.v1+json`` (the figure, as plotly's ``plotly_mimetype`` renderer does),
- ``text/html``: a div and a script calling ``Plotly.newPlot`` on the page's global ``Plotly``,
  with ``include_plotlyjs=False``. The book loads plotly.min.js (from the installed plotly
  package, see ``amortlib.book``) on every page, before require.js, so ``window.Plotly`` exists.

The div id is ``amortlib-fig-<n>`` with n counting the figures rendered in this process, so a
notebook executed top to bottom produces the same HTML every time (nbval regression tests
compare it; tests/nbval_sanitize.cfg also masks the number).

In Google Colab, where no page-level plotly.js exists and each output is its own iframe, the
HTML inlines the installed plotly.js instead (still no CDN).
"""
from __future__ import annotations

import itertools
import json
import sys
import threading

import plotly.io as pio
from plotly.io._base_renderers import MimetypeRenderer

RENDERER_NAME = "amortlib"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
DIV_ID_PREFIX = "amortlib-fig-"

_counter = itertools.count(1)
_lock = threading.Lock()


def next_div_id() -> str:
    """A div id unique within this process, and the same in every fresh run of a notebook."""
    with _lock:
        return f"{DIV_ID_PREFIX}{next(_counter)}"


def _in_colab() -> bool:
    return "google.colab" in sys.modules


class AmortlibRenderer(MimetypeRenderer):
    """Mime bundle with the plotly JSON and an offline HTML fallback.

    config: plotly.js config (defaults: responsive, no plotly logo).
    default_height: height of the HTML div when the figure's layout sets none.
    inline_plotlyjs: put plotly.js into the HTML itself; None means "only in Colab".
    """

    def __init__(self, config=None, default_height="450px", inline_plotlyjs=None):
        self.config = dict(config) if config else {"responsive": True, "displaylogo": False}
        self.default_height = default_height
        self.inline_plotlyjs = inline_plotlyjs

    def to_mimebundle(self, fig_dict):
        fig_dict = dict(fig_dict)
        config = dict(self.config)
        config.update(fig_dict.pop("config", None) or {})
        # The JSON form plotly's frontends expect: plain JSON types (plotly's encoder turns
        # numpy arrays into typed-array specs), with the config alongside data and layout.
        figure_json = json.loads(pio.to_json(fig_dict, validate=False, remove_uids=False))
        if config:
            figure_json["config"] = config
        inline = _in_colab() if self.inline_plotlyjs is None else bool(self.inline_plotlyjs)
        html = pio.to_html(
            fig_dict,
            config=config,
            include_plotlyjs=inline,  # False: use the page's global Plotly, never a CDN
            full_html=False,
            default_width="100%",
            default_height=self.default_height,
            validate=False,
            div_id=next_div_id(),
        )
        return {PLOTLY_MIME: figure_json, "text/html": html}


def register(make_default: bool = True) -> AmortlibRenderer:
    """Register the renderer as ``plotly.io.renderers["amortlib"]`` (and make it the default)."""
    renderer = pio.renderers[RENDERER_NAME] if RENDERER_NAME in pio.renderers else None
    if not isinstance(renderer, AmortlibRenderer):
        renderer = AmortlibRenderer()
        pio.renderers[RENDERER_NAME] = renderer
    if make_default:
        pio.renderers.default = RENDERER_NAME
    return renderer
