"""Metrics the results chapter relies on: baselines, latent usage, tolerances, comparisons, claims."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from amortlib.metrics import (Claim, ClaimError, active_units, blowups, check_claims, eval_epochs, kl_per_dim,
                              mark_blowups, mean_image_mse, summary_table, time_to_tolerance)
from amortlib.metrics.compare import convergence, match_summary, smallest_matching_width


def test_mean_image_mse_against_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    x, xt = torch.rand(50, 7, generator=g), torch.rand(20, 7, generator=g)
    mean = [sum(x[i, j].item() for i in range(50)) / 50 for j in range(7)]
    direct = sum((xt[i, j].item() - mean[j]) ** 2 for i in range(20) for j in range(7)) / (20 * 7)
    assert mean_image_mse(x, xt) == pytest.approx(direct, rel=1e-5)
    assert mean_image_mse(x) < mean_image_mse(x, xt) + 0.05


def test_active_units_on_a_constructed_case():
    g = torch.Generator().manual_seed(1)
    n = 400
    used = torch.randn(n, generator=g)                   # E_q[z_1] varies across images
    ignored = 0.001 * torch.randn(n, generator=g)        # E_q[z_2] is (almost) constant
    mu = torch.stack([used, ignored], -1).unsqueeze(0)   # one model, [1, n, 2]
    assert active_units(mu).tolist() == [1]
    log_sigma = torch.stack([torch.full((n,), -2.0), torch.zeros(n)], -1).unsqueeze(0)
    kl = kl_per_dim(mu, log_sigma)[0]
    assert kl[0] > 1.0 and kl[1] < 1e-4                  # the ignored dim sits at the prior


def test_eval_epochs_are_log_spaced_and_include_the_ends():
    e = eval_epochs(5000, 100)
    assert e[0] == 1 and e[-1] == 5000 and 60 <= len(e) <= 100
    assert all(b > a for a, b in zip(e, e[1:]))


def _metrics():
    rows = []
    for cfg, fam, w, curve in [("F-VI", "factorized", None, [0.09, 0.08, 0.065, 0.03]),
                               ("A-VI k=8", "amortized", 8, [0.09, 0.06, 0.04, 0.031]),
                               ("constant-VI", "constant", None, [0.09, 0.08, 0.068, 0.066])]:
        for seed in (0, 1):
            for e, (ep, v) in enumerate(zip([1, 10, 100, 1000], curve)):
                rows.append(dict(dataset="mnist", likelihood="gaussian", sigma=0.1, family=fam, width=w,
                                 seed=seed, config=cfg, epoch=ep, neg_elbo=100.0 - 10 * e + seed,
                                 mse_train=v, mse_test=v, wall_s=ep * 0.01, sweep_wall_s=ep * 0.05,
                                 diverged=False, unit="u"))
    m = pd.DataFrame(rows)
    m["width"] = m["width"].astype("Int64")
    return m


def test_time_to_tolerance_and_convergence():
    m = _metrics()
    tt = time_to_tolerance(m, 0.07).set_index(["config", "seed"])
    assert tt.loc[("F-VI", 0), "epochs_to_tol"] == 100
    assert tt.loc[("A-VI k=8", 0), "epochs_to_tol"] == 10
    assert tt.loc[("A-VI k=8", 0), "seconds_to_tol"] == pytest.approx(0.1)
    conv = convergence(m, {"u": 0.066}, frac=0.9).set_index(["config", "seed"])
    assert math.isnan(conv.loc[("constant-VI", 0), "epochs_to_rel"])    # never below 0.9 x baseline
    assert conv.loc[("constant-VI", 0), "epochs_to_abs"] == 100          # ... yet it passes 0.07
    assert conv.loc[("A-VI k=8", 1), "epochs_to_rel"] == 100


def test_match_summary_pairs_seeds_and_finds_the_matching_width():
    runs = pd.DataFrame(dict(
        dataset="mnist", likelihood="gaussian", sigma=0.1,
        config=["F-VI", "F-VI", "A-VI k=1", "A-VI k=1", "A-VI k=8", "A-VI k=8"],
        family=["factorized"] * 2 + ["amortized"] * 4, width=[None, None, 1, 1, 8, 8], seed=[0, 1] * 3,
        neg_elbo=[100.0, 110.0, 120.0, 130.0, 100.5, 109.0], epochs_to_abs=[100, 80, 50, 40, 20, 40]))
    s = match_summary(runs, min_seeds=2).set_index("config")
    assert s.loc["A-VI k=1", "gap_nats"] == pytest.approx(20.0)
    assert s.loc["A-VI k=8", "gap_nats_max"] == pytest.approx(0.5)
    assert not s.loc["A-VI k=1", "matches"] and s.loc["A-VI k=8", "matches"]
    assert s.loc["A-VI k=8", "speedup"] == pytest.approx((100 / 20 + 80 / 40) / 2)
    assert smallest_matching_width(s.reset_index())["matching_width"].tolist() == [8]


def _curves(curves: dict) -> pd.DataFrame:
    """Tidy metrics of one A-VI run per named curve (negative ELBO at epochs 1, 2, ...)."""
    rows = []
    for seed, (name, curve) in enumerate(curves.items()):
        for ep, v in enumerate(curve, start=1):
            rows.append(dict(dataset="mnist", likelihood="gaussian", sigma=0.1, family="amortized", width=4,
                             seed=seed, config="A-VI k=4", epoch=ep, neg_elbo=v, mse_train=0.1, mse_test=0.1,
                             wall_s=0.0, sweep_wall_s=0.0, diverged=False, unit=name))
    m = pd.DataFrame(rows)
    m["width"] = m["width"].astype("Int64")
    return m


def test_blowups_flag_runaway_losses_with_their_epoch_and_spare_transients():
    m = _curves({
        "steady": [800, 500, 300, 210, 205, 204],
        "early transient": [800, 1300, 900, 400, 250, 240],          # rises 500 nats, then trains
        "crosses zero": [500, 100, -150, -190, -170, -200],          # a 20-nat bump below zero
        "runaway": [1000, 700, 900, 3e4, 4.5e6, 4.4e6],               # the published Fashion k = 256
        "lost its descent": [100, 20, -5, 500, 1060, 1100],          # regains 10x its whole descent
    })
    b = blowups(m).set_index("seed")
    assert b["blew_up"].tolist() == [False, False, False, True, True]
    assert b.loc[3, "blew_up_epoch"] == 4 and b.loc[4, "blew_up_epoch"] == 5
    met, runs = mark_blowups(m, m.groupby("seed").tail(1).drop(columns="epoch"))
    assert met.loc[met["seed"] == 3, "blew_up"].tolist() == [False] * 3 + [True] * 3
    t = summary_table(runs).iloc[0]
    assert t["seeds"] == 3 and t["blew_up"] == 2                # left out of the means, counted
    assert t["neg_elbo_mean"] == pytest.approx((204 + 240 - 200) / 3, abs=1e-3)


def test_a_verdict_needs_enough_live_seeds_and_says_how_many_it_rests_on():
    seeds = [0, 1, 2]
    runs = pd.DataFrame(dict(
        dataset="mnist", likelihood="gaussian", sigma=0.1, seed=seeds * 3,
        config=["F-VI"] * 3 + ["A-VI k=8"] * 3 + ["A-VI k=64"] * 3,
        family=["factorized"] * 3 + ["amortized"] * 6, width=[None] * 3 + [8] * 3 + [64] * 3,
        neg_elbo=[100.0, 110.0, 105.0, 100.2, 110.1, 105.5, 100.1, 109.0, 104.0],
        diverged=[False] * 3 + [False] * 3 + [True, True, False], blew_up=False))
    s = match_summary(runs).set_index("config")
    assert s.loc["A-VI k=8", "matches"] == True and s.loc["A-VI k=8", "verdict"] == "matches (3 seeds)"
    assert pd.isna(s.loc["A-VI k=64", "matches"]) and s.loc["A-VI k=64", "seeds"] == 1
    assert s.loc["A-VI k=64", "verdict"] == "no verdict: 1 of 3 seeds live (needs 3)"
    assert smallest_matching_width(s.reset_index())["matching_width"].isna().all()   # k=64 has no verdict
    runs.loc[runs["config"] == "A-VI k=64", "diverged"] = False
    s = match_summary(runs).set_index("config")
    assert s.loc["A-VI k=64", "verdict"] == "matches (3 seeds)"
    assert smallest_matching_width(s.reset_index())["matching_width"].tolist() == [8]


def test_claims_render_when_true_and_fail_loudly_when_false():
    table = pd.DataFrame(dict(config=["F-VI", "constant-VI"], active_units=[16.0, 0.0]))
    claims = [Claim("constant-VI uses no latent unit",
                    lambda t: t.set_index("config").loc["constant-VI", "active_units"] == 0),
              Claim("F-VI uses at least 8 units", lambda t: t.set_index("config").loc["F-VI", "active_units"] >= 8)]
    assert "constant-VI uses no latent unit" in check_claims(claims, table)
    flipped = table.assign(active_units=[16.0, 3.0])
    with pytest.raises(ClaimError, match="constant-VI uses no latent unit"):
        check_claims(claims, flipped)
    with pytest.raises(ClaimError, match="not checked"):
        check_claims(claims, table.rename(columns={"active_units": "au"}))
    with pytest.raises(ClaimError, match="could not evaluate: ZeroDivisionError"):
        check_claims([Claim("one over zero", lambda t: 1 / 0)], table)


def test_claims_on_a_readers_rerun_list_the_unsupported_ones_instead_of_stopping():
    table = pd.DataFrame(dict(config=["F-VI", "constant-VI"], active_units=[16.0, 3.0]))
    claims = [Claim("constant-VI uses no latent unit",
                    lambda t: t.set_index("config").loc["constant-VI", "active_units"] == 0),
              Claim("F-VI uses at least 8 units", lambda t: t.set_index("config").loc["F-VI", "active_units"] >= 8),
              Claim("A-VI uses 2 units", lambda t: t.set_index("config").loc["A-VI k=2", "active_units"] == 2)]
    text = check_claims(claims, table, strict=False)
    supported, _, unsupported = text.partition("Not supported by these results (2 of 3 statements)")
    assert supported.strip(" \n*") == "- F-VI uses at least 8 units"
    assert "- ✗ constant-VI uses no latent unit" in unsupported
    assert "- ✗ A-VI uses 2 units [not checked: A-VI k=2]" in unsupported
    assert check_claims(claims[1:2], table, strict=False) == "- F-VI uses at least 8 units"
