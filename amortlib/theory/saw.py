r"""A "saw" time series: z_n is informed by x_n *and* x_{n+1}.

Model (rho, sigma known; rho < 0 makes the series zig-zag like the teeth of a saw)::

    x_1 ~ N(0, v),  v = (1 + sigma^2) / (1 - rho^2)          (the stationary law)
    z_n ~ N(0, 1),   x_{n+1} | x_n, z_n ~ N(rho x_n + z_n, sigma^2),      n = 1..N.

The latent z_n is the innovation that carries the series from x_n to x_{n+1}: it enters the
likelihood only through d_n = x_{n+1} - rho x_n. This is a construction in the spirit of the
"saw" example of Margossian & Blei (2023): it is not a simple hierarchical model (x_{n+1} depends
on x_n), and the posterior of z_n depends on a *neighbour* of x_n.

**Exact posterior.** The z_n are independent a priori and each appears in one likelihood factor,
so the posterior factorises exactly:

    z_n | x ~ N(d_n / (1 + sigma^2), sigma^2 / (1 + sigma^2)),     d_n = x_{n+1} - rho x_n.

Hence the F-VI (mean-field Gaussian) optimum *is* the exact posterior, its ELBO equals
log p(x) (no approximation gap), and

    log p(x) = log N(x_1; 0, v) + sum_n log N(d_n; 0, 1 + sigma^2).

**Closed-form ELBO**, for q(z_n) = N(mu_n, omega_n^2):

    ELBO = log N(x_1; 0, v) + sum_n { -1/2 log(2 pi sigma^2) - [(d_n - mu_n)^2 + omega_n^2] / (2 sigma^2)
                                     - 1/2 (mu_n^2 + omega_n^2 - 1 - 2 log omega_n) }.

**The domain matters, not the width.** The ideal inference function is
(x_n, x_{n+1}) -> (d_n / (1 + sigma^2), 1/2 log(sigma^2 / (1 + sigma^2))): affine in (x_n, x_{n+1}),
so an encoder that sees the pair closes the gap. Under the model, d_n = z_n + noise is independent
of x_n, so the best any function of x_n alone can do *in the population* is a constant — the
constant-VI solution. Its per-datapoint gap, A/2 * Var_n(mu*_n) with A = 1 + 1/sigma^2, tends to
1 / (2 sigma^2) (= 2 nats for sigma = 0.5) as N grows. On a finite sample an x_n-only encoder can
shave a little off this by fitting chance patterns (N distinct x_n values can in principle be
memorised), but that is overfitting, not inference: it does not carry over to new data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..model.gaussian import LOG_2PI
from .scalar import DTYPE


@dataclass(frozen=True)
class Saw:
    """x_{n+1} ~ N(rho x_n + z_n, sigma^2), z_n ~ N(0, 1), x_1 from the stationary law."""

    rho: float = -0.9
    sigma: float = 0.5

    name = "saw"
    has_global = False

    @property
    def stationary_var(self) -> float:
        return (1.0 + self.sigma ** 2) / (1.0 - self.rho ** 2)

    def simulate(self, n: int, seed: int) -> dict:
        """A series x_1..x_{N+1} and its innovations z_1..z_N (deterministic in seed)."""
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, generator=g, dtype=DTYPE)
        eps = torch.randn(n, generator=g, dtype=DTYPE)
        x = torch.empty(n + 1, dtype=DTYPE)
        x[0] = math.sqrt(self.stationary_var) * torch.randn(1, generator=g, dtype=DTYPE)[0]
        for i in range(n):
            x[i + 1] = self.rho * x[i] + z[i] + self.sigma * eps[i]
        return {"x": x, "z": z}

    def n_local(self, data: dict) -> int:
        return int(data["z"].shape[0]) if "z" in data else int(data["x"].shape[0]) - 1

    def inputs(self, data: dict, domain: str = "x") -> torch.Tensor:
        """Encoder inputs [N, d] for z_n: x_n, or the pair (x_n, x_{n+1})."""
        x = data["x"]
        if domain == "x":
            return x[:-1, None]
        if domain == "x,x_next":
            return torch.stack([x[:-1], x[1:]], dim=1)
        raise ValueError(f"inputs={domain!r} is invalid: expected 'x' or 'x,x_next'")

    def innovations(self, data: dict) -> torch.Tensor:
        """d_n = x_{n+1} - rho x_n, n = 1..N."""
        x = data["x"]
        return x[1:] - self.rho * x[:-1]

    def log_p_x1(self, data: dict) -> float:
        v = self.stationary_var
        return -0.5 * (LOG_2PI + math.log(v) + float(data["x"][0]) ** 2 / v)

    def elbo_sum(self, data: dict, mu: torch.Tensor, log_sigma: torch.Tensor,
                 glob: torch.Tensor | None = None) -> torch.Tensor:
        """Total ELBO (including log p(x_1)) for M stacked models; mu, log_sigma [M, N]."""
        d = self.innovations(data)
        sig2 = self.sigma ** 2
        om2 = torch.exp(2 * log_sigma)
        ell = -0.5 * (LOG_2PI + math.log(sig2)) - ((d - mu) ** 2 + om2) / (2 * sig2)
        kl = 0.5 * (mu ** 2 + om2 - 1.0 - 2.0 * log_sigma)
        t = ell - kl
        return t.expand(t.shape[0], d.shape[0]).sum(-1) + self.log_p_x1(data)

    def exact_posterior(self, data: dict) -> dict:
        d = self.innovations(data)
        s2 = 1.0 + self.sigma ** 2
        return {"mean_z": d / s2, "var_z": torch.full_like(d, self.sigma ** 2 / s2)}

    def log_evidence(self, data: dict) -> float:
        d = self.innovations(data)
        s2 = 1.0 + self.sigma ** 2
        return self.log_p_x1(data) + float((-0.5 * (LOG_2PI + math.log(s2) + d ** 2 / s2)).sum())

    def optimum(self, data: dict) -> dict:
        """The F-VI optimum (= the exact posterior) and its ELBO (= log p(x))."""
        ex = self.exact_posterior(data)
        mu, log_sigma = ex["mean_z"], 0.5 * torch.log(ex["var_z"])
        elbo = float(self.elbo_sum(data, mu[None], log_sigma[None])[0])
        return {"mu": mu, "log_sigma": log_sigma, "glob": None, "elbo": elbo,
                "elbo_formula": self.log_evidence(data), "kl": 0.0}

    def x_only_limit(self, data: dict) -> float:
        """Per-datapoint gap of the best x_n-independent q (constant-VI), in closed form:
        A/2 * Var_n(mu*_n), A = 1 + 1/sigma^2. In the population it is the floor of any
        x_n-only encoder (d_n is independent of x_n); it tends to 1/(2 sigma^2)."""
        mu_star = self.exact_posterior(data)["mean_z"]
        a = 1.0 + 1.0 / self.sigma ** 2
        return 0.5 * a * float(mu_star.var(unbiased=False))
