"""Plotly figures for the book: importing this package makes ``amortlib`` the default renderer.

Every figure then displays as one mime bundle with two representations:

- ``application/vnd.plotly.v1+json`` for JupyterLab, VS Code and other frontends that render
  plotly natively,
- ``text/html``: a ``<div>`` and a ``<script>`` that calls ``Plotly.newPlot`` on the page's
  global ``Plotly``, loaded once per page (the built book loads the installed plotly package's
  own plotly.min.js from its static files; nothing comes from a CDN). Div ids are fixed
  (``amortlib-fig-<n>``), so re-executed notebooks produce the same HTML.

In a notebook: ``import amortlib.plots`` once, then ``fig.show()`` or leave ``fig`` last in a cell.
"""
from .render import RENDERER_NAME, AmortlibRenderer, register

register()

__all__ = ["AmortlibRenderer", "RENDERER_NAME", "register"]
