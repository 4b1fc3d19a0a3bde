"""Glue for the experiment notebook (chapter 4): its papermill parameters -> a validated config."""
from __future__ import annotations

from .config import SweepConfig

#: Parameters of the notebook that are not SweepConfig fields.
NOTEBOOK_ONLY = ("profile", "output", "unit")


def experiment_config(params: dict) -> tuple[SweepConfig, str | None, str | None]:
    """``params``: the names set by the notebook's ``parameters`` cell and by papermill.
    ``None`` means "the profile's value". Unknown names and bad values raise ValueError
    naming the parameter, before anything trains."""
    params = dict(params)
    profile = params.pop("profile", "quick")
    output, unit = params.pop("output", None), params.pop("unit", None)
    overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items() if v is not None}
    return SweepConfig.from_profile(profile, **overrides), output, unit
