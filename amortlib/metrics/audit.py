r"""Is F-VI at its optimum? The referee's checks of every unit, summarised.

Each unit of a sweep saves ``train.fvi_audit``'s table (``audit``): per seed, F-VI as trained,
F-VI warm-started from that seed's best A-VI model and trained as long again, and that A-VI
model, with train ELBOs from 100 draws on common random numbers. ``audit_summary`` reads it per
dataset and likelihood setting:

- ``shortfall``: warm-started F-VI's train ELBO minus the F-VI run's (nats per image), mean and
  95% t-interval over the audited seeds: how far the sweep's F-VI ends below a point its own
  family reaches (from a better start, and with the source's epochs before its own: an
  existence proof, not the optimum). Positive: the run is not at its family's best.
- ``warm_vs_source``: the warm start minus its A-VI source; for a fixed decoder F-VI's family
  holds every A-VI solution, so it should not be negative (``warm_below_source``: seeds where
  it is, by more than 3 standard errors).
- ``refine_gain``: what a frozen-decoder refit of F-VI's q(z_n) still gains (its q alone).
- ``fvi_still_falling`` / ``warm_still_falling``: loss drop per 100 epochs over the last
  eighth of training (mean): both still falling means neither is at an optimum.
"""
from __future__ import annotations

import pandas as pd

from .compare import GROUP, likelihood_label, t_interval

AUDIT_SUMMARY_COLUMNS = GROUP + ["setting", "seeds", "sources", "shortfall", "shortfall_lo", "shortfall_hi",
                                 "warm_vs_source", "warm_below_source", "refine_gain",
                                 "fvi_still_falling", "warm_still_falling", "warm_epochs"]


def audit_summary(res: dict) -> pd.DataFrame:
    """One row per dataset and likelihood setting of the loaded results ``res`` whose units hold
    an ``audit`` table; columns ``AUDIT_SUMMARY_COLUMNS``."""
    a = res.get("audit")
    if a is None or a.empty:
        raise ValueError("these results hold no audit tables (units saved before the F-VI audit was added): "
                         "rerun the sweep")
    rows = []
    for key, g in a.groupby(GROUP, sort=False):
        mean, lo, hi = t_interval(g["shortfall"])
        below = int((g["warm_vs_source"] < -3 * g["warm_vs_source_se"]).sum())
        sources = ", ".join(f"{c} ×{n}" for c, n in g["source"].value_counts().sort_index().items())
        rows.append(dict(zip(GROUP, key), setting=likelihood_label(key[1], key[2]), seeds=len(g),
                         sources=sources, shortfall=mean, shortfall_lo=lo, shortfall_hi=hi,
                         warm_vs_source=g["warm_vs_source"].mean(), warm_below_source=below,
                         refine_gain=g["refine_gain"].mean(),
                         fvi_still_falling=g["fvi_still_falling"].mean(),
                         warm_still_falling=g["warm_still_falling"].mean(),
                         warm_epochs=int(g["warm_epochs"].max())))
    return pd.DataFrame(rows, columns=AUDIT_SUMMARY_COLUMNS)
