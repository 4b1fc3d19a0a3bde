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

from .decoder import SLOPE, linear_init
from .gaussian import DiagGaussian


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
        outs = [g(x) for g in self.groups]
        return DiagGaussian(torch.cat([o.mu for o in outs]), torch.cat([o.log_sigma for o in outs]))


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
