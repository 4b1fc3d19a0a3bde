"""M Bayesian VAEs stacked along a leading model axis: one decoder q(theta) per model, the
three families' q(z) concatenated in the canonical order (factorized, amortized, constant).

Nothing here mixes models: every op is per model (batched matmuls, elementwise Adam), so a
model that diverges (NaN) cannot contaminate the others, and a model trained inside the stack
gets the same numbers as the same model trained alone.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..config import SweepConfig
from ..model import BayesianDecoder, DiagGaussian, make_families, make_likelihood


class StackedVAE(nn.Module):
    def __init__(self, cfg: SweepConfig, x_dim: int = 784, specs_filter=None):
        super().__init__()
        self.cfg = cfg
        self.families = nn.ModuleList(
            make_families(cfg.families, cfg.widths, cfg.seeds, cfg.n_obs, cfg.z_dim, x_dim, cfg.depth))
        self.specs = [s for fam in self.families for s in fam.specs]
        self.decoder = BayesianDecoder([s.seed for s in self.specs], cfg.z_dim, cfg.like_dim,
                                       x_dim, cfg.theta_log_std_init)
        self.likelihood = make_likelihood(cfg.likelihood, cfg.sigma)
        seeds = sorted({s.seed for s in self.specs})
        self.register_buffer("seed_index",
                             torch.tensor([seeds.index(s.seed) for s in self.specs]), persistent=False)
        self.seeds = seeds

    @property
    def n_models(self) -> int:
        return len(self.specs)

    def q_z(self, x: torch.Tensor, idx: torch.Tensor) -> DiagGaussian:
        """q(z_B) of every model: mu, log_sigma [M, B, d]."""
        qs = [fam(x, idx) for fam in self.families]
        return DiagGaussian(torch.cat([q.mu for q in qs]), torch.cat([q.log_sigma for q in qs]))

    def q_z_parts(self, x: torch.Tensor, idx: torch.Tensor) -> DiagGaussian:
        """``q_z`` as lists of per-family pieces (mu, log_sigma [M_f, B, d]), not concatenated:
        the training path hands them to the ELBO as they are."""
        qs = [fam(x, idx) for fam in self.families]
        return DiagGaussian([q.mu for q in qs], [q.log_sigma for q in qs])

    def encode_one(self, pos: int, x: torch.Tensor) -> DiagGaussian:
        """The inference function of the model at ``pos`` alone, on x [n, D]: mu, log_sigma
        [n, d] (A-VI's encoder, constant-VI's shared q; F-VI has none: ValueError)."""
        for fam in self.families:
            sl = self.model_slice(fam.family)
            if sl.start <= pos < sl.stop:
                return fam.encode_one(pos - sl.start, x)
        raise IndexError(f"pos={pos} is invalid: expected 0 <= pos < {self.n_models}")

    def model_slice(self, family: str) -> slice:
        """Positions of one family's models along the model axis."""
        start = 0
        for fam in self.families:
            if fam.family == family:
                return slice(start, start + len(fam.specs))
            start += len(fam.specs)
        return slice(start, start)

    def optimizers(self, lr: float, weight_decay: float = 0.0,
                   local_lr: float | None = None) -> list[torch.optim.Optimizer]:
        """Adam for the dense parameters (decoder, encoders, constant), lazy (sparse) Adam for
        the factorized table so a mini-batch step moves only its rows. Adam is elementwise, so
        one optimizer over stacked parameters equals one optimizer per model. ``weight_decay`` (an L2 term added to the objective, off by
        default) applies to the dense parameters only; the F-VI table is never decayed.
        ``local_lr``: the learning rate of the F-VI table (its per-image (mu_n, log sigma_n));
        None: ``lr``. Adam moves each coordinate by about its learning rate per step, so the
        table's lr sets how fast F-VI's q(z_n) can travel, whatever the decoder's lr."""
        sparse = [p for fam in self.families if fam.sparse for p in fam.parameters()]
        sparse_ids = {id(p) for p in sparse}
        dense = [p for p in self.parameters() if id(p) not in sparse_ids]
        # (foreach, not fused: torch's fused CPU Adam gave a model different numbers alone and
        # inside a sweep, which would break the sweep's exactness)
        opts = [torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay, foreach=True)]
        if sparse:  # SparseAdam has no weight decay: the F-VI table is never decayed
            opts.append(RowAdam(sparse, lr=lr if local_lr is None else local_lr))
        return opts


class RowAdam(torch.optim.SparseAdam):
    """``torch.optim.SparseAdam`` (lazy Adam: only the rows in the batch move), with a dense
    fast path when a step's gradient covers every row (full batch), same update:

        m += (1 - b1) (g - m),  v += (1 - b2) (g^2 - v),
        theta -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

    computed with a few in-place passes over the table instead of sparse masks and copies."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, eps = float(group["lr"]), group["eps"]
            rest = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.coalesce()
                if g._nnz() != p.shape[0] or g.dense_dim() != p.dim() - 1 or group.get("maximize"):
                    rest.append(p)
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
                t = st["step"]
                v = g._values()                      # coalesced, all rows: row i is row i
                st["exp_avg"].lerp_(v, 1 - b1)
                st["exp_avg_sq"].lerp_(v.square(), 1 - b2)
                denom = st["exp_avg_sq"].sqrt().add_(eps)
                p.addcdiv_(st["exp_avg"], denom, value=-lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t))
            if rest:                                 # mini-batch steps: torch's own SparseAdam
                saved = group["params"]
                group["params"] = rest
                try:
                    super().step()
                finally:
                    group["params"] = saved
        return loss
