"""Observation models p(x | z, theta) given the decoder output f = f_theta(z), summed over pixels.

Gaussian:  log N(x; f, sigma^2 I) = -D/2 log(2 pi sigma^2) - ||x - f||^2 / (2 sigma^2)
Bernoulli: log Bern(x; sigmoid f)  = sum_i x_i f_i - softplus(f_i)   (x binary)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .decoder import decode_hidden, decoder_sse
from .gaussian import LOG_2PI
from .paths import gpu_path


def b_dtype(ctx):
    return ctx.b_dtype


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors to fp32 (reductions of the ELBO stay in fp32); others as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


class _AffineSquaredError(torch.autograd.Function):
    """||x - (h W + b)||^2 per row, the Gaussian likelihood's hot path, fused by hand: the
    residual r = hW + b - x is formed in place and reused (in place again) as the gradient
    2 g r, so the [M, B, D] tensors are touched a few times instead of a dozen."""

    @staticmethod
    def forward(ctx, h, w, b, x):
        r = _wide(torch.bmm(h, w))
        r.add_(_wide(b).unsqueeze(1)).sub_(x)
        ctx.save_for_backward(h, w, r)
        ctx.b_dtype = b.dtype
        with torch.autocast(r.device.type, enabled=False):   # CPU autocast runs vecdot in bf16
            return torch.linalg.vecdot(r, r)                  # the ELBO's reduction stays fp32

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        h, w, r = ctx.saved_tensors
        dr = r.mul_(2 * g.unsqueeze(-1))
        low = dr.to(h.dtype)            # bf16 under autocast: the matmuls run on AMX / tensor cores
        gh = torch.bmm(low, w.to(h.dtype).transpose(1, 2)).to(h.dtype) if ctx.needs_input_grad[0] else None
        gw = torch.bmm(h.transpose(1, 2), low).to(w.dtype) if ctx.needs_input_grad[1] else None
        gb = dr.sum(1).to(b_dtype(ctx)) if ctx.needs_input_grad[2] else None
        return gh, gw, gb, None


class _Likelihood:
    def log_prob_affine(self, x, h, w, b):
        """log p(x | f) with f = h W + b the decoder's last layer; h [M, B, H], w [M, H, D]."""
        return self.log_prob(x, _wide(torch.baddbmm(b.unsqueeze(1), h, w)))

    def log_prob_sum(self, x, decoder, theta, z):
        """sum_b log p(x_b | z_b, theta) per model: x [B, D], theta [M, P] (flat), z [M, B, d]
        -> [M] (fp32 reduction). The training path of the ELBO."""
        layers = decoder.unflatten(theta)
        return self.log_prob_affine(x, decode_hidden(layers, z), *layers[4:]).sum(-1)


class GaussianLikelihood(_Likelihood):
    name = "gaussian"

    def __init__(self, sigma: float = 1.0):
        self.sigma = float(sigma)
        self._const = -0.5 * (LOG_2PI + 2 * math.log(self.sigma))
        self._scale = -0.5 / self.sigma ** 2

    def log_prob(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Summed over the last axis (pixels); all constants kept."""
        return self.log_prob_sse((x - f).square().sum(-1), x.shape[-1])

    def log_prob_sse(self, sse, pixels: int):
        """log N(x; f, sigma^2 I) of D = ``pixels`` pixels from the squared error
        sse = ||x - f||^2: -D/2 log(2 pi sigma^2) - sse / (2 sigma^2)."""
        return self._const * pixels + self._scale * sse

    def log_prob_affine(self, x, h, w, b):
        return self.log_prob_sse(_AffineSquaredError.apply(h, w, b, x), x.shape[-1])

    def log_prob_sum(self, x, decoder, theta, z):
        """On CPU the chunked kernel ``decoder_sse`` (decoder, residual and all gradients in
        one cache-resident pass); on a GPU the batched path (few large kernels). See
        ``amortlib.model.paths``."""
        if gpu_path(theta.device):
            return super().log_prob_sum(x, decoder, theta, z)
        (d, H), D = decoder.shapes[0], decoder.shapes[-1][0]
        sse = decoder_sse(theta, z, x, (d, H, D))
        return self._const * D * x.shape[0] + self._scale * sse

    def mean(self, f: torch.Tensor) -> torch.Tensor:
        return f

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x


class BernoulliLikelihood(_Likelihood):
    """Bernoulli pixels. Its density is normalised only for binary x, so ``prepare``
    binarises images at 0.5 and the ELBO then bounds log p of the binarised image."""

    name = "bernoulli"

    def log_prob(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return (x * f - F.softplus(f)).sum(-1)

    def mean(self, f: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(f)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0.5).to(x.dtype)


def make_likelihood(name: str, sigma: float = 1.0):
    if name == "gaussian":
        return GaussianLikelihood(sigma)
    if name == "bernoulli":
        return BernoulliLikelihood()
    raise ValueError(f"likelihood={name!r} is invalid: expected 'gaussian' or 'bernoulli'")
