r"""Variational inference in one dimension, exactly: the numbers behind chapter 1.

The model is a location parameter seen through Cauchy noise, with a Gaussian prior,

    z ~ N(0, prior_scale^2),        x_i | z ~ Cauchy(z, noise_scale),   i = 1..n,

so the posterior p(z | x) has no closed form and, for observations in two clusters, two
modes. Being one-dimensional it can still be computed to high accuracy on a grid, and with it
the evidence log p(x). The variational family is q(z) = N(m, s^2) with s = exp(log_scale):

- ``elbo`` computes ELBO(q) = E_q[log p(x, z)] + H[q] by quadrature in z = m + s * eps,
- ``kl_to_posterior`` computes KL(q || p(z | x)) on the grid, from the normalised posterior,

and the two routes meet in the identity log p(x) = ELBO(q) + KL(q || p(z | x)), which
``summary`` checks for any (m, log s). ``fit_gaussian`` maximises the ELBO with the
reparameterisation trick, z = m + s * eps with eps ~ N(0, 1), and Adam. Everything is numpy,
float64 and deterministic for a given seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..plots.format import sig3

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class CauchyLocationModel:
    """z ~ N(0, prior_scale^2); x_i | z ~ Cauchy(z, noise_scale).

    The defaults give a posterior with two modes (near -1.6 and 2.3, ~60% of the mass on the
    left) and a Gaussian ELBO with three local maxima: one on each mode and a wide q between.
    """

    x: tuple[float, ...] = (-2.0, -1.4, 2.1, 2.9)
    prior_scale: float = 2.5
    noise_scale: float = 0.4

    def __post_init__(self):
        if len(self.x) == 0:
            raise ValueError("x must hold at least one observation")
        if not self.prior_scale > 0 or not self.noise_scale > 0:
            raise ValueError("prior_scale and noise_scale must be > 0")

    def log_prior(self, z):
        z = np.asarray(z, dtype=float)
        return -0.5 * (z / self.prior_scale) ** 2 - math.log(self.prior_scale) - 0.5 * _LOG_2PI

    def log_likelihood(self, z):
        """sum_i log Cauchy(x_i | z, noise_scale), elementwise in z."""
        z = np.asarray(z, dtype=float)
        x = np.asarray(self.x, dtype=float).reshape((-1,) + (1,) * z.ndim)
        u = (x - z) / self.noise_scale
        return np.sum(-math.log(math.pi * self.noise_scale) - np.log1p(u * u), axis=0)

    def log_joint(self, z):
        """log p(x, z), elementwise in z."""
        return self.log_prior(z) + self.log_likelihood(z)

    def grad_log_joint(self, z):
        """d/dz log p(x, z), elementwise in z (what the reparameterised gradient needs)."""
        z = np.asarray(z, dtype=float)
        x = np.asarray(self.x, dtype=float).reshape((-1,) + (1,) * z.ndim)
        d = x - z
        g2 = self.noise_scale ** 2
        return -z / self.prior_scale ** 2 + np.sum(2.0 * d / (g2 + d * d), axis=0)


@dataclass(frozen=True)
class Posterior:
    """The posterior of a 1-D model on a uniform grid: z, log p(z | x) and log p(x)."""

    z: np.ndarray = field(repr=False)
    log_density: np.ndarray = field(repr=False)
    log_evidence: float

    @property
    def density(self) -> np.ndarray:
        return np.exp(self.log_density)

    @property
    def dz(self) -> float:
        return float(self.z[1] - self.z[0])


def _logsumexp(a: np.ndarray) -> float:
    m = float(np.max(a))
    return m + math.log(float(np.sum(np.exp(a - m))))


def posterior_on_grid(model: CauchyLocationModel, lo: float = -30.0, hi: float = 30.0,
                      n: int = 15001) -> Posterior:
    """Normalise p(x, z) on a grid of n points in [lo, hi] by the trapezoid rule.

    The default grid (spacing 0.004) resolves the posterior's modes and any q with
    log_scale >= -2.5, and is wide enough for KL(q || p) of any q with |mean| <= 5 and
    log_scale <= 1 (the explorer's slider ranges).
    """
    if not hi > lo or n < 3:
        raise ValueError("need hi > lo and n >= 3")
    z = np.linspace(lo, hi, n)
    dz = z[1] - z[0]
    lj = model.log_joint(z)
    w = np.full(n, math.log(dz))
    w[[0, -1]] += math.log(0.5)  # trapezoid end weights
    log_evidence = _logsumexp(lj + w)
    return Posterior(z=z, log_density=lj - log_evidence, log_evidence=log_evidence)


def gaussian_log_density(z, mean: float, log_scale: float):
    z = np.asarray(z, dtype=float)
    s = math.exp(log_scale)
    return -0.5 * ((z - mean) / s) ** 2 - log_scale - 0.5 * _LOG_2PI


def gaussian_entropy(log_scale: float) -> float:
    """H[N(m, s^2)] = 1/2 log(2 pi e) + log s."""
    return 0.5 * (_LOG_2PI + 1.0) + log_scale


def elbo(model: CauchyLocationModel, mean: float, log_scale: float, n: int = 2001) -> float:
    """ELBO(q) = E_q[log p(x, z)] + H[q] for q = N(mean, exp(log_scale)^2).

    The expectation is taken in the reparameterised coordinate, z = mean + s * eps with
    eps ~ N(0, 1), by the trapezoid rule on n points of eps in [-10, 10]: it never touches
    the normalised posterior, so ``kl_to_posterior`` is an independent route to the identity.
    """
    eps = np.linspace(-10.0, 10.0, n)
    phi = np.exp(-0.5 * eps * eps - 0.5 * _LOG_2PI)
    z = mean + math.exp(log_scale) * eps
    return float(np.trapezoid(phi * model.log_joint(z), eps)) + gaussian_entropy(log_scale)


def kl_to_posterior(posterior: Posterior, mean: float, log_scale: float) -> float:
    """KL(q || p(z | x)) = int q(z) [log q(z) - log p(z | x)] dz on the posterior's grid."""
    log_q = gaussian_log_density(posterior.z, mean, log_scale)
    q = np.exp(log_q)
    integrand = q * (log_q - posterior.log_density)
    return float(np.trapezoid(integrand, posterior.z))


@dataclass(frozen=True)
class Summary:
    """The three numbers of the identity log p(x) = ELBO + KL, at one q."""

    mean: float
    log_scale: float
    elbo: float
    kl: float
    log_evidence: float

    @property
    def gap(self) -> float:
        """log p(x) - ELBO, which the identity says equals the KL."""
        return self.log_evidence - self.elbo


def summary(model: CauchyLocationModel, mean: float, log_scale: float,
            posterior: Posterior | None = None) -> Summary:
    posterior = posterior if posterior is not None else posterior_on_grid(model)
    return Summary(mean=float(mean), log_scale=float(log_scale),
                   elbo=elbo(model, mean, log_scale),
                   kl=kl_to_posterior(posterior, mean, log_scale),
                   log_evidence=posterior.log_evidence)


@dataclass(frozen=True)
class FitTrace:
    """The path of (mean, log_scale) during ``fit_gaussian``: steps + 1 points (0 = start), and
    the Monte Carlo ELBO estimate that step t used, at point t (``steps`` values)."""

    mean: np.ndarray
    log_scale: np.ndarray
    elbo_estimate: np.ndarray

    @property
    def final(self) -> tuple[float, float]:
        return float(self.mean[-1]), float(self.log_scale[-1])


def reparam_gradient(model: CauchyLocationModel, mean: float, log_scale: float,
                     eps: np.ndarray) -> tuple[float, float, float]:
    """Monte Carlo ELBO and its gradient in (mean, log_scale) from standard-normal draws eps.

    z = m + s eps makes the sampling distribution parameter-free, so the gradient moves inside
    the expectation: dELBO/dm = E[g(z)], dELBO/dlog s = E[g(z) * s * eps] + 1 (the entropy's),
    with g = d/dz log p(x, z).
    """
    s = math.exp(log_scale)
    z = mean + s * eps
    g = model.grad_log_joint(z)
    value = float(np.mean(model.log_joint(z))) + gaussian_entropy(log_scale)
    return value, float(np.mean(g)), float(np.mean(g * s * eps)) + 1.0


def fit_gaussian(model: CauchyLocationModel, mean: float = 0.0, log_scale: float = 0.0,
                 steps: int = 300, lr: float = 0.05, n_samples: int = 16,
                 seed: int = 0) -> FitTrace:
    """Maximise the ELBO over (mean, log_scale) by reparameterised stochastic gradients + Adam."""
    if steps < 0 or n_samples < 1 or not lr > 0:
        raise ValueError("need steps >= 0, n_samples >= 1 and lr > 0")
    rng = np.random.default_rng(seed)
    theta = np.array([mean, log_scale], dtype=float)
    m1 = np.zeros(2)
    m2 = np.zeros(2)
    b1, b2, tiny = 0.9, 0.999, 1e-8
    path = np.empty((steps + 1, 2))
    values = np.empty(steps)
    path[0] = theta
    for t in range(1, steps + 1):
        eps = rng.standard_normal(n_samples)
        value, g_mean, g_log_scale = reparam_gradient(model, theta[0], theta[1], eps)
        grad = np.array([g_mean, g_log_scale])
        m1 = b1 * m1 + (1 - b1) * grad
        m2 = b2 * m2 + (1 - b2) * grad * grad
        step = lr * (m1 / (1 - b1 ** t)) / (np.sqrt(m2 / (1 - b2 ** t)) + tiny)
        theta = theta + step  # ascent
        path[t] = theta
        values[t - 1] = value
    return FitTrace(mean=path[:, 0].copy(), log_scale=path[:, 1].copy(), elbo_estimate=values)


def format_table(rows: list[Summary]) -> str:
    """A fixed-width text table of Summary rows, every number to 3 significant figures."""
    head = ("mean m", "log s", "ELBO", "KL(q||p)", "ELBO + KL", "log p(x)")
    lines = ["  ".join(f"{h:>10}" for h in head)]
    for r in rows:
        cells = (r.mean, r.log_scale, r.elbo, r.kl, r.elbo + r.kl, r.log_evidence)
        lines.append("  ".join(f"{sig3(c):>10}" for c in cells))
    return "\n".join(lines)
