"""The gap measurements (amortlib.gap): an exactly solvable linear-Gaussian model first, where
log p(x), the best mean-field ELBO and hence the approximation gap are known in closed form;
then a small Bayesian VAE trained on real MNIST images, where the amortization gap must be
non-negative up to its stated Monte Carlo error, refinement must never lower the ELBO, and
the IWAE bound must rise with K and sit above the ELBO."""
import pytest
import torch

from amortlib import SweepConfig, data
from amortlib.gap import (GAP_COLUMNS, GAP_EXTRA_COLUMNS, decompose, elbo_samples, encoder_q,
                          eval_noise, fit_q, gap_table, iwae, mean_se, measure_gap, per_image_se,
                          single_encoder, summarise)
from amortlib.model import BayesianDecoder, DiagGaussian, GaussianLikelihood
from amortlib.theory.ppca import PPCA, decoder_theta
from amortlib.train import run_sweep

N_SE = 3.0   # "up to Monte Carlo error": estimates may fall this many standard errors short


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- exact model
def _linear_decoder(A: torch.Tensor, b: torch.Tensor) -> BayesianDecoder:
    """A BayesianDecoder whose mean network is exactly f(z) = z A + b (the mirrored-unit
    construction of ``amortlib.theory.ppca.decoder_theta``)."""
    d, D = A.shape
    dec = BayesianDecoder([0], z_dim=d, like_dim=2 * d, x_dim=D, log_s_init=-30.0)
    with torch.no_grad():
        dec.m.copy_(decoder_theta(PPCA(A.T.double(), b.double(), 1.0))[None])
    return dec


@pytest.fixture(scope="module")
def exact():
    g = torch.Generator().manual_seed(0)
    d, D, n, sigma = 2, 6, 8, 0.5
    A = torch.randn(d, D, generator=g) * 0.8
    b = torch.randn(D, generator=g) * 0.3
    dec, lik = _linear_decoder(A, b), GaussianLikelihood(sigma)
    z = torch.randn(n, d, generator=g)
    x = z @ A + b + sigma * torch.randn(n, D, generator=g)
    cov = A.T @ A + sigma ** 2 * torch.eye(D)                        # p(x) = N(b, A^T A + s^2 I)
    log_px = torch.distributions.MultivariateNormal(b.double(), cov.double()).log_prob(x.double())
    prec = torch.eye(d, dtype=torch.float64) + (A @ A.T).double() / sigma ** 2
    # best diagonal Gaussian for a Gaussian posterior: the posterior mean and 1 / diag(precision);
    # what it misses, KL(q* || p(z | x)) = 1/2 (sum log diag(prec) - log det prec), the same for all n
    approx_gap = 0.5 * (prec.diagonal().log().sum() - torch.logdet(prec))
    return dict(dec=dec, lik=lik, x=x, log_px=log_px, approx_gap=float(approx_gap), d=d)


def test_linear_decoder_is_exactly_linear(exact):
    from amortlib.model import decode
    dec = exact["dec"]
    z = torch.randn(1, 5, exact["d"])
    f = decode(dec.unflatten(dec.m), z)
    w3 = dec.unflatten(dec.m)[4][0]
    A = (w3[: exact["d"]] * 1.2)
    torch.testing.assert_close(f[0], z[0] @ A + dec.unflatten(dec.m)[5][0], rtol=1e-5, atol=1e-5)


def test_fvi_reaches_the_best_mean_field_elbo_and_iwae_reaches_log_px(exact):
    dec, lik, x = exact["dec"], exact["lik"], exact["x"]
    n, d = x.shape[0], exact["d"]
    fit = fit_q(dec, lik, x, [0], None, lr=0.05, n_mc=4, tol=1e-4, max_steps=4000, theta="mean")
    assert fit.converged == [True]
    eps_z, eps_t = eval_noise([0], 4000, n, d, dec.n_params, "mean", 0, x.device)
    e = elbo_samples(dec, lik, x, fit.q, [0], eps_z, eps_t)               # [1, S, n]
    best = exact["log_px"] - exact["approx_gap"]                          # best ELBO, per image
    est, se = mean_se(e - best.float()[None, None])
    assert abs(float(est)) < 0.02 + N_SE * float(se), (float(est), float(se))
    r = iwae(dec, lik, x, fit.q, [0], ks=(1, 10, 100, 2000), theta="mean")
    top = r.bound[-1, 0, 0]                                               # [n]
    assert torch.all(top > exact["log_px"] - 0.02), (top - exact["log_px"])
    assert torch.all(top < exact["log_px"] + N_SE * r.bound_se[-1, 0, 0] + 1e-3)
    # and the measured approximation gap is the closed-form one
    gap = (r.bound[-1, 0, 0] - r.elbo[0, 0]).mean()
    assert abs(float(gap) - exact["approx_gap"]) < 0.03, (float(gap), exact["approx_gap"])
    assert exact["approx_gap"] > 0.05                                     # the test has teeth


def test_iwae_gaussian_shortcut_equals_the_likelihood_itself(trained):
    result, x, _ = trained
    model = result.model

    class Plain:                                  # the same likelihood, without the shortcut
        name = "plain"

        def log_prob(self, x, f):
            return model.likelihood.log_prob(x, f)

    idx = list(range(model.n_models))
    q = encoder_q(model, x[:7], idx)
    a = iwae(model.decoder, model.likelihood, x[:7], q, idx, ks=(1, 5, 20), n_theta=2)
    b = iwae(model.decoder, Plain(), x[:7], q, idx, ks=(1, 5, 20), n_theta=2)
    torch.testing.assert_close(a.bound, b.bound, rtol=0, atol=2e-3)
    torch.testing.assert_close(a.elbo, b.elbo, rtol=0, atol=2e-3)
    torch.testing.assert_close(a.bound[0], a.elbo, rtol=0, atol=1e-9)   # IWAE_1 is the ELBO


def test_bernoulli_likelihood_takes_the_general_path(trained):
    """Bernoulli pixels: the same bounds, through the likelihood's own log_prob; the ELBO
    estimate of ``iwae`` agrees with ``elbo_samples`` (independent draws) within their errors."""
    from amortlib.model import BernoulliLikelihood
    result, x, _ = trained
    model, lik = result.model, BernoulliLikelihood()
    xb = lik.prepare(x[:10])
    idx = list(range(model.n_models))
    q = encoder_q(model, xb, idx)
    r = iwae(model.decoder, lik, xb, q, idx, ks=(1, 8, 64), theta="mean")
    assert torch.isfinite(r.bound).all()
    torch.testing.assert_close(r.bound[0], r.elbo, rtol=0, atol=1e-9)
    eps_z, eps_t = eval_noise([0] * len(idx), 256, 10, q.mu.shape[-1], model.decoder.n_params,
                              "mean", 5, x.device)
    e = elbo_samples(model.decoder, lik, xb, q, idx, eps_z, eps_t)          # [M, 256, n]
    diff = e.double().mean(1) - r.elbo[:, 0]                                # [M, n], per image
    se = (per_image_se(e).square() + r.elbo_se[:, 0].square()).sqrt()
    z = diff.mean(1) / (se.square().mean(1) / diff.shape[1]).sqrt()        # mean over images
    assert torch.all(z.abs() < 4), (diff.mean(1), z)


# --------------------------------------------------------------------------- a trained model
@pytest.fixture(scope="module")
def trained(one_thread):
    x = data.load("mnist", "train", 200)
    xt = data.load("mnist", "test", 100)
    cfg = SweepConfig(n_obs=200, n_test=100, z_dim=4, like_dim=32, widths=(2, 32), seeds=(0,),
                      families=("amortized", "constant"), epochs=150, lr=3e-3, sigma=0.3,
                      eval_points=4, progress=False, device="cpu")
    result = run_sweep(cfg, x, xt, calibrate_steps=0)
    m = measure_gap(result, "train", 60, x_train=x, n_eval=48, lr=0.05,
                    refine_steps=(1, 2, 5, 10, 20, 50))
    return result, x, m


def test_single_encoder_equals_its_slice_of_the_stack(trained):
    result, x, _ = trained
    model = result.model
    idx = list(range(model.n_models))
    q = encoder_q(model, x[:9], idx)
    for j, i in enumerate(idx):
        one = single_encoder(model, i, x[:9])
        torch.testing.assert_close(one.mu, q.mu[j], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(one.log_sigma, q.log_sigma[j], rtol=1e-5, atol=1e-5)
    assert {s.family for s in model.specs} >= {"amortized", "constant"}


def test_a_model_without_an_inference_function_is_named(trained):
    model = trained[0].model
    for pos in range(model.model_slice("factorized").start, model.model_slice("factorized").stop):
        with pytest.raises(ValueError, match="F-VI model .* has no inference function"):
            single_encoder(model, pos, trained[1][:3])
    with pytest.raises(IndexError, match="pos=.* is invalid"):
        single_encoder(model, model.n_models, trained[1][:3])


def test_gap_is_nonnegative_up_to_its_monte_carlo_error(trained):
    _, _, m = trained
    t = m.table()
    assert (t["gap_mean"] >= -N_SE * t["gap_se"]).all(), t
    assert (t["converged"]).all()
    # a real gap is detected: the narrow encoder (k = 2) leaves one on its own training images
    k2 = t[t.config == "A-VI k=2"].iloc[0]
    assert k2.gap_lo > 0, k2
    # per image: gap_n >= 0 up to its own Monte Carlo error for (nearly) every image
    p = m.per_image()
    below = (p["gap"] < -N_SE * p["gap_se"] - 0.05).mean()
    assert below <= 0.02, p[p["gap"] < -N_SE * p["gap_se"]]
    # the Monte Carlo error is small against the gaps it qualifies
    assert (t["mc_se"] < 0.25 * t["gap_mean"].abs().clip(lower=1.0)).all(), t[["config", "gap_mean", "mc_se"]]


def test_refinement_from_the_encoder_never_lowers_the_elbo(trained):
    _, _, m = trained
    ks = [0] + sorted(m.refined)
    elbos = [m.elbo_enc] + [m.refined[k] for k in ks[1:]] + [m.elbo_star]
    for a, b in zip(elbos[:-1], elbos[1:]):        # each later q against the one before it
        est, se = mean_se(b - a)                   # common random numbers
        assert torch.all(est >= -N_SE * se), (est, se)
    r = m.refinement()
    assert list(r[r.config == "A-VI k=2"].steps) == ks
    assert (r.gain_mean >= -N_SE * r.gain_se).all()


def test_iwae_rises_with_k_and_sits_above_the_elbo(trained):
    result, _, m = trained
    model = result.model
    n = 30
    q = DiagGaussian(m.q_star.mu[:, :n], m.q_star.log_sigma[:, :n])
    r = iwae(model.decoder, model.likelihood, m.x[:n], q, m.index, ks=(1, 4, 16, 64, 256, 1024),
             n_theta=2)
    for j in range(len(r.ks) - 1):                 # same draws: differences are precise
        est, se = mean_se(r.bound[j + 1] - r.bound[j])
        assert torch.all(est >= -N_SE * se), (r.ks[j + 1], est, se)
    for j in range(len(r.ks)):
        est, se = mean_se(r.bound[j] - r.elbo)
        assert torch.all(est >= -N_SE * se), (r.ks[j], est, se)
    est, se = mean_se(r.bound[-1] - r.elbo)
    assert torch.all(est - N_SE * se > 0)          # strictly above: the bound has teeth


def test_decomposition_adds_up(trained):
    result, _, m = trained
    d = decompose(result, m, 20, ks=(1, 10, 200), n_theta=2)
    t = d.table
    torch.testing.assert_close(torch.tensor((t.approx_gap + t.amort_gap).to_numpy()),
                               torch.tensor(t.inference_gap.to_numpy()), rtol=0, atol=1e-6)
    assert (t.approx_gap >= -N_SE * t.approx_gap_se).all()
    assert (t.log_px >= t.elbo_fvi - N_SE * t.approx_gap_se).all()
    assert set(d.iwae.proposal) == {"q*", "encoder"} and set(d.iwae.K) == {1, 10, 200}


def test_fitting_beside_other_models_changes_nothing(trained):
    result, x, _ = trained
    model = result.model
    idx = list(range(model.n_models))
    xs = x[:12]
    q = encoder_q(model, xs, idx)
    seeds = [model.specs[i].seed for i in idx]
    opts = dict(lr=0.05, max_steps=30, tol=-1e9, model_seeds=None)
    joint = fit_q(model.decoder, model.likelihood, xs, idx, q, **{**opts, "model_seeds": seeds})
    for j, i in enumerate(idx):
        one = DiagGaussian(q.mu[j:j + 1], q.log_sigma[j:j + 1])
        alone = fit_q(model.decoder, model.likelihood, xs, [i], one, **{**opts, "model_seeds": [seeds[j]]})
        torch.testing.assert_close(alone.q.mu[0], joint.q.mu[j], rtol=1e-4, atol=1e-4)


def test_gap_table_has_the_documented_columns(trained):
    result, x, _ = trained
    t = gap_table(result, n_images=25, x_train=x, n_eval=8, lr=0.05, max_steps=200)
    assert list(t.columns) == GAP_COLUMNS + GAP_EXTRA_COLUMNS
    assert len(t) == 2 * 3 and set(t.split) == {"train", "test"} and (t.n == 25).all()
    assert set(t.config) == {"A-VI k=2", "A-VI k=32", "constant-VI"}
    assert (t.gap_lo <= t.gap_mean).all() and (t.gap_mean <= t.gap_hi).all()
    assert t[GAP_COLUMNS].notna().drop(columns="width").all().all()
    assert t.loc[t.family == "constant", "width"].isna().all()
    s = summarise(t)
    assert len(s) == 6 and (s.seeds == 1).all()
    with pytest.raises(ValueError, match="n_images"):
        gap_table(result, n_images=10_000, x_train=x)


def test_a_dead_model_is_not_fitted_and_the_others_are_unchanged(trained):
    """A model whose training diverged or blew up gets a row with no gap (NaN, fit_steps 0);
    its NaN local ELBO would never meet the stopping rule and held the batch at max_steps.
    The live models' rows are exactly those of the table without the flag."""
    import dataclasses

    import numpy as np
    result, x, _ = trained
    opts = dict(n_images=20, x_train=x, n_eval=8, lr=0.05, max_steps=400, splits=("train",))
    live = gap_table(result, **opts)
    runs = result.runs.copy()
    runs["blew_up"] = runs["config"].eq("A-VI k=32")
    dead = gap_table(dataclasses.replace(result, runs=runs), **opts)
    row = dead[dead.config == "A-VI k=32"].iloc[0]
    assert np.isnan(row.gap_mean) and np.isnan(row.elbo_fvi) and row.fit_steps == 0 and not row.converged
    others = dead.config != "A-VI k=32"
    assert dead[others].equals(live[others])
    assert (live.loc[live.config == "A-VI k=32", "fit_steps"] > 0).all()
