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

from ..model.decoder import BayesianDecoder
from ..model.gaussian import DiagGaussian, reparam_kl


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
               q_theta: DiagGaussian | None = None,
               noise_index: torch.Tensor | None = None) -> ElboTerms:
    """ELBO terms for M stacked models on a batch.

    x [B, D] (shared by all models); q_z with mu, log_sigma [M, B, d];
    eps_z [M, S, B, d] and eps_theta [M, S, P] standard-normal noise; n_total = N.
    ``q_theta`` defaults to the decoder's own q(theta) (pass a detached one to freeze it).
    ``noise_index`` [M] (optional): eps_z / eps_theta hold one row per noise stream (e.g. per
    seed, [U, S, ...]) and model m uses row noise_index[m], read in place, never copied.
    q_z's mu and log_sigma may also be lists of pieces stacked along the model axis (e.g. one
    per family, ``StackedVAE.q_z_parts``): they are then never concatenated.
    """
    q_theta = decoder.q if q_theta is None else q_theta
    S, B, d = eps_z.shape[1:]
    M = sum(m.shape[0] for m in q_z.mu) if isinstance(q_z.mu, (list, tuple)) else q_z.mu.shape[0]
    theta, kl_theta = reparam_kl(q_theta.mu, q_theta.log_sigma, eps_theta, noise_index)  # [M,S,P]
    z, kl_z = reparam_kl(q_z.mu, q_z.log_sigma, eps_z, noise_index)                       # [M,S,B,d]
    log_lik = likelihood.log_prob_sum(x, decoder, theta.reshape(M * S, -1),
                                      z.reshape(M * S, B, d)).view(M, S)  # fp32, summed over B
    scale = 1.0 / B                        # (N/B) * sum_B / N
    return ElboTerms(log_lik.mean(1) * scale, kl_z * scale, kl_theta / n_total)


def neg_elbo(*args, **kwargs) -> torch.Tensor:
    """-ELBO / N in nats per datapoint, [M]; arguments as ``elbo_terms``."""
    return -elbo_terms(*args, **kwargs).elbo
