"""The theory examples of chapters 2 and 7 (amortlib.theory): exact, small, CPU-fast.

What is checked, with the tolerance stated where a number is compared:

- normal-normal: the closed forms (posterior moments, log p(x), the mean-field optimum) agree
  with a brute-force dense Gaussian computation (1e-10); fitted F-VI and affine A-VI reach the
  mean-field optimum: means of q(z_n) and q(theta) equal the exact posterior means to 1e-6,
  variances equal the inverse diagonal of the posterior precision to 1e-6 (relative) and are
  strictly below the exact marginal variances; constant-VI's ELBO is below by > 0.5 nats/datapoint;
- every ELBO (every Adam step, every family) stays below log p(x) (exact, or quadrature);
- nonlinear model: the amortization gap at width 64 is below a tenth of the gap at width 1;
- saw series: x_n-only encoders keep a gap above 1 nat/datapoint at every width (and above 70%
  of the best x_n-independent q's gap), (x_n, x_{n+1}) encoders get below 0.01 at every width;
- the gap explorer widget re-fits and redraws when its controls change.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from amortlib.theory import fit as tf
from amortlib.theory.nonlinear import Nonlinear
from amortlib.theory.normal_normal import NormalNormal
from amortlib.theory.saw import Saw


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def nn_fits():
    res = tf.compare("normal_normal", width=None, n=100, seed=0)
    return res


@pytest.fixture(scope="module")
def nonlinear_sweep():
    return tf.width_sweep("nonlinear", [1, 64], n=256, seed=0)


@pytest.fixture(scope="module")
def saw_sweeps():
    model = Saw()
    data = model.simulate(256, 0)
    x_only = tf.width_sweep(model, [1, 64], inputs="x", data=data)
    pair = tf.width_sweep(model, [1, 64], inputs="x,x_next", data=data)
    return model, data, x_only, pair


# ----------------------------------------------------------------------------- normal-normal
def _dense_posterior(model: NormalNormal, x: np.ndarray):
    """Brute force: the joint precision of (theta, z_1..N) and its inverse."""
    n = len(x)
    tau, s2, s0 = model.tau, model.sigma ** 2, model.prior_sd
    lam = np.zeros((n + 1, n + 1))
    lam[0, 0] = 1 / s0 ** 2 + n / s2
    lam[0, 1:] = lam[1:, 0] = tau / s2
    lam[1:, 1:] = np.eye(n) * (1 + tau ** 2 / s2)
    h = np.concatenate([[x.sum() / s2], tau * x / s2])
    cov = np.linalg.inv(lam)
    return lam, cov, cov @ h


def test_normal_normal_closed_forms_match_brute_force():
    model = NormalNormal()
    data = model.simulate(30, seed=3)
    x = data["x"].numpy()
    lam, cov, mean = _dense_posterior(model, x)
    ex = model.exact_posterior(data)
    assert abs(ex["mean_theta"] - mean[0]) < 1e-10
    assert abs(ex["var_theta"] - cov[0, 0]) < 1e-10
    np.testing.assert_allclose(ex["mean_z"].numpy(), mean[1:], atol=1e-10)
    np.testing.assert_allclose(ex["var_z"].numpy(), np.diag(cov)[1:], atol=1e-10)
    # mean-field optimum: variances are 1 / diag(precision)
    assert abs(ex["mf_var_theta"] - 1 / lam[0, 0]) < 1e-12
    np.testing.assert_allclose(ex["mf_var_z"].numpy(), 1 / np.diag(lam)[1:], atol=1e-12)
    # log evidence: x ~ N(0, V I + s0^2 11^T)
    c = (model.sigma ** 2 + model.tau ** 2) * np.eye(len(x)) + model.prior_sd ** 2
    _, logdet = np.linalg.slogdet(c)
    dense = -0.5 * (len(x) * math.log(2 * math.pi) + logdet + x @ np.linalg.solve(c, x))
    assert abs(model.log_evidence(data) - dense) < 1e-9
    # the optimum's ELBO, computed from the ELBO formula, equals log p(x) - KL(q* || p)
    opt = model.optimum(data)
    assert abs(opt["elbo"] - opt["elbo_formula"]) < 1e-9
    kl_dense = 0.5 * (np.log(np.diag(lam)).sum() - np.linalg.slogdet(lam)[1])
    assert abs(opt["kl"] - kl_dense) < 1e-9


@pytest.mark.parametrize("family", ["factorized", "amortized"])
def test_fvi_and_affine_avi_reach_the_exact_posterior_means(nn_fits, family):
    model, data = nn_fits["model"], nn_fits["data"]
    ex = model.exact_posterior(data)
    r = nn_fits[family]
    # means: equal to the exact posterior means
    assert np.abs(r.mu - ex["mean_z"].numpy()).max() < 1e-6
    assert abs(r.glob[0] - ex["mean_theta"]) < 1e-6
    # variances: the mean-field values 1 / diag(precision), strictly below the exact marginals
    var_q = np.exp(2 * r.log_sigma)
    np.testing.assert_allclose(var_q, ex["mf_var_z"].numpy(), rtol=1e-6)
    assert np.all(var_q < ex["var_z"].numpy())
    var_theta = math.exp(2 * r.glob[1])
    assert abs(var_theta / ex["mf_var_theta"] - 1) < 1e-6
    assert var_theta < ex["var_theta"]
    # ELBO: the closed-form optimum's
    opt = model.optimum(data)
    assert abs(r.elbo - opt["elbo"] / model.n_local(data)) < 1e-9


def test_affine_avi_has_no_amortization_gap_and_learns_the_ideal_function(nn_fits):
    assert abs(nn_fits["gap_amortized"]) < 1e-9
    ex = nn_fits["model"].exact_posterior(nn_fits["data"])
    grid = torch.linspace(-15, 20, 71, dtype=torch.float64)[:, None]   # far beyond the data
    mu, ls = nn_fits["amortized"].encoder(grid)
    ideal = ex["ideal_slope"] * grid[:, 0] + ex["ideal_intercept"]
    assert torch.max(torch.abs(mu - ideal)) < 1e-5
    assert torch.max(torch.abs(ls - ex["ideal_log_sigma"])) < 1e-5


def test_constant_vi_is_strictly_worse(nn_fits):
    assert nn_fits["constant"].elbo < nn_fits["factorized"].elbo - 0.5
    assert nn_fits["gap_constant"] > 0.5


def test_no_elbo_exceeds_the_log_evidence(nn_fits, nonlinear_sweep, saw_sweeps):
    for res in (nn_fits, nonlinear_sweep):
        fits = [res["factorized"], res["constant"]]
        fits += res["amortized"] if isinstance(res["amortized"], list) else [res["amortized"]]
        for r in fits:
            assert r.elbo <= res["log_evidence"] + 1e-9, r.label
            assert np.max(r.curve) <= res["log_evidence"] + 1e-9, r.label
    # approximation gap of the normal-normal F-VI optimum: exactly KL(q* || p) > 0
    kl = nn_fits["model"].optimum(nn_fits["data"])["kl"] / 100
    assert abs(nn_fits["log_evidence"] - nn_fits["factorized"].elbo - kl) < 1e-9
    # saw: the posterior factorises, so F-VI's optimum is exact and its ELBO is log p(x)
    _, _, x_only, pair = saw_sweeps
    assert abs(x_only["factorized"].elbo - x_only["log_evidence"]) < 1e-9
    for r in x_only["amortized"] + pair["amortized"] + [x_only["constant"]]:
        assert np.max(r.curve) <= x_only["log_evidence"] + 1e-9


# ----------------------------------------------------------------------------- nonlinear
def test_nonlinear_fvi_is_the_global_optimum_per_datapoint(nonlinear_sweep):
    """The F-VI objective separates over n; a dense grid over (mu, log omega) finds nothing
    better than the fitted F-VI for any datapoint (the gap reference is sound)."""
    model, data, fvi = nonlinear_sweep["model"], nonlinear_sweep["data"], nonlinear_sweep["factorized"]
    x = data["x"][:, None, None]
    mus = torch.linspace(-4, 4, 401, dtype=torch.float64)[None, :, None]
    lss = torch.linspace(-5, 0.5, 111, dtype=torch.float64)[None, None, :]
    best = model.elbo_terms(x, mus, lss).amax(dim=(1, 2))
    fitted = model.elbo_terms(data["x"], torch.tensor(fvi.mu), torch.tensor(fvi.log_sigma))
    assert torch.all(fitted >= best - 1e-8)


def test_nonlinear_gap_shrinks_with_width(nonlinear_sweep):
    gaps = nonlinear_sweep["gaps"]
    assert gaps[1] > 0.1
    assert gaps[64] < 0.1 * gaps[1]
    assert min(gaps.values()) > -1e-6          # A-VI never beats F-VI's optimum


def test_nonlinear_log_evidence_quadrature():
    """The grid integral matches a much finer one, and is exact for a linear f (a = 0)."""
    model = Nonlinear()
    x = model.simulate(20, 1)["x"]
    coarse, fine = model.log_evidence_terms(x), model.log_evidence_terms(x, grid=160001)
    assert torch.max(torch.abs(coarse - fine)) < 1e-8
    lin = Nonlinear(a=0.0)
    v = 1 + lin.sigma ** 2
    exact = -0.5 * (math.log(2 * math.pi * v) + x ** 2 / v)
    assert torch.max(torch.abs(lin.log_evidence_terms(x) - exact)) < 1e-8


# ----------------------------------------------------------------------------- saw
def test_saw_x_only_encoders_stall_and_pair_encoders_close_the_gap(saw_sweeps):
    model, data, x_only, pair = saw_sweeps
    limit = model.x_only_limit(data)          # gap of the best x_n-independent q
    assert abs(limit - x_only["gap_constant"]) < 1e-6
    for w, gap in x_only["gaps"].items():
        assert gap > 1.0, (w, gap)
        assert gap > 0.7 * limit, (w, gap, limit)
    for w, gap in pair["gaps"].items():
        assert gap < 0.01, (w, gap)


def test_saw_x_only_encoders_do_not_generalise(saw_sweeps):
    """What an x_n-only encoder gains on its training series is memorisation: on a new series
    its gap is at least 90% of the population floor 1 / (2 sigma^2)."""
    model, _, x_only, pair = saw_sweeps
    floor = 1 / (2 * model.sigma ** 2)
    for w, gap in tf.heldout_gaps(x_only["amortized"], seed=1000).items():
        assert gap > 0.9 * floor, (w, gap)
    for w, gap in tf.heldout_gaps(pair["amortized"], seed=1000).items():
        assert gap < 0.01, (w, gap)


# ----------------------------------------------------------------------------- API
def test_fits_are_deterministic():
    a = tf.fit("saw", "amortized", width=4, n=64, seed=5, steps=50, polish=20)
    b = tf.fit("saw", "amortized", width=4, n=64, seed=5, steps=50, polish=20)
    assert a.elbo == b.elbo
    np.testing.assert_array_equal(a.curve, b.curve)
    assert len(a.curve) == 51


def test_stacked_affine_fit_equals_single_fit():
    data = Saw().simulate(64, 2)
    stacked = tf.fit_many("saw", "amortized", [None, 4], inputs="x,x_next", data=data)
    single = tf.fit("saw", "amortized", width=None, inputs="x,x_next", data=data)
    assert abs(stacked[0].elbo - single.elbo) < 1e-9


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="model="):
        tf.fit("nope", "factorized")
    with pytest.raises(ValueError, match="family="):
        tf.fit("saw", "semi-amortized")
    with pytest.raises(ValueError, match="inputs="):
        tf.fit("saw", "amortized", inputs="x_prev")
    with pytest.raises(ValueError, match="global"):
        tf.heldout_gaps([tf.fit("normal_normal", "amortized", n=20, steps=5, polish=0)])


def test_gap_explorer_redraws_on_every_control():
    from amortlib.widgets.gap_explorer import GapExplorer

    w = GapExplorer(model="normal_normal", width=None, n=64, steps=30)
    assert abs(w.result["gap_amortized"]) < 1e-6          # affine A-VI, polished: no gap
    first = w.plot.outputs[0]["data"]
    assert "application/vnd.plotly.v1+json" in first and "text/html" in first
    w.model_w.value = "saw"                                   # x_n-only encoder on the saw
    assert w.result["model"].name == "saw" and w.result["gap_amortized"] > 0.5
    w.inputs_w.value = "x,x_next"
    assert w.result["amortized"].inputs == "x,x_next" and w.result["gap_amortized"] < 0.01
    w.seed_w.value = 3
    assert w.result["amortized"].seed == 3
    assert "amortization gap" in w.status.value
