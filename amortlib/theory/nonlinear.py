r"""A nonlinear model whose ideal inference function is nonlinear.

Model, for n = 1..N (no global latent: a, b, sigma known)::

    z_n ~ N(0, 1),        x_n | z_n ~ N(f(z_n), sigma^2),        f(z) = z + a sin(b z).

With a b < 1, f is strictly increasing (f' = 1 + a b cos(b z) >= 1 - a b > 0), so each posterior
p(z_n | x_n) is concentrated around f^{-1}(x_n), with a width of about sigma / f'(f^{-1}(x_n)) that
swings by a factor (1 + a b)/(1 - a b) as x_n moves along the wiggles of f. The posterior of z_n
depends on x_n only, so the F-VI optimum (mu_n, log omega_n) = (mu*(x_n), log omega*(x_n)) is a
*function* of x_n (the ideal inference function exists) — but a wiggly, nonlinear one. An MLP
encoder of width k approximates it better as k grows: the amortization gap shrinks with k.

**Closed-form ELBO.** For q(z_n) = N(mu, omega^2), with E = exp(-b^2 omega^2 / 2),

    E_q[sin(b z)] = S = sin(b mu) E,   E_q[cos(b z)] = C = cos(b mu) E,
    E_q[z sin(b z)] = mu S + b omega^2 C               (Stein's lemma),
    E_q[sin^2(b z)] = (1 - cos(2 b mu) E^4) / 2,
    E_q[(x - f(z))^2] = (x - mu)^2 + omega^2 - 2 a [(x - mu) S - b omega^2 C] + a^2 E_q[sin^2(b z)],

    ELBO_n = -1/2 log(2 pi sigma^2) - E_q[(x_n - f(z_n))^2] / (2 sigma^2)
             - 1/2 (mu^2 + omega^2 - 1 - 2 log omega).

**Evidence.** log p(x_n) = log int N(z; 0, 1) N(x_n; f(z), sigma^2) dz is a 1-D integral,
computed on a dense grid (trapezoid rule, z in [-10, 10]; accurate to far below 1e-6 here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..model.gaussian import LOG_2PI
from .scalar import DTYPE, ScalarData


@dataclass(frozen=True)
class Nonlinear(ScalarData):
    """x_n ~ N(z_n + a sin(b z_n), sigma^2), z_n ~ N(0, 1)."""

    a: float = 0.225
    b: float = 4.0
    sigma: float = 0.15

    name = "nonlinear"
    has_global = False

    def f(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.a * torch.sin(self.b * z)

    def simulate(self, n: int, seed: int) -> dict:
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, generator=g, dtype=DTYPE)
        eps = torch.randn(n, generator=g, dtype=DTYPE)
        return {"x": self.f(z) + self.sigma * eps, "z": z}

    def elbo_terms(self, x: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
        """ELBO_n, elementwise (broadcasting x against mu, log_sigma)."""
        a, b, sig2 = self.a, self.b, self.sigma ** 2
        om2 = torch.exp(2 * log_sigma)
        damp = torch.exp(-0.5 * b * b * om2)
        s = torch.sin(b * mu) * damp
        c = torch.cos(b * mu) * damp
        e_sin2 = 0.5 * (1.0 - torch.cos(2 * b * mu) * damp ** 4)
        sq = (x - mu) ** 2 + om2 - 2 * a * ((x - mu) * s - b * om2 * c) + a * a * e_sin2
        ell = -0.5 * (LOG_2PI + math.log(sig2)) - sq / (2 * sig2)
        kl = 0.5 * (mu ** 2 + om2 - 1.0 - 2.0 * log_sigma)
        return ell - kl

    def elbo_sum(self, data: dict, mu: torch.Tensor, log_sigma: torch.Tensor,
                 glob: torch.Tensor | None = None) -> torch.Tensor:
        """Total ELBO over n for M stacked models; mu, log_sigma [M, N] (or [M, 1])."""
        x = data["x"]
        t = self.elbo_terms(x, mu, log_sigma)
        return t.expand(t.shape[0], x.shape[0]).sum(-1)

    def log_evidence_terms(self, x: torch.Tensor, grid: int = 40001) -> torch.Tensor:
        """log p(x_n) for each n, by the trapezoid rule on z in [-10, 10]."""
        z = torch.linspace(-10.0, 10.0, grid, dtype=DTYPE)
        dz = float(z[1] - z[0])
        fz = self.f(z)
        sig2 = self.sigma ** 2
        out = []
        for chunk in torch.split(x, 64):
            lp = (-0.5 * (LOG_2PI + z ** 2) - 0.5 * (LOG_2PI + math.log(sig2))
                  - (chunk[:, None] - fz) ** 2 / (2 * sig2))
            w = torch.full_like(z, dz)
            w[0] = w[-1] = dz / 2
            out.append(torch.logsumexp(lp + torch.log(w), dim=1))
        return torch.cat(out)

    def log_evidence(self, data: dict) -> float:
        return float(self.log_evidence_terms(data["x"]).sum())
