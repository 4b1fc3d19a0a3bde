"""The three variational families for the local latents, behind one interface.

Every family holds the parameters of several models (one per seed, or per width and seed)
stacked along a leading model axis, and maps a batch (x_B, indices B) to q(z_B) as a
``DiagGaussian`` with mu, log_sigma of shape [models, B, d]. The ELBO never asks which
family produced q(z).

- ``Factorized`` (F-VI):  q(z_n) = N(mu_n, sigma_n^2), free (mu_n, log sigma_n) per datapoint.
- ``Amortized``  (A-VI):  (mu_n, log sigma_n) = g_phi(x_n), g an MLP of width k, ``depth``
  hidden layers, LeakyReLU(0.2).
- ``Constant``:           q(z_n) = N(mu, sigma^2), one (mu, log sigma) shared by all n.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .decoder import SLOPE, derived, linear_init
from .gaussian import DiagGaussian
from .paths import gpu_path


class ModelSpec(NamedTuple):
    """Identity of one trained model."""

    family: str
    width: int | None
    seed: int

    @property
    def label(self) -> str:
        return {"factorized": "F-VI", "constant": "constant-VI"}.get(
            self.family, f"A-VI k={self.width}")


def encoder_generator(seed: int, width: int) -> torch.Generator:
    """Encoder initialisation stream of one (seed, width), independent of the decoder's."""
    return torch.Generator().manual_seed(1_000_003 * (int(seed) + 1) + int(width))


class Factorized(nn.Module):
    """F-VI for len(seeds) models. The table is [N, models * 2 * d] and is read with a sparse
    embedding lookup, so a mini-batch step (with ``torch.optim.SparseAdam``) moves only the
    rows in the batch. Initialised at the prior: mu_n = 0, log sigma_n = 0."""

    family = "factorized"
    sparse = True

    def __init__(self, seeds, n_obs: int, z_dim: int):
        super().__init__()
        self.specs = [ModelSpec("factorized", None, int(s)) for s in seeds]
        self.z_dim = z_dim
        self.table = nn.Parameter(torch.zeros(n_obs, len(self.specs) * 2 * z_dim))

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> DiagGaussian:
        rows = F.embedding(idx, self.table, sparse=True)           # [B, M*2*d]
        rows = rows.view(len(idx), len(self.specs), 2, self.z_dim).permute(2, 1, 0, 3)
        return DiagGaussian(rows[0], rows[1])

    def encode_one(self, j: int, x: torch.Tensor) -> DiagGaussian:
        raise ValueError(f"F-VI model {self.specs[j].label} (seed {self.specs[j].seed}) has no inference "
                         "function: its q(z_n) is a table row per training image")

    def set_rows(self, q: DiagGaussian) -> None:
        """Overwrite all rows from q with mu, log_sigma [M, N, d] (e.g. a warm start)."""
        with torch.no_grad():
            t = torch.stack([q.mu, q.log_sigma]).permute(2, 1, 0, 3)   # [N, M, 2, d]
            self.table.copy_(t.reshape(self.table.shape))


class Amortized(nn.Module):
    """A-VI: one MLP encoder per (width, seed). Encoders of equal width are stacked, so each
    width group runs as one batched matmul per layer with no padding."""

    family = "amortized"
    sparse = False

    def __init__(self, widths, seeds, z_dim: int, x_dim: int = 784, depth: int = 1):
        super().__init__()
        self.widths, self.seeds, self.z_dim, self.depth = list(widths), list(seeds), z_dim, depth
        self.specs = [ModelSpec("amortized", int(w), int(s)) for w in widths for s in seeds]
        self.groups = nn.ModuleList(_EncoderGroup(w, seeds, z_dim, x_dim, depth) for w in widths)

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> DiagGaussian:
        if self.depth == 1 and not gpu_path(x.device):   # see amortlib.model.paths
            return DiagGaussian(*self.fused(x))
        outs = [g(x) for g in self.groups]
        return DiagGaussian(torch.cat([o.mu for o in outs]), torch.cat([o.log_sigma for o in outs]))

    def encode_one(self, j: int, x: torch.Tensor) -> DiagGaussian:
        """The family's j-th encoder alone (width-major order, as ``specs``): x [n, D] ->
        mu, log_sigma [n, d]."""
        g, r = divmod(j, len(self.seeds))
        return self.groups[g].encode_one(r, x)

    def fused(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu, log_sigma [models, B, d] of every encoder (depth 1) by ``_EncodersFn``."""
        dev = x.device.type
        cdt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        params = [p for g in self.groups for p in (g.w_in, g.b_in, g.w_out, g.b_out)]
        with torch.autocast(dev, enabled=False):
            return _EncodersFn.apply(x, cdt, (self.widths, len(self.seeds), self.z_dim), *params)


class _EncodersFn(torch.autograd.Function):
    """Every depth-1 encoder (all widths k, all seeds) in one pass, x [B, D]:

        H = x [W_1 | W_2 | ...] + b     one matmul for the first layer of all encoders
        A = lrelu(H)
        (mu_j, log_sigma_j) = A[:, cols_j] W_out_j + b_out_j     per encoder j (a column block)

    Backward: dA[:, cols_j] = g_j W_out_j^T, dW_out_j = A[:, cols_j]^T g_j, dH = lrelu'(H) dA,
    d[W; b] = [x, 1]^T dH (one matmul; the bias rides as a ones column of x, and x, [x, 1]
    and its transpose are cached per data tensor). Column blocks are read in place (no
    transposed copies). Matmuls run in ``cdt`` (bf16 under autocast), outputs and gradients
    in fp32."""

    @staticmethod
    def forward(ctx, x, cdt, meta, *params):
        widths, S, d = meta
        B, D = x.shape
        f32 = params[0].dtype
        G = len(widths)
        w_in = torch.cat([torch.cat([params[4 * g].reshape(D, -1), params[4 * g + 1].reshape(1, -1)])
                          for g in range(G)], 1).to(cdt)                 # [[W]; [b]]  [D + 1, T]
        xa = derived(x, ("x1", cdt), lambda t: torch.cat([t, torch.ones_like(t[:, :1])], 1).to(cdt))
        a = F.leaky_relu_(torch.mm(xa, w_in), SLOPE)                    # A = lrelu([x, 1] [W; b])
        mu, ls = (torch.empty(S * G, B, d, dtype=cdt, device=x.device) for _ in range(2))
        heads, off = [], 0
        for g, k in enumerate(widths):
            w_out, b_out = params[4 * g + 2], params[4 * g + 3]
            small = k < _SMALL and cdt != f32       # skinny matmuls: fp32 (MKL) beats bf16 there
            wc, bc = (w_out, b_out) if small else (w_out.to(cdt), b_out.to(cdt))
            for s in range(S):
                j, ak = g * S + s, a[:, off:off + k]
                for o, c in ((mu, slice(0, d)), (ls, slice(d, 2 * d))):   # contiguous outputs
                    if small:
                        o[j].copy_(torch.addmm(bc[s, c], ak.to(f32), wc[s, :, c]))
                    else:
                        torch.addmm(bc[s, c], ak, wc[s, :, c], out=o[j])
                heads.append((off, k, wc[s], small))
                off += k
        ctx.save_for_backward(x, a)
        ctx.heads, ctx.meta, ctx.f32 = heads, meta, f32
        return mu.to(f32), ls.to(f32)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gmu, gls):
        x, a = ctx.saved_tensors
        widths, S, d = ctx.meta
        B, D = x.shape
        cdt, f32 = a.dtype, ctx.f32
        g16 = (gmu.to(cdt), gls.to(cdt))                                   # contiguous casts
        g_b = torch.cat([gmu.sum(1), gls.sum(1)], 1)                       # [J, 2d]
        ga = torch.empty_like(a)
        g_w_out = [torch.empty(S, k, 2 * d, dtype=f32, device=a.device) for k in widths]
        for j, (off, k, w, small) in enumerate(ctx.heads):
            g, s = divmod(j, S)
            ak, gak = a[:, off:off + k], ga[:, off:off + k]
            gw = g_w_out[g][s]
            if small:
                go32 = torch.cat([gmu[j], gls[j]], 1)
                gak.copy_(torch.mm(go32, w.t()))
                torch.mm(ak.to(f32).t(), go32, out=gw)
            else:      # dA = g_mu W_mu^T + g_ls W_ls^T, dW_out = A^T [g_mu, g_ls]
                torch.mm(g16[0][j], w[:, :d].t(), out=gak).addmm_(g16[1][j], w[:, d:].t())
                gw[:, :d].copy_(torch.mm(ak.t(), g16[0][j]))
                gw[:, d:].copy_(torch.mm(ak.t(), g16[1][j]))
        gh = torch.ops.aten.leaky_relu_backward.grad_input(ga, a, SLOPE, True, grad_input=ga)
        xt = derived(x, ("x1t", cdt), lambda t: torch.cat([t, torch.ones_like(t[:, :1])], 1)
                     .to(cdt).t().contiguous())                         # [x, 1]^T  [D + 1, B]
        g_w = torch.mm(xt, gh).to(f32)                                    # d[W; b]  [D + 1, T]
        out, off = [None, None, None], 0
        for g, k in enumerate(widths):
            n = S * k
            out += [g_w[:D, off:off + n].reshape(D, S, k), g_w[D, off:off + n].reshape(S, k),
                    g_w_out[g], g_b[g * S:(g + 1) * S]]
            off += n
        return tuple(out)


#: Below this encoder width the head matmuls ([B, k] x [k, 2d]) run in fp32 even under bf16.
_SMALL = 16


class _EncoderGroup(nn.Module):
    """Encoders of one width k for several seeds: x -> k (-> k)*(depth-1) -> 2d."""

    def __init__(self, width, seeds, z_dim, x_dim, depth):
        super().__init__()
        S, k, d = len(seeds), width, z_dim
        shapes = [(x_dim, k), (k,)] + [(k, k), (k,)] * (depth - 1) + [(k, 2 * d), (2 * d,)]
        flat = torch.stack([linear_init(shapes, encoder_generator(s, width)) for s in seeds])
        parts = torch.split(flat, [math.prod(s) for s in shapes], dim=1)
        ps = [p.reshape((S,) + s) for p, s in zip(parts, shapes)]
        # input layer stored [x_dim, S, k] so all seeds share one x @ W matmul
        self.w_in = nn.Parameter(ps[0].permute(1, 0, 2).contiguous())
        self.b_in = nn.Parameter(ps[1])
        self.w_hidden = nn.ParameterList(nn.Parameter(p) for p in ps[2:-2:2])
        self.b_hidden = nn.ParameterList(nn.Parameter(p) for p in ps[3:-2:2])
        self.w_out, self.b_out = nn.Parameter(ps[-2]), nn.Parameter(ps[-1])
        self.S, self.k, self.d = S, k, d

    def forward(self, x: torch.Tensor) -> DiagGaussian:
        B = x.shape[0]
        h = torch.addmm(self.b_in.reshape(-1), x, self.w_in.reshape(x.shape[1], -1))  # [B, S*k]
        h = F.leaky_relu(h, SLOPE).view(B, self.S, self.k).transpose(0, 1)             # [S, B, k]
        for w, b in zip(self.w_hidden, self.b_hidden):
            h = F.leaky_relu(torch.baddbmm(b.unsqueeze(1), h, w), SLOPE)
        out = torch.baddbmm(self.b_out.unsqueeze(1), h, self.w_out)                     # [S, B, 2d]
        return DiagGaussian(out[..., : self.d], out[..., self.d:])

    def encode_one(self, r: int, x: torch.Tensor) -> DiagGaussian:
        """The r-th seed's encoder with its weights only: x [n, D] -> mu, log_sigma [n, d]
        (equal to its slice of ``forward``; for timing one encoder alone)."""
        h = F.leaky_relu(torch.addmm(self.b_in[r], x, self.w_in[:, r]), SLOPE)
        for w, b in zip(self.w_hidden, self.b_hidden):
            h = F.leaky_relu(torch.addmm(b[r], h, w[r]), SLOPE)
        out = torch.addmm(self.b_out[r], h, self.w_out[r])
        return DiagGaussian(out[:, : self.d], out[:, self.d:])


class Constant(nn.Module):
    """Constant-VI: one (mu, log sigma) per model for every datapoint; initialised at the prior."""

    family = "constant"
    sparse = False

    def __init__(self, seeds, z_dim: int):
        super().__init__()
        self.specs = [ModelSpec("constant", None, int(s)) for s in seeds]
        self.params_ = nn.Parameter(torch.zeros(len(self.specs), 2, z_dim))

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> DiagGaussian:
        B = x.shape[0]
        mu = self.params_[:, 0, None, :].expand(-1, B, -1)
        log_sigma = self.params_[:, 1, None, :].expand(-1, B, -1)
        return DiagGaussian(mu, log_sigma)

    def encode_one(self, j: int, x: torch.Tensor) -> DiagGaussian:
        """The j-th model's q(z) for each of the n images x: mu, log_sigma [n, d]."""
        p = self.params_[j]
        return DiagGaussian(p[0].expand(len(x), -1), p[1].expand(len(x), -1))


def make_families(families, widths, seeds, n_obs, z_dim, x_dim=784, depth=1) -> list[nn.Module]:
    """The family groups of a sweep, in the canonical order factorized, amortized, constant."""
    out = []
    if "factorized" in families:
        out.append(Factorized(seeds, n_obs, z_dim))
    if "amortized" in families:
        out.append(Amortized(widths, seeds, z_dim, x_dim, depth))
    if "constant" in families:
        out.append(Constant(seeds, z_dim))
    return out
