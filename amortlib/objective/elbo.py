r"""The evidence lower bound of the Bayesian VAE, in nats per datapoint.

For N datapoints, a batch B of them, S Monte Carlo samples:

    ELBO = E_q[log p(x | z, theta)] - KL(q(z) || p(z)) - KL(q(theta) || p(theta))
        ~= N/|B| sum_{n in B} [ 1/S sum_s log p(x_n | z_n^s, theta^s) - KL(q(z_n) || N(0, I)) ]
           - KL(q(theta) || N(0, I))

with z_n^s = mu_n + sigma_n * eps, theta^s = m + s * eps' (reparameterisation), both KLs in
closed form and every normalising constant kept, so that E[ELBO] <= log p(x_1..N) exactly.
``neg_elbo`` returns -ELBO / N: nats per image, one number per stacked model.

The function takes q(z) as a ``DiagGaussian`` and never asks which family produced it.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..model.decoder import BayesianDecoder, decode_hidden
from ..model.gaussian import DiagGaussian


class ElboTerms(NamedTuple):
    """Per-model terms, each [M], all in nats per datapoint (divided by N)."""

    expected_log_lik: torch.Tensor
    kl_z: torch.Tensor
    kl_theta: torch.Tensor

    @property
    def elbo(self) -> torch.Tensor:
        return self.expected_log_lik - self.kl_z - self.kl_theta


def elbo_terms(x: torch.Tensor, q_z: DiagGaussian, decoder: BayesianDecoder, likelihood,
               n_total: int, eps_z: torch.Tensor, eps_theta: torch.Tensor,
               q_theta: DiagGaussian | None = None) -> ElboTerms:
    """ELBO terms for M stacked models on a batch.

    x [B, D] (shared by all models); q_z with mu, log_sigma [M, B, d];
    eps_z [M, S, B, d] and eps_theta [M, S, P] standard-normal noise; n_total = N.
    ``q_theta`` defaults to the decoder's own q(theta) (pass a detached one to freeze it).
    """
    q_theta = decoder.q if q_theta is None else q_theta
    M, S, B, d = eps_z.shape
    theta = q_theta.rsample(eps_theta.transpose(0, 1)).transpose(0, 1)      # [M, S, P]
    z = q_z.rsample(eps_z.transpose(0, 1)).transpose(0, 1)                  # [M, S, B, d]
    layers = decoder.unflatten(theta.reshape(M * S, -1))
    h = decode_hidden(layers, z.reshape(M * S, B, d))
    log_lik = likelihood.log_prob_affine(x, h, *layers[4:]).view(M, S, B)  # fp32 reduction
    scale = 1.0 / B                        # (N/B) * sum_B / N
    exp_ll = log_lik.mean(1).sum(-1) * scale
    kl_z = q_z.kl_std_normal().sum(-1) * scale
    kl_theta = q_theta.kl_std_normal() / n_total
    return ElboTerms(exp_ll, kl_z, kl_theta)


def neg_elbo(*args, **kwargs) -> torch.Tensor:
    """-ELBO / N in nats per datapoint, [M]; arguments as ``elbo_terms``."""
    return -elbo_terms(*args, **kwargs).elbo
