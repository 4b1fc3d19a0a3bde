"""The Bayesian decoder: M independent decoders stacked along a leading model axis.

f_theta: z -> like_dim -> like_dim -> x_dim, LeakyReLU(0.2) between layers, as in the reference.
Prior theta ~ N(0, I) over all weights and biases; q(theta) = N(m, diag s^2) over the flattened
parameter vector (P numbers per model). Model i's m is initialised like ``torch.nn.Linear``
(U(-1/sqrt(fan_in), 1/sqrt(fan_in))) from a generator seeded with its seed, so models that
share a seed share the initial decoder (common random numbers across families).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .gaussian import DiagGaussian

SLOPE = 0.2  # LeakyReLU negative slope, decoder and encoder


def decoder_shapes(z_dim: int, like_dim: int, x_dim: int = 784) -> list[tuple[int, ...]]:
    """Shapes of (W1, b1, W2, b2, W3, b3); weights stored [fan_in, fan_out]."""
    return [(z_dim, like_dim), (like_dim,), (like_dim, like_dim), (like_dim,),
            (like_dim, x_dim), (x_dim,)]


def linear_init(shapes, generator: torch.Generator) -> torch.Tensor:
    """Flat vector of nn.Linear-style U(-1/sqrt(fan_in), 1/sqrt(fan_in)) draws, in order."""
    parts, fan_in = [], None
    for shape in shapes:
        fan_in = shape[0] if len(shape) == 2 else fan_in
        bound = 1.0 / math.sqrt(fan_in)
        u = torch.rand(math.prod(shape), generator=generator, dtype=torch.float32)
        parts.append((2 * u - 1) * bound)
    return torch.cat(parts)


class BayesianDecoder(nn.Module):
    """q(theta) for M models: ``m`` and ``log_s`` are [M, P]."""

    def __init__(self, seeds: list[int], z_dim: int, like_dim: int, x_dim: int = 784,
                 log_s_init: float = -5.0):
        super().__init__()
        self.shapes = decoder_shapes(z_dim, like_dim, x_dim)
        self.sizes = [math.prod(s) for s in self.shapes]
        self.n_params = sum(self.sizes)
        m = torch.stack([linear_init(self.shapes, torch.Generator().manual_seed(int(s)))
                         for s in seeds])
        self.m = nn.Parameter(m)
        self.log_s = nn.Parameter(torch.full_like(m, float(log_s_init)))

    @property
    def q(self) -> DiagGaussian:
        return DiagGaussian(self.m, self.log_s)

    def unflatten(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """[M, P] -> per-layer views [M, *shape]."""
        parts = torch.split(theta, self.sizes, dim=-1)
        return [p.reshape(theta.shape[:-1] + s) for p, s in zip(parts, self.shapes)]


def decode_hidden(layers: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden layer, z [M, B, d] -> h [M, B, like_dim]."""
    w1, b1, w2, b2 = layers[:4]
    h = F.leaky_relu(torch.baddbmm(b1.unsqueeze(1), z, w1), SLOPE)
    return F.leaky_relu(torch.baddbmm(b2.unsqueeze(1), h, w2), SLOPE)


def decode(layers: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """f_theta(z) for stacked models: layers from ``unflatten`` ([M, ...]), z [M, B, d] -> [M, B, D]."""
    w3, b3 = layers[4:]
    return torch.baddbmm(b3.unsqueeze(1), decode_hidden(layers, z), w3)
