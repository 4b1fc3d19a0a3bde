"""The exact anchor at MNIST scale: a VAE whose decoder is linear-Gaussian (probabilistic PCA,
fitted by maximum likelihood to 1,000 MNIST images, d = 16, its latent space rotated so that the
posterior is not diagonal). log p(x), the posterior, the F-VI optimum and the ideal encoder are
closed form (amortlib.theory.ppca); the engine's own ELBO, F-VI fitter, gap and IWAE code must
reproduce them on 100 real images, in float64.

Tolerances (nats per image, mean over the images):
- engine ELBO at the closed-form q*: within 3 Monte Carlo standard errors (800 draws);
- engine F-VI fitter from the prior: reaches the closed-form optimum to within 0.05 (scored
  exactly; the shortfall is Adam's noise floor and must be >= 0: nothing beats the optimum);
- amortization gap of the ideal linear encoder: 0, within 0.05 + 3 se below (the refit from
  the optimum can only lose) and 3 se above; of a deliberately wrong encoder: its closed-form
  gap (about 59 nats) within 0.05 + 3 se;
- IWAE_K with q* as proposal: IWAE_1 = ELBO(q*), non-decreasing in K, never above log p(x) by
  more than 3 se, and within 0.1 of log p(x) at K = 1000 (the closed-form approximation gap it
  closes is 1.27 nats)."""
import pytest
import torch

from amortlib import data
from amortlib.model import decode
from amortlib.theory.ppca import PPCA, anchor_model, compare, decoder_theta, float64

N_SE = 3.0
N_IMAGES = 100


@pytest.fixture(scope="module")
def anchor(one_thread):
    x_fit = data.load("mnist", "train", 1000)
    ppca = PPCA.fit(x_fit, 16).rotated(0)
    x = x_fit[:N_IMAGES].double()
    table, details = compare(ppca, x)
    return ppca, x, table.set_index("quantity"), details


def _row(table, start):
    hits = [q for q in table.index if q.startswith(start)]
    assert len(hits) == 1, (start, list(table.index))
    return table.loc[hits[0]]


def test_closed_forms_agree_with_each_other(anchor):
    ppca, x, _, _ = anchor
    # log p(x) by the Woodbury form against the dense 784-dimensional Gaussian
    C = ppca.W @ ppca.W.T + ppca.sigma ** 2 * torch.eye(ppca.D, dtype=torch.float64)
    dense = torch.distributions.MultivariateNormal(ppca.b, C).log_prob(x[:5])
    torch.testing.assert_close(ppca.log_evidence(x[:5]), dense, rtol=0, atol=1e-8)
    # the F-VI optimum misses exactly KL(q* || posterior); the rotation made it non-zero
    opt = ppca.mean_field_optimum(x)
    torch.testing.assert_close(ppca.log_evidence(x) - opt["elbo"],
                               torch.full((len(x),), ppca.approximation_gap, dtype=torch.float64))
    assert ppca.approximation_gap > 1.0
    # and it is a maximum: moving any mean or log sigma lowers the ELBO
    for dmu, dls in [(0.01, 0.0), (0.0, 0.05), (0.0, -0.05)]:
        assert torch.all(ppca.elbo(x, opt["mu"] + dmu, opt["log_sigma"] + dls) < opt["elbo"])
    # the ideal encoder outputs the optimum
    A, c, ls = ppca.ideal_encoder()
    torch.testing.assert_close(x @ A + c, opt["mu"])
    torch.testing.assert_close(ls.expand_as(opt["log_sigma"]), opt["log_sigma"])


def test_engine_decoder_and_encoder_are_exactly_linear(anchor):
    ppca, x, _, _ = anchor
    A, c, ls = ppca.ideal_encoder()
    with float64():
        result = anchor_model(ppca, [(A, c, ls)], len(x))
        model = result.model
        z = 3 * torch.randn(1, 50, ppca.d)                        # both signs, large values
        f = decode(model.decoder.unflatten(model.decoder.m), z)
        torch.testing.assert_close(f[0], z[0] @ ppca.W.T + ppca.b, rtol=0, atol=1e-12)
        q = model.families[0](x, None)
    torch.testing.assert_close(q.mu[0], x @ A + c, rtol=0, atol=1e-12)
    torch.testing.assert_close(q.log_sigma[0], ls.expand(len(x), -1), rtol=0, atol=1e-12)
    assert decoder_theta(ppca).numel() == model.decoder.n_params


def test_engine_elbo_at_the_optimum_equals_the_closed_form(anchor):
    row = _row(anchor[2], "ELBO at the F-VI optimum")
    assert abs(row.difference) < N_SE * row.mc_se, row
    assert 0 < row.mc_se < 0.05, row                           # enough draws to mean something


def test_engine_fvi_fitter_reaches_the_optimum(anchor):
    row = _row(anchor[2], "ELBO reached by F-VI")
    assert -0.05 < row.difference <= 1e-9, row                 # nothing beats the optimum
    fit, reached = anchor[3]["fits"]["fit_q"]
    assert fit.converged == [True]
    assert torch.all(reached <= anchor[3]["elbo_star"] + 1e-9)     # per image too


def test_gap_code_gives_zero_for_the_ideal_encoder_and_the_closed_form_for_a_wrong_one(anchor):
    ideal = _row(anchor[2], "amortization gap, ideal")
    assert -0.05 - N_SE * ideal.mc_se < ideal.engine < N_SE * ideal.mc_se, ideal
    wrong = _row(anchor[2], "amortization gap, wrong")
    assert wrong.closed_form > 10, wrong                       # the test has teeth
    assert abs(wrong.difference) < 0.05 + N_SE * wrong.mc_se, wrong
    assert wrong.mc_se < 0.5, wrong


def test_iwae_rises_with_k_towards_log_px(anchor):
    _, _, table, details = anchor
    iw = details["iwae"]
    star = _row(table, "ELBO at the F-VI optimum").closed_form
    assert abs(iw.bound.iloc[0] - star) < N_SE * iw.mc_se.iloc[0], iw      # IWAE_1 = ELBO(q*)
    r = details["iwae_result"]
    for j in range(len(r.ks) - 1):                             # same draws: precise differences
        step = (r.bound[j + 1] - r.bound[j])[0, 0]
        assert step.mean() > -N_SE * r.bound_se[j + 1, 0, 0].square().mean().sqrt() / len(step) ** 0.5
    lp = _row(table, "log p(x)")
    assert lp.difference < N_SE * lp.mc_se, lp                 # a lower bound
    assert lp.difference > -0.1, lp                            # and close at K = 1000
    gap = _row(table, "approximation gap")
    assert abs(gap.difference) < 0.1, gap
    assert iw.bound.iloc[-1] - iw.bound.iloc[0] > 1.0          # it closed most of the 1.27 nats
