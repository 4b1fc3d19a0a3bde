"""Test-time optimisation of per-datapoint q(z_n) with q(theta) frozen (F-VI on given images).

For fixed q(theta) = N(m, s^2) it maximises, over (mu_n, log sigma_n) of each image,

    ELBO_local = 1/n sum_n ( E_{q(theta) q(z_n)} log p(x_n | z_n, theta) - KL(q(z_n) || N(0, I)) )

(the global KL(q(theta) || p(theta)) is constant here and left out). Used for F-VI's test MSE,
for the amortization gap (initialised at an encoder's output) and for semi-amortized
refinement (a few steps from the encoder's output).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..model import DiagGaussian, decode
from ..objective import NoiseSource, elbo_terms


class LocalFit(NamedTuple):
    q: DiagGaussian             # mu, log_sigma [M, n, d]
    elbo: torch.Tensor          # [M] final local ELBO (nats/image) on the last step's noise
    steps: int                  # steps taken
    history: list               # per-step local ELBO [M] (as python floats per model)


@torch.no_grad()
def _decoder_views(decoder, index):
    m = decoder.m.detach()[index]
    log_s = decoder.log_s.detach()[index]
    return DiagGaussian(m, log_s)


def fit_local(decoder, likelihood, x: torch.Tensor, model_index, init: DiagGaussian | None = None,
              steps: int = 300, lr: float = 1e-2, n_mc: int = 1, tol: float | None = None,
              patience: int = 50, seed: int = 0, record: bool = False) -> LocalFit:
    """Fit q(z_n) for the images x [n, D] under the frozen q(theta) of the decoder's models
    ``model_index`` (list of positions along the model axis).

    Starts at ``init`` (mu, log_sigma [M, n, d]) or at the prior. Adam with learning rate
    ``lr`` for at most ``steps`` steps; with ``tol``, stops once the ELBO has not improved
    by more than ``tol`` nats/image over ``patience`` steps. Noise comes from one generator per
    model seeded from ``seed`` (an int, or one int per model), so a model gets the same noise
    fitted alone or beside others.
    """
    if steps < 1:
        raise ValueError(f"steps={steps!r} is invalid: expected an integer >= 1")
    index = torch.as_tensor(model_index, dtype=torch.long, device=x.device)
    q_theta = _decoder_views(decoder, index)
    M, n, d = len(index), x.shape[0], decoder.shapes[0][0]
    if init is None:
        mu = torch.zeros(M, n, d, device=x.device)
        ls = torch.zeros(M, n, d, device=x.device)
    else:
        mu, ls = init.mu.detach().clone(), init.log_sigma.detach().clone()
    mu.requires_grad_(True)
    ls.requires_grad_(True)
    opt = torch.optim.Adam([mu, ls], lr=lr)
    seeds = [int(seed)] * M if isinstance(seed, int) else [int(s) for s in seed]
    noise = NoiseSource(seeds, x.device, offset=7_919)
    seed_index = torch.arange(M, device=x.device)
    history, best, best_step = [], None, 0
    x = likelihood.prepare(x)
    for t in range(steps):
        eps_z, eps_t = noise.draw(seed_index, n_mc, n, d, decoder.n_params)
        terms = elbo_terms(x, DiagGaussian(mu, ls), decoder, likelihood, n, eps_z, eps_t, q_theta=q_theta)
        local = terms.expected_log_lik - terms.kl_z                       # [M]
        opt.zero_grad(set_to_none=True)
        (-local.sum()).backward()
        opt.step()
        if record or tol is not None:
            val = local.detach()
            if record:
                history.append(val.tolist())
            if tol is not None:
                if best is None:
                    best, best_step = val, t
                elif (val - best).max().item() > tol:
                    best, best_step = torch.maximum(best, val), t
                elif t - best_step >= patience:
                    break
    return LocalFit(DiagGaussian(mu.detach(), ls.detach()), local.detach(), t + 1, history)


@torch.no_grad()
def posterior_mean_recon(decoder, likelihood, mu: torch.Tensor, model_index=None,
                         chunk: int = 4096) -> torch.Tensor:
    """E-step-free reconstruction at the posterior means: likelihood mean of f_m(mu),
    mu [M, n, d] -> [M, n, D]. ``model_index`` selects decoders (default: all, in order)."""
    m = decoder.m if model_index is None else decoder.m[torch.as_tensor(model_index, device=mu.device)]
    layers = decoder.unflatten(m)
    outs = [likelihood.mean(decode(layers, mu[:, i:i + chunk]).float()) for i in range(0, mu.shape[1], chunk)]
    return torch.cat(outs, dim=1)
