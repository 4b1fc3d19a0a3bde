"""Diagonal Gaussians and their closed-form KL to a standard normal."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .paths import gpu_path

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


class _ReparamKL(torch.autograd.Function):
    """Draws x = mu + sigma * eps and KL(q || N(0, I)) per model in a few passes over memory.

    mu, log_sigma: lists of pieces [M_p, *E] stacked along the model axis (M = sum M_p);
    eps [U, S, *E], model m using row index[m] (index None: U = M). Returns x [M, S, *E] and
    kl [M] = 1/2 sum (sigma^2 + mu^2 - 1 - 2 log sigma) over *E. Backward, with
    gs = sum_s gx_s and ge = sum_s gx_s eps_s:
        d mu = gs + gkl mu,     d log sigma = sigma (ge + gkl sigma) - gkl.
    On CPU the work goes model by model: every op of a model runs while its few MB are still
    in cache, each model reads its shared noise row in place (no gathered copy of eps) and
    writes its own slice of x, and the pieces are never concatenated. Elsewhere (GPU) it is
    a handful of batched ops."""

    @staticmethod
    def forward(ctx, eps, index, n_pieces, *pieces):
        mus, lss = pieces[:n_pieces], pieces[n_pieces:]
        M, S, E = sum(p.shape[0] for p in mus), eps.shape[1], tuple(mus[0].shape[1:])
        n = math.prod(E)
        rows = _rows(index, M, eps.device)
        ctx.rows, ctx.n_pieces = rows, n_pieces
        if rows is None:
            dims = tuple(range(1, len(E) + 1))
            sigs = [ls.exp() for ls in lss]
            mu, sig = torch.cat(mus), torch.cat(sigs)
            x = torch.addcmul(mu.unsqueeze(1), sig.unsqueeze(1), eps if index is None else eps[index])
            kl = torch.cat([0.5 * (torch.linalg.vector_norm(sg, dim=dims).square()
                                   + torch.linalg.vector_norm(mu, dim=dims).square() - n)
                            - ls.sum(dims) for mu, sg, ls in zip(mus, sigs, lss)])
            ctx.save_for_backward(eps, index, *mus, *sigs)
            return x, kl
        x = torch.empty((M, S) + E, dtype=mus[0].dtype, device=eps.device)
        parts = torch.empty(M, 3, dtype=mus[0].dtype, device=eps.device)   # sums per model
        sigs, m, blocks = [], 0, _blocks(E)
        for mu, ls in zip(mus, lss):
            sig = torch.empty(ls.shape, dtype=ls.dtype, device=ls.device)
            for i in range(mu.shape[0]):
                acc = []
                for b in blocks:                     # one cache-sized block at a time
                    sg, mb, lb = sig[i, b], mu[i, b], ls[i, b]
                    torch.exp(lb, out=sg)
                    for s in range(S):
                        torch.addcmul(mb, sg, eps[rows[m], s, b], out=x[m, s, b])
                    acc += [_sumsq(sg), _sumsq(mb), lb.sum()]
                torch.sum(torch.stack(acc).view(-1, 3), 0, out=parts[m])
                m += 1
            sigs.append(sig)
        kl = 0.5 * (parts[:, 0] + parts[:, 1] - n) - parts[:, 2]
        ctx.save_for_backward(eps, index, *mus, *sigs)
        return x, kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gx, gkl):
        eps, index, *rest = ctx.saved_tensors
        mus, sigs = rest[:ctx.n_pieces], rest[ctx.n_pieces:]
        S = eps.shape[1]
        gmus, glss, m0 = [], [], 0
        for mu, sig in zip(mus, sigs):
            Mp = mu.shape[0]
            gk = gkl[m0:m0 + Mp].view((Mp,) + (1,) * (mu.dim() - 1))
            if ctx.rows is None:
                gxp = gx[m0:m0 + Mp]
                e = (eps if index is None else eps[index])[m0:m0 + Mp]
                gs = gxp[:, 0] if S == 1 else gxp.sum(1)
                ge = (gxp * e).sum(1)
                gmus.append(torch.addcmul(gs, mu, gk))
                glss.append(ge.addcmul_(sig, gk).mul_(sig).sub_(gk))
            else:
                gmu, gls = torch.empty_like(sig), torch.empty_like(sig)
                blocks = _blocks(tuple(mu.shape[1:]))
                for i in range(Mp):
                    m, u = m0 + i, ctx.rows[m0 + i]
                    for b in blocks:
                        gs = gx[m, 0, b] if S == 1 else gx[m, :, b].sum(0)
                        torch.addcmul(gs, mu[i, b], gk[i], out=gmu[i, b])
                        g = torch.mul(gx[m, 0, b], eps[u, 0, b], out=gls[i, b])
                        for s in range(1, S):
                            g.addcmul_(gx[m, s, b], eps[u, s, b])
                        g.addcmul_(sig[i, b], gk[i]).mul_(sig[i, b]).sub_(gk[i])
                gmus.append(gmu)
                glss.append(gls)
            m0 += Mp
        return (None, None, None, *gmus, *glss)


#: Elements per block of the per-model loops above (~0.5 MB of fp32 per stream: L2-sized).
BLOCK = 1 << 17


def _blocks(E: tuple) -> list:
    """Slices of the leading axis of a model's shape E with about BLOCK elements each."""
    rows = max(1, BLOCK // max(1, math.prod(E[1:])))
    return [slice(r, min(E[0], r + rows)) for r in range(0, E[0], rows)]


def _sumsq(t: torch.Tensor) -> torch.Tensor:
    """sum t^2 (a BLAS dot when t is contiguous)."""
    if t.is_contiguous():
        v = t.view(-1)
        return torch.dot(v, v)
    return torch.linalg.vector_norm(t).square()


def _rows(index, M, device):
    """Noise row of each model as Python ints on CPU (a per-model loop reads rows in place);
    None on other devices, where one gathered batched op is the fast path (see
    ``amortlib.model.paths``)."""
    if gpu_path(device):
        return None
    return list(range(M)) if index is None else index.tolist()


def reparam_kl(mu, log_sigma, eps: torch.Tensor,
               index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """S reparameterised draws x = mu + sigma * eps and the closed-form KL(q || N(0, I)),
    summed over all but the model axis: mu, log_sigma [M, *E] (or lists of pieces stacked
    along the model axis), eps [U, S, *E] (model m uses eps[index[m]]; index None: U = M)
    -> x [M, S, *E], kl [M]."""
    mus = list(mu) if isinstance(mu, (list, tuple)) else [mu]
    lss = list(log_sigma) if isinstance(log_sigma, (list, tuple)) else [log_sigma]
    with torch.autocast(eps.device.type, enabled=False):
        return _ReparamKL.apply(eps, index, len(mus), *mus, *lss)
