"""Observation models p(x | z, theta) given the decoder output f = f_theta(z), summed over pixels.

Gaussian:  log N(x; f, sigma^2 I) = -D/2 log(2 pi sigma^2) - ||x - f||^2 / (2 sigma^2)
Bernoulli: log Bern(x; sigmoid f)  = sum_i x_i f_i - softplus(f_i)   (x binary)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .gaussian import LOG_2PI


class GaussianLikelihood:
    name = "gaussian"

    def __init__(self, sigma: float = 1.0):
        self.sigma = float(sigma)
        self._const = -0.5 * (LOG_2PI + 2 * math.log(self.sigma))
        self._scale = -0.5 / self.sigma ** 2

    def log_prob(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Summed over the last axis (pixels); all constants kept."""
        return self._const * x.shape[-1] + self._scale * (x - f).square().sum(-1)

    def mean(self, f: torch.Tensor) -> torch.Tensor:
        return f

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x


class BernoulliLikelihood:
    """Bernoulli pixels. Its density is normalised only for binary x, so ``prepare``
    binarises images at 0.5 and the ELBO then bounds log p of the binarised image."""

    name = "bernoulli"

    def log_prob(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return (x * f - F.softplus(f)).sum(-1)

    def mean(self, f: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(f)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0.5).to(x.dtype)


def make_likelihood(name: str, sigma: float = 1.0):
    if name == "gaussian":
        return GaussianLikelihood(sigma)
    if name == "bernoulli":
        return BernoulliLikelihood()
    raise ValueError(f"likelihood={name!r} is invalid: expected 'gaussian' or 'bernoulli'")
