"""Interactive explorers (ipywidgets) used by the book's notebooks."""
