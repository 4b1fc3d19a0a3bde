r"""The normal-normal hierarchical model: everything in closed form.

Model, for n = 1..N (tau, sigma and the prior scale s_0 known)::

    theta ~ N(0, s_0^2),      z_n ~ N(0, 1),      x_n | theta, z_n ~ N(theta + tau z_n, sigma^2).

The prior on theta is a wide Gaussian (s_0 = 10 by default) rather than a flat one, so that
the evidence log p(x) is a proper, finite number.

**Exact posterior.** (theta, z_1..N) | x is jointly Gaussian. Write V = sigma^2 + tau^2.
Integrating z_n out gives x_n | theta ~ N(theta, V), hence

    theta | x ~ N(m_theta, v_theta),   v_theta = 1 / (1/s_0^2 + N/V),   m_theta = v_theta sum_n x_n / V,

and z_n | theta, x_n ~ N(tau (x_n - theta) / V, sigma^2 / V), hence the marginal moments

    E[z_n | x]   = tau (x_n - m_theta) / V,
    Var[z_n | x] = sigma^2 / V + tau^2 v_theta / V^2,
    Cov(z_n, z_m | x) = tau^2 v_theta / V^2  (n != m),   Cov(theta, z_n | x) = -tau v_theta / V.

Its precision matrix Lambda has Lambda_thth = 1/s_0^2 + N/sigma^2, Lambda_{z_n z_n} = 1 + tau^2/sigma^2,
Lambda_{th z_n} = tau/sigma^2 and no z_n-z_m entries.

**Evidence.** x ~ N(0, V I + s_0^2 1 1^T), so with S_1 = sum x_n, S_2 = sum x_n^2,

    log p(x) = -1/2 [ N log 2 pi + N log V + log(1 + N s_0^2 / V) + (S_2 - s_0^2 S_1^2 / (V + N s_0^2)) / V ].

**Variational families.** q(theta) q(z_1..N) with q(theta) = N(m, s^2) and q(z_n) = N(mu_n, omega_n^2):

- F-VI: free (mu_n, log omega_n) for every n;
- A-VI: (mu_n, log omega_n) = g(x_n), with g affine (``width=None``: mu = a x + b,
  log omega = c x + d) or a one-hidden-layer MLP of width k;
- constant-VI: one (mu, log omega) for all n.

The ELBO is closed form (no Monte Carlo)::

    ELBO = sum_n { -1/2 log(2 pi sigma^2) - [(x_n - m - tau mu_n)^2 + s^2 + tau^2 omega_n^2] / (2 sigma^2)
                   - 1/2 (mu_n^2 + omega_n^2 - 1 - 2 log omega_n) }
           - 1/2 (m^2/s_0^2 + s^2/s_0^2 - 1 - 2 log(s/s_0)).

**The mean-field optimum** (the F-VI optimum; a Gaussian target's mean-field solution is known
exactly) has the *exact posterior means* and the inverse diagonal of the precision as variances:

    m = m_theta,              s^2 = 1 / (1/s_0^2 + N/sigma^2)          <  v_theta,
    mu_n = E[z_n | x] = tau (x_n - m_theta) / V,   omega_n^2 = sigma^2 / V  <  Var[z_n | x].

So the means agree with the exact posterior; the variances are smaller than the exact marginal
variances (mean-field underestimation): for z_n by tau^2 v_theta / V^2 (which is O(1/N)), for theta
by the factor (1/s_0^2 + N/V) / (1/s_0^2 + N/sigma^2) (about sigma^2/V for large N). At the optimum,
log p(x) - ELBO = KL(q || p) = 1/2 log(v_theta (1/s_0^2 + N/sigma^2)).

The optimal mu_n is *affine in x_n* and omega_n does not depend on n, so the ideal inference
function exists and is affine: affine A-VI reaches the F-VI optimum exactly (no amortization
gap), while constant-VI, which must give every z_n the same mean, cannot.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..model.gaussian import LOG_2PI
from .scalar import DTYPE, ScalarData


@dataclass(frozen=True)
class NormalNormal(ScalarData):
    """x_n ~ N(theta + tau z_n, sigma^2), z_n ~ N(0, 1), theta ~ N(0, prior_sd^2)."""

    tau: float = 1.5
    sigma: float = 1.0
    prior_sd: float = 10.0
    theta_true: float = 2.0

    name = "normal_normal"
    has_global = True

    # ----------------------------------------------------------------------------- data
    def simulate(self, n: int, seed: int) -> dict:
        """Draw z_n and x_n for n = 1..N with theta = ``theta_true`` (deterministic in seed)."""
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, generator=g, dtype=DTYPE)
        eps = torch.randn(n, generator=g, dtype=DTYPE)
        x = self.theta_true + self.tau * z + self.sigma * eps
        return {"x": x, "z": z, "theta": torch.tensor(self.theta_true, dtype=DTYPE)}

    # ----------------------------------------------------------------------------- ELBO
    def elbo_sum(self, data: dict, mu: torch.Tensor, log_sigma: torch.Tensor,
                 glob: torch.Tensor | None) -> torch.Tensor:
        """Closed-form ELBO (total over n, all constants kept) for M stacked models.

        mu, log_sigma: [M, N] (or broadcastable); glob: [M, 2] = (m, log s) of q(theta)."""
        x = data["x"]
        tau, sig2, s0 = self.tau, self.sigma ** 2, self.prior_sd
        m, log_s = glob[:, 0:1], glob[:, 1:2]
        s2 = torch.exp(2 * log_s)
        om2 = torch.exp(2 * log_sigma)
        resid = x - m - tau * mu
        ell = -0.5 * LOG_2PI - 0.5 * math.log(sig2) - (resid ** 2 + s2 + tau ** 2 * om2) / (2 * sig2)
        kl_z = 0.5 * (mu ** 2 + om2 - 1.0 - 2.0 * log_sigma)
        local = (ell - kl_z).expand(glob.shape[0], x.shape[0]).sum(-1)
        kl_theta = 0.5 * ((m ** 2 + s2) / s0 ** 2 - 1.0 - 2.0 * (log_s - math.log(s0)))
        return local - kl_theta[:, 0]

    # ----------------------------------------------------------------------------- exact
    def exact_posterior(self, data: dict) -> dict:
        """Exact posterior marginal moments and the mean-field (F-VI) optimum, in closed form."""
        x = data["x"]
        n = x.shape[0]
        tau, sig2, s0 = self.tau, self.sigma ** 2, self.prior_sd
        v = sig2 + tau ** 2
        v_theta = 1.0 / (1.0 / s0 ** 2 + n / v)
        m_theta = v_theta * float(x.sum()) / v
        mean_z = tau * (x - m_theta) / v
        var_z = sig2 / v + tau ** 2 * v_theta / v ** 2
        mf_var_theta = 1.0 / (1.0 / s0 ** 2 + n / sig2)
        mf_var_z = sig2 / v
        return {
            "mean_theta": m_theta, "var_theta": v_theta,
            "mean_z": mean_z, "var_z": torch.full_like(x, var_z),
            "mf_var_theta": mf_var_theta, "mf_var_z": torch.full_like(x, mf_var_z),
            # ideal inference function mu(x) = slope * x + intercept, log omega = const
            "ideal_slope": tau / v, "ideal_intercept": -tau * m_theta / v,
            "ideal_log_sigma": 0.5 * math.log(mf_var_z),
        }

    def log_evidence(self, data: dict) -> float:
        """log p(x_1..N), exact (Gaussian marginal with the matrix determinant lemma)."""
        x = data["x"]
        n = x.shape[0]
        v, s02 = self.sigma ** 2 + self.tau ** 2, self.prior_sd ** 2
        s1, s2 = float(x.sum()), float((x ** 2).sum())
        logdet = n * math.log(v) + math.log1p(n * s02 / v)
        quad = (s2 - s02 * s1 ** 2 / (v + n * s02)) / v
        return -0.5 * (n * LOG_2PI + logdet + quad)

    def optimum(self, data: dict) -> dict:
        """The F-VI (mean-field) optimum in closed form: q parameters and its ELBO, whose value
        is log p(x) - 1/2 log(v_theta / mf_var_theta)."""
        ex = self.exact_posterior(data)
        mu = ex["mean_z"]
        log_sigma = torch.full_like(mu, 0.5 * math.log(ex["mf_var_z"][0]))
        glob = torch.tensor([[ex["mean_theta"], 0.5 * math.log(ex["mf_var_theta"])]], dtype=DTYPE)
        elbo = float(self.elbo_sum(data, mu[None], log_sigma[None], glob)[0])
        kl = 0.5 * math.log(ex["var_theta"] / ex["mf_var_theta"])
        return {"mu": mu, "log_sigma": log_sigma, "glob": glob[0], "elbo": elbo,
                "elbo_formula": self.log_evidence(data) - kl, "kl": kl}
