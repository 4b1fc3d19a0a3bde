"""Verdicts with intervals (metrics.compare.final_comparison), the F-VI audit summary
(metrics.audit) and the stability control's table (metrics.stability), on small frames whose
answers are known."""
import numpy as np
import pandas as pd
import pytest
import math

from amortlib.metrics.audit import AUDIT_SUMMARY_COLUMNS, audit_summary
from amortlib.metrics.compare import final_comparison, t_interval
from amortlib.metrics.stability import STABILITY_COLUMNS, stability_table

KEYS = dict(dataset="mnist", likelihood="gaussian", sigma=0.1)


def _t_mass(q: float, df: int) -> float:
    """P(|T| <= q) for Student's t with df degrees of freedom, by integrating its density."""
    t = np.linspace(-q, q, 200_001)
    c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return float(np.trapezoid(np.exp(c - (df + 1) / 2 * np.log1p(t * t / df)), t))


@pytest.mark.parametrize("n", [2, 3, 5, 10, 12, 31, 41])
def test_t_interval_is_students(n):
    v = np.random.default_rng(n).normal(3.0, 2.0, n)
    mean, lo, hi = t_interval(v)
    q = (hi - mean) / (v.std(ddof=1) / np.sqrt(n))      # the quantile it used
    assert mean == pytest.approx(v.mean())
    assert _t_mass(q, n - 1) == pytest.approx(0.95, abs=2e-4)   # the 97.5% point of t(n - 1)
    assert mean - lo == pytest.approx(hi - mean)
    m1, lo1, hi1 = t_interval([4.0, np.nan])
    assert m1 == 4.0 and np.isnan(lo1) and np.isnan(hi1)


def _results(diffs: dict, dead=()):
    """Final tables for F-VI and configurations whose train ELBO trails F-VI's by ``diffs[c]``
    (one value per seed); ``dead``: (config, seed) pairs that diverged."""
    rows, runs = [], []
    seeds = range(len(next(iter(diffs.values()))))
    for s in seeds:
        base = 100.0 + 7 * s                       # seeds differ a lot; the differences do not
        rows.append(dict(KEYS, config="F-VI", seed=s, elbo_train=base, elbo_test=base - 5, test_loglik=base - 3))
        runs.append(dict(KEYS, family="factorized", width=None, config="F-VI", seed=s, diverged=False, blew_up=False))
        for c, d in diffs.items():
            rows.append(dict(KEYS, config=c, seed=s, elbo_train=base - d[s], elbo_test=base - 5 - d[s],
                             test_loglik=base - 3 - 2 * d[s]))
            runs.append(dict(KEYS, family="amortized", width=int(c.split("=")[1]), config=c, seed=s,
                             diverged=(c, s) in dead, blew_up=False))
    return dict(final=pd.DataFrame(rows), runs=pd.DataFrame(runs))


def test_verdicts_follow_the_interval_over_enough_live_seeds():
    res = _results({"A-VI k=1": [50, 52, 49, 51, 50],        # clearly behind
                    "A-VI k=16": [0.5, -0.4, 0.2, -0.3, 0.1],  # level: the interval holds 0
                    "A-VI k=64": [-3, -2.5, -3.5, -2.8, -3.1],  # ahead
                    "A-VI k=256": [40, 41, 39, 42, 38]},       # behind, but one seed dead
                   dead={("A-VI k=256", 2)})
    t = final_comparison(res).set_index("config")
    assert t.loc["F-VI", "verdict"] == "reference"
    assert t.loc["A-VI k=1", "verdict"] == "behind" and t.loc["A-VI k=1", "d_train"] == pytest.approx(50.4)
    assert t.loc["A-VI k=16", "verdict"] == "level"
    assert t.loc["A-VI k=64", "verdict"] == "ahead" and t.loc["A-VI k=64", "d_train_hi"] < 0
    assert t.loc["A-VI k=256", "verdict"].startswith("no verdict: 4 live seeds")
    assert (t.loc["A-VI k=256", "seeds"], t.loc["A-VI k=256", "of"]) == (4, 5)
    assert t.loc["A-VI k=1", "d_test"] == pytest.approx(2 * 50.4)          # paired on the test log-lik
    with pytest.raises(ValueError, match="no final tables"):
        final_comparison(dict(res, final=None))


def _audit(shortfalls, warm_vs_source, se=1.0):
    return pd.DataFrame([dict(KEYS, config="F-VI", seed=s, source="A-VI k=64" if s % 2 else "A-VI k=256",
                              shortfall=f, shortfall_se=se, warm_vs_source=w, warm_vs_source_se=se,
                              refine_gain=20.0 + s, fvi_still_falling=10.0, warm_still_falling=4.0,
                              warm_epochs=800)
                         for s, (f, w) in enumerate(zip(shortfalls, warm_vs_source))])


def test_audit_summary_reads_the_shortfall_with_its_interval_and_flags_a_warm_start_below_its_source():
    a = _audit([30, 35, 40, 45, 50], [90, 95, -10, 88, 100])
    t = audit_summary(dict(audit=a))
    assert list(t.columns) == AUDIT_SUMMARY_COLUMNS and len(t) == 1
    row = t.iloc[0]
    assert row.shortfall == pytest.approx(40) and row.shortfall_lo > 0 and row.seeds == 5
    assert row.warm_below_source == 1                      # seed 2: -10 with se 1
    assert row.sources == "A-VI k=256 ×3, A-VI k=64 ×2" and row.refine_gain == pytest.approx(22)
    with pytest.raises(ValueError, match="no audit tables"):
        audit_summary(dict(audit=None))


def test_stability_table_counts_live_seeds_failures_and_their_first_epoch():
    runs = pd.DataFrame([dict(KEYS, family="amortized", width=256, config="A-VI k=256", seed=s,
                              neg_elbo=[np.nan, 10.0, 12.0, 500.0][s], diverged=s == 0,
                              diverged_epoch=[40.0, np.nan, np.nan, np.nan][s],
                              blew_up=s in (0, 3), blew_up_epoch=[30.0, np.nan, np.nan, 7.0][s])
                         for s in range(4)])
    t = stability_table([("lr 0.01, no warm-up", dict(runs=runs))])
    assert list(t.columns) == STABILITY_COLUMNS
    row = t.iloc[0]
    assert (row.live, row.of, row.diverged, row.blew_up) == (2, 4, 1, 1)
    assert row.first_failure_epoch == 7 and row.neg_elbo == pytest.approx(11.0)
    assert row.setting == "Gaussian σ=0.1" and row.optimiser == "lr 0.01, no warm-up"

