"""The ELBO against independent computations: torch.distributions for the closed-form KLs and
the likelihoods, and a brute-force Monte Carlo average with a hand-written decoder."""
import math

import pytest
import torch
import torch.distributions as D
import torch.nn.functional as F

from amortlib.model import BayesianDecoder, DiagGaussian, GaussianLikelihood, BernoulliLikelihood
from amortlib.objective import elbo_terms, neg_elbo


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, ls = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g) * 0.5
    ours = DiagGaussian(mu, ls).kl_std_normal()
    ref = D.kl_divergence(D.Normal(mu, ls.exp()), D.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sigma", [1.0, 0.3, 0.1])
def test_gaussian_likelihood_keeps_every_constant(sigma):
    g = torch.Generator().manual_seed(1)
    x, f = torch.rand(6, 784, generator=g), torch.randn(6, 784, generator=g)
    ref = D.Normal(f, sigma).log_prob(x).sum(-1)
    torch.testing.assert_close(GaussianLikelihood(sigma).log_prob(x, f), ref, rtol=1e-5, atol=1e-3)


def test_bernoulli_likelihood_and_binarisation():
    g = torch.Generator().manual_seed(2)
    lik = BernoulliLikelihood()
    x = lik.prepare(torch.rand(5, 30, generator=g))
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    f = torch.randn(5, 30, generator=g) * 3
    torch.testing.assert_close(lik.log_prob(x, f), D.Bernoulli(logits=f).log_prob(x).sum(-1))


def _hand_decoder(theta, z, z_dim, h, x_dim):
    """Plain per-layer decoder, written independently of amortlib.model.decode."""
    i = 0
    def take(*shape):
        nonlocal i
        n = math.prod(shape)
        out = theta[i:i + n].reshape(shape)
        i += n
        return out
    w1, b1, w2, b2, w3, b3 = take(z_dim, h), take(h), take(h, h), take(h), take(h, x_dim), take(x_dim)
    a = F.leaky_relu(z @ w1 + b1, 0.2)
    a = F.leaky_relu(a @ w2 + b2, 0.2)
    return a @ w3 + b3


def test_elbo_matches_brute_force_monte_carlo():
    torch.manual_seed(0)
    z_dim, h, x_dim, N, B = 2, 3, 5, 8, 4
    dec = BayesianDecoder([0], z_dim, h, x_dim, log_s_init=-1.0)
    with torch.no_grad():
        dec.m.add_(0.3 * torch.randn_like(dec.m))
    x_all = torch.rand(N, x_dim)
    idx = torch.tensor([1, 3, 4, 6])
    x = x_all[idx]
    mu, ls = 0.5 * torch.randn(1, B, z_dim), -0.5 + 0.2 * torch.randn(1, B, z_dim)
    lik = GaussianLikelihood(0.5)
    S = 40_000
    eps_z, eps_t = torch.randn(1, S, B, z_dim), torch.randn(1, S, dec.n_params)
    with torch.no_grad():
        ours = elbo_terms(x, DiagGaussian(mu, ls), dec, lik, N, eps_z, eps_t)
        # independent: sample with torch.distributions, decode by hand, average
        q_t = D.Normal(dec.m[0], dec.log_s[0].exp())
        q_z = D.Normal(mu[0], ls[0].exp())
        ll = []
        for s in range(0, 4000):
            theta, z = q_t.sample(), q_z.sample()
            f = _hand_decoder(theta, z, z_dim, h, x_dim)
            ll.append(D.Normal(f, 0.5).log_prob(x).sum(-1))
        ll = torch.stack(ll)                                  # [S', B]
        brute_exp_ll = (N / B) * ll.mean(0).sum() / N
        se = (N / B) * ll.sum(-1).std() / math.sqrt(len(ll)) / N
        kl_z = D.kl_divergence(q_z, D.Normal(0.0, 1.0)).sum() * (N / B) / N
        kl_t = D.kl_divergence(q_t, D.Normal(0.0, 1.0)).sum() / N
    assert abs(ours.expected_log_lik.item() - brute_exp_ll.item()) < 4 * se.item() + 1e-3
    torch.testing.assert_close(ours.kl_z, kl_z.reshape(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.kl_theta, kl_t.reshape(1), rtol=1e-5, atol=1e-6)
    total = neg_elbo(x, DiagGaussian(mu, ls), dec, lik, N, eps_z, eps_t)
    torch.testing.assert_close(total, -(ours.expected_log_lik - ours.kl_z - ours.kl_theta))


def test_elbo_is_a_lower_bound_in_a_case_with_known_evidence():
    """With a zero-weight decoder pinned (s -> 0) at bias b, p(x) = N(x; b, sigma^2) exactly and the
    z-part of the ELBO is maximised by q(z) = p(z): the bound must be tight and never above."""
    z_dim, h, x_dim, N = 2, 3, 4, 5
    dec = BayesianDecoder([0], z_dim, h, x_dim, log_s_init=-30.0)
    b = torch.linspace(-0.5, 0.5, x_dim)
    with torch.no_grad():
        dec.m.zero_()
        dec.m[0, -x_dim:] = b
    x = torch.rand(N, x_dim)
    lik = GaussianLikelihood(0.7)
    log_px = D.Normal(b, 0.7).log_prob(x).sum()
    kl_theta = DiagGaussian(dec.m, dec.log_s).kl_std_normal().item()
    for scale in [0.0, -1.0]:   # q(z) = prior, then a worse q(z)
        q = DiagGaussian(torch.zeros(1, N, z_dim), torch.full((1, N, z_dim), scale))
        t = elbo_terms(x, q, dec, lik, N, torch.randn(1, 8, N, z_dim), torch.randn(1, 8, dec.n_params))
        elbo_z = (t.expected_log_lik - t.kl_z).item() * N      # ELBO without the theta KL
        assert elbo_z <= log_px.item() + 1e-4
        if scale == 0.0:
            assert elbo_z == pytest.approx(log_px.item(), abs=1e-4)
    assert kl_theta > 0


def test_fused_gaussian_path_matches_autograd_reference():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(3, 7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 5, 9, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 9, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.rand(7, 9, generator=g, dtype=torch.float64)
    lik = GaussianLikelihood(0.3)
    fused = lik.log_prob_affine(x, h, w, b)
    plain = lik.log_prob(x, torch.baddbmm(b.unsqueeze(1), h, w))
    torch.testing.assert_close(fused, plain)
    wts = torch.randn(3, 7, generator=g, dtype=torch.float64)
    gf = torch.autograd.grad((fused * wts).sum(), (h, w, b))
    gp = torch.autograd.grad((plain * wts).sum(), (h, w, b))
    for a, c in zip(gf, gp):
        torch.testing.assert_close(a, c)
