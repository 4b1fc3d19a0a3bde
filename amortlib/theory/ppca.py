r"""An exact anchor at MNIST scale: the VAE with a linear-Gaussian decoder (probabilistic PCA).

Model, for images x_n in R^D (D = 784), latents z_n in R^d, fixed W [D, d], b [D], sigma::

    z_n ~ N(0, I_d),      x_n | z_n ~ N(W z_n + b, sigma^2 I_D).

Everything the book measures by Monte Carlo is closed form here (Tipping & Bishop 1999):

**Evidence.** x_n ~ N(b, C), C = W W^T + sigma^2 I. With M = W^T W + sigma^2 I_d and r = x - b,

    log p(x_n) = -1/2 [ D log 2 pi + (D - d) log sigma^2 + log det M
                        + (||r||^2 - r^T W M^{-1} W^T r) / sigma^2 ].

**Exact posterior.** z_n | x_n ~ N(m_n, S), m_n = M^{-1} W^T r_n, S = sigma^2 M^{-1}; its precision
Lambda = I + W^T W / sigma^2 is the same for every image.

**ELBO of a diagonal Gaussian** q(z_n) = N(mu, diag v)::

    ELBO_n(q) = -D/2 log(2 pi sigma^2) - (||r - W mu||^2 + sum_j v_j ||W_j||^2) / (2 sigma^2)
                - 1/2 sum_j (v_j + mu_j^2 - 1 - log v_j).

**The F-VI (mean-field) optimum** of a Gaussian target N(m, S) has the exact posterior mean and
variances 1 / Lambda_jj (smaller than the marginal ones), and misses

    log p(x_n) - ELBO_n(q*) = KL(q* || p(z | x_n)) = 1/2 (sum_j log Lambda_jj - log det Lambda),

the same for every image: the approximation gap. It is 0 exactly when W^T W is diagonal (the
maximum-likelihood W = U (L - sigma^2)^{1/2} of ``PPCA.fit``) and positive once the latent space
is rotated (``rotated``), which leaves p(x) unchanged.

**The ideal inference function** is linear: mu(x) = (x - b) A with A = W M^{-1} [D, d], and
log sigma = -1/2 log diag Lambda, a constant. A-VI with a linear encoder has no amortization gap.

The engine's networks are not linear, but LeakyReLU(0.2) satisfies leaky(u) - leaky(-u) = 1.2 u,
so two mirrored units per coordinate carry a linear map through a layer exactly:
``decoder_theta`` sets the engine's decoder z -> 2d -> 2d -> D to f(z) = W z + b, and
``set_linear_encoder`` sets a width-2d A-VI encoder to (x A + c, log sigma). ``anchor_model``
builds a ``StackedVAE`` (float64) with such a decoder and one encoder per model; ``compare``
runs the engine's ELBO, F-VI fitter, gap and IWAE code on it against the closed forms.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from ..model.gaussian import LOG_2PI
from .scalar import DTYPE

#: log s of q(theta) in the anchor model: s = e^-50 ~ 2e-22, so theta = m + s eps equals m in
#: float64 (the decoder is fixed; the KL of q(theta) is left out of every local quantity).
FIXED_LOG_S = -50.0
SLOPE_SUM = 1.2       # leaky(u) - leaky(-u) = (1 + 0.2) u for the engine's LeakyReLU(0.2)


@contextlib.contextmanager
def float64():
    """Default dtype float64 inside the block (the engine allocates noise and fits in the
    default dtype), restored afterwards."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@dataclass(frozen=True)
class PPCA:
    """x = W z + b + sigma eps; W [D, d], b [D] (float64), sigma > 0."""

    W: torch.Tensor
    b: torch.Tensor
    sigma: float

    @property
    def d(self) -> int:
        return self.W.shape[1]

    @property
    def D(self) -> int:
        return self.W.shape[0]

    # ----------------------------------------------------------------------------- models
    @classmethod
    def fit(cls, x: torch.Tensor, d: int) -> "PPCA":
        """Maximum-likelihood PPCA of the rows of x [n, D]: b = mean, sigma^2 = mean of the
        D - d smallest eigenvalues of the sample covariance, W = U_d (L_d - sigma^2)^{1/2}."""
        x = x.to(DTYPE)
        b = x.mean(0)
        r = x - b
        evals, evecs = torch.linalg.eigh(r.T @ r / x.shape[0])              # ascending
        evals, evecs = evals.flip(0), evecs.flip(1)
        sigma2 = float(evals[d:].clamp_min(0).mean())
        W = evecs[:, :d] * (evals[:d] - sigma2).clamp_min(0).sqrt()
        return cls(W, b, math.sqrt(sigma2))

    def rotated(self, seed: int = 0) -> "PPCA":
        """The same p(x) with the latent space rotated by a random orthogonal R (W -> W R): the
        exact posterior is no longer diagonal, so mean-field VI has an approximation gap."""
        g = torch.Generator().manual_seed(int(seed))
        q, r = torch.linalg.qr(torch.randn(self.d, self.d, generator=g, dtype=DTYPE))
        R = q * torch.sign(torch.diagonal(r))
        return PPCA(self.W @ R, self.b, self.sigma)

    # ----------------------------------------------------------------------------- closed forms
    @property
    def M(self) -> torch.Tensor:
        return self.W.T @ self.W + self.sigma ** 2 * torch.eye(self.d, dtype=DTYPE)

    @property
    def precision(self) -> torch.Tensor:
        """Lambda = I + W^T W / sigma^2, the posterior precision of every z_n."""
        return self.M / self.sigma ** 2

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_n) per image, [n]."""
        r = x.to(DTYPE) - self.b
        s2, M = self.sigma ** 2, self.M
        proj = r @ self.W                                                   # [n, d]
        quad = (r.square().sum(1) - (proj * torch.linalg.solve(M, proj.T).T).sum(1)) / s2
        logdet = (self.D - self.d) * math.log(s2) + torch.logdet(M)
        return -0.5 * (self.D * LOG_2PI + logdet + quad)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior: means [n, d] and the covariance S = sigma^2 M^{-1} [d, d]."""
        r = x.to(DTYPE) - self.b
        mean = torch.linalg.solve(self.M, (r @ self.W).T).T
        return mean, self.sigma ** 2 * torch.linalg.inv(self.M)

    def elbo(self, x: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
        """Closed-form ELBO_n of q(z_n) = N(mu_n, diag exp(2 log_sigma_n)), [n] (mu, log_sigma
        [n, d] or [d])."""
        r = x.to(DTYPE) - self.b
        v = (2 * log_sigma).exp().expand(r.shape[0], self.d)
        mu = mu.expand(r.shape[0], self.d)
        s2 = self.sigma ** 2
        ell = (-0.5 * self.D * (LOG_2PI + math.log(s2))
               - ((r - mu @ self.W.T).square().sum(1) + v @ self.W.square().sum(0)) / (2 * s2))
        kl = 0.5 * (v + mu.square() - 1.0 - 2 * log_sigma).sum(1)
        return ell - kl

    def mean_field_optimum(self, x: torch.Tensor) -> dict:
        """The F-VI optimum: mu = posterior mean, log sigma = -1/2 log Lambda_jj; its ELBO [n]
        and the approximation gap (a number, the same for every image)."""
        mu, _ = self.posterior(x)
        log_sigma = -0.5 * self.precision.diagonal().log()
        return dict(mu=mu, log_sigma=log_sigma.expand_as(mu), elbo=self.elbo(x, mu, log_sigma),
                    approx_gap=float(self.approximation_gap))

    @property
    def approximation_gap(self) -> float:
        """KL(q* || p(z | x)) = 1/2 (sum log Lambda_jj - log det Lambda), nats per image."""
        lam = self.precision
        return float(0.5 * (lam.diagonal().log().sum() - torch.logdet(lam)))

    def ideal_encoder(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A [D, d], c [d], log_sigma [d]) with mu(x) = x A + c the F-VI optimum for every x."""
        A = torch.linalg.solve(self.M, self.W.T).T
        return A, -self.b @ A, -0.5 * self.precision.diagonal().log()


# --------------------------------------------------------------------------- the engine's parameters
def decoder_theta(ppca: PPCA) -> torch.Tensor:
    """The engine's flat decoder vector (``decoder_shapes(d, 2d, D)``) with f(z) = W z + b:
    z -> [z, -z] -> leaky -> [z, -z] -> leaky -> ((leaky(z) - leaky(-z)) / 1.2) W^T + b."""
    d = ppca.d
    eye = torch.eye(d, dtype=DTYPE)
    w1 = torch.cat([eye, -eye], 1)                                          # [d, 2d]
    w2 = torch.cat([torch.cat([eye, -eye], 1), torch.cat([-eye, eye], 1)]) / SLOPE_SUM
    w3 = torch.cat([ppca.W.T, -ppca.W.T]) / SLOPE_SUM                       # [2d, D]
    zeros = torch.zeros(2 * d, dtype=DTYPE)
    return torch.cat([w1.flatten(), zeros, w2.flatten(), zeros, w3.flatten(), ppca.b])


@torch.no_grad()
def set_linear_encoder(group, j: int, A: torch.Tensor, c: torch.Tensor, log_sigma: torch.Tensor):
    """Make encoder ``j`` of a width-2d ``_EncoderGroup`` (depth 1) output mu = x A + c and a
    constant log sigma: hidden [u, -u] with u = x A + c, mu = (leaky(u) - leaky(-u)) / 1.2."""
    d = A.shape[1]
    if group.k != 2 * d or group.w_hidden:
        raise ValueError(f"encoder width {group.k} (depth {1 + len(group.w_hidden)}) is invalid: "
                         f"expected width {2 * d} and depth 1 for a linear encoder")
    eye = torch.eye(d, dtype=group.w_in.dtype)
    group.w_in[:, j] = torch.cat([A, -A], 1)
    group.b_in[j] = torch.cat([c, -c])
    group.w_out[j] = 0.0
    group.w_out[j, :, :d] = torch.cat([eye, -eye]) / SLOPE_SUM
    group.b_out[j] = torch.cat([torch.zeros(d, dtype=c.dtype), log_sigma])


def anchor_model(ppca: PPCA, encoders, n_obs: int):
    """A float64 ``StackedVAE`` of A-VI models (one per entry of ``encoders``, a list of
    (A, c, log_sigma)), each with the exactly linear decoder of ``ppca`` and q(theta) collapsed
    onto it (log s = ``FIXED_LOG_S``). Returns a ``SweepResult`` (no training) for the gap code."""
    from ..config import SweepConfig
    from ..train import StackedVAE, SweepResult

    d = ppca.d
    cfg = SweepConfig(n_obs=n_obs, n_test=1, z_dim=d, like_dim=2 * d, widths=(2 * d,),
                      seeds=tuple(range(len(encoders))), families=("amortized",),
                      sigma=ppca.sigma, theta_log_std_init=FIXED_LOG_S, epochs=1,
                      progress=False, device="cpu")
    model = StackedVAE(cfg, x_dim=ppca.D).double()
    with torch.no_grad():
        model.decoder.m.copy_(decoder_theta(ppca).expand_as(model.decoder.m))
        model.decoder.log_s.fill_(FIXED_LOG_S)
    group = model.families[0].groups[0]
    for j, (A, c, ls) in enumerate(encoders):
        set_linear_encoder(group, j, A, c, ls)
    import pandas as pd
    return SweepResult(cfg, pd.DataFrame(), pd.DataFrame(), model)


# --------------------------------------------------------------------------- engine vs closed form
#: The deliberately wrong encoder of ``compare``: means shrunk by this factor, log sigma raised by
#: this much (q too wide), so its amortization gap is large and known exactly.
WRONG_ENCODER = (0.7, 0.5)


#: Options of ``gap.fit_q`` for the F-VI fit from the prior in ``compare``: more draws per step and a
#: tighter stopping rule than ``measure_gap``'s defaults, whose noise floor is higher.
FIT_OPTIONS = dict(lr=0.1, n_mc=8, tol=1e-3, decays=5, max_steps=4000)


def compare(ppca: PPCA, x: torch.Tensor, *, ks=(1, 10, 100, 1000), n_draws: int = 800,
            fits: dict | None = None, gap_options: dict | None = None, seed: int = 0):
    """The engine's own code on the anchor model against the closed forms, on the images x
    [n, D]. Returns ``(table, details)``: ``table`` has one row per quantity (nats per image,
    mean over the images) with columns ``quantity, closed_form, engine, difference, mc_se``;
    ``details`` holds the per-K IWAE bounds and the fitted q's.

    - ELBO(q*): ``objective.elbo_terms`` at the closed-form F-VI optimum, ``n_draws`` draws;
    - F-VI fits: ``gap.fit_q`` from the prior, one per entry of ``fits`` (label -> options;
      default ``{"fit_q": FIT_OPTIONS}``), each q scored exactly;
    - log p(x) and the approximation gap: ``gap.iwae`` with q* as proposal, K up to max(ks)
      (a lower bound on log p, rising with K);
    - amortization gaps: ``gap.measure_gap`` for the ideal linear encoder (0) and for the wrong
      encoder ``WRONG_ENCODER`` (closed form), Monte Carlo error only (the same images).
    The decoder is fixed (q(theta) collapsed onto it), so theta is taken at its mean."""
    import pandas as pd

    from ..gap import fit_q, iwae, measure_gap
    from ..model import DiagGaussian
    from ..objective import elbo_terms

    x = x.to(DTYPE)
    n, d = x.shape[0], ppca.d
    lp = ppca.log_evidence(x)
    opt = ppca.mean_field_optimum(x)
    A, c, ls = ppca.ideal_encoder()
    shrink, widen = WRONG_ENCODER
    wrong = (shrink * A, shrink * c, ls + widen)
    closed_wrong = opt["elbo"] - ppca.elbo(x, x @ wrong[0] + wrong[1], wrong[2])
    fits = {"fit_q": FIT_OPTIONS} if fits is None else fits
    gap_options = dict(lr=0.01, n_mc=8, tol=1e-3, n_eval=64, **(gap_options or {}))
    rows = []

    def row(quantity, closed, engine, se):
        rows.append(dict(quantity=quantity, closed_form=float(closed), engine=float(engine),
                         difference=float(engine - closed), mc_se=float(se)))

    with float64():
        result = anchor_model(ppca, [(A, c, ls), wrong], n)
        dec, lik = result.model.decoder, result.model.likelihood
        q_star = DiagGaussian(opt["mu"][None], opt["log_sigma"][None])
        # the engine's ELBO at q*: repeated batches of draws, their spread gives the error
        g = torch.Generator().manual_seed(int(seed))
        S, reps = 4, max(2, n_draws // 4)
        q_theta = DiagGaussian(dec.m[:1].detach(), dec.log_s[:1].detach())
        vals = []
        for _ in range(reps):
            eps_z = torch.randn(1, S, n, d, generator=g)
            eps_t = torch.randn(1, S, dec.n_params, generator=g)
            t = elbo_terms(x, q_star, dec, lik, n, eps_z, eps_t, q_theta=q_theta)
            vals.append(float(t.expected_log_lik - t.kl_z))
        vals = torch.tensor(vals)
        row("ELBO at the F-VI optimum q*", opt["elbo"].mean(), vals.mean(), vals.std() / reps ** 0.5)
        # the engine's F-VI fitter, from the prior, scored exactly
        fitted = {}
        for label, options in fits.items():
            fit = fit_q(dec, lik, x, [0], None, theta="mean", seed=seed, **options)
            reached = ppca.elbo(x, fit.q.mu[0], fit.q.log_sigma[0])
            fitted[label] = (fit, reached)
            row(f"ELBO reached by F-VI from the prior ({label})", opt["elbo"].mean(), reached.mean(), 0.0)
        # IWAE with q* as proposal
        r = iwae(dec, lik, x, q_star, [0], ks, theta="mean", seed=seed)
        top = r.bound[-1, 0, 0]
        row(f"log p(x) (engine: IWAE_{r.ks[-1]}, a lower bound)", lp.mean(), top.mean(),
            r.bound_se[-1, 0, 0].square().sum().sqrt() / n)
        row("approximation gap log p - ELBO(q*)", opt["approx_gap"], (top - r.elbo[0, 0]).mean(),
            r.bound_se[-1, 0, 0].square().sum().sqrt() / n)
        # the gap code on the two encoders
        m = measure_gap(result, "train", n, x_train=x, refine_steps=(), theta="mean", seed=seed,
                        **gap_options)
        per = m.per_image()
        for j, (label, closed) in enumerate([("amortization gap, ideal linear encoder", torch.zeros(n)),
                                             ("amortization gap, wrong encoder", closed_wrong)]):
            p = per[per.seed == j]
            gap = torch.tensor(p.gap.values)
            se = torch.tensor(p.gap_se.values).square().sum().sqrt() / n
            row(label, closed.mean(), gap.mean(), se)
    table = pd.DataFrame(rows)
    iwae_rows = pd.DataFrame(dict(K=list(r.ks), bound=r.bound[:, 0, 0].mean(1).tolist(),
                                  mc_se=(r.bound_se[:, 0, 0].square().sum(1).sqrt() / n).tolist()))
    details = dict(iwae=iwae_rows, log_px=lp, elbo_star=opt["elbo"], fits=fitted, measurement=m, closed_wrong=closed_wrong, iwae_result=r)
    return table, details
