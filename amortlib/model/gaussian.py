"""Diagonal Gaussians and their closed-form KL to a standard normal."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

LOG_2PI = math.log(2 * math.pi)


class DiagGaussian(NamedTuple):
    """q = N(mu, diag(exp(log_sigma))^2); tensors of any matching shape."""

    mu: torch.Tensor
    log_sigma: torch.Tensor

    def rsample(self, eps: torch.Tensor) -> torch.Tensor:
        """Reparameterised draw mu + sigma * eps, eps ~ N(0, I)."""
        return self.mu + self.log_sigma.exp() * eps

    def kl_std_normal(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over the last axis:
        1/2 sum_j (sigma_j^2 + mu_j^2 - 1 - 2 log sigma_j)."""
        return kl_std_normal(self.mu, self.log_sigma)


def kl_std_normal(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over the last axis, in nats."""
    return 0.5 * ((2 * log_sigma).exp() + mu.square() - 1.0 - 2 * log_sigma).sum(-1)
