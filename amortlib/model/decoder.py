"""The Bayesian decoder: M independent decoders stacked along a leading model axis.

f_theta: z -> like_dim -> like_dim -> x_dim, LeakyReLU(0.2) between layers, as in Margossian & Blei's
notebook and jordandeklerk/Amortized-Bayes.
Prior theta ~ N(0, I) over all weights and biases; q(theta) = N(m, diag s^2) over the flattened
parameter vector (P numbers per model). Model i's m is initialised like ``torch.nn.Linear``
(U(-1/sqrt(fan_in), 1/sqrt(fan_in))) from a generator seeded with its seed, so models that
share a seed share the initial decoder (common random numbers across families).
"""
from __future__ import annotations

import math
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

from .gaussian import DiagGaussian

SLOPE = 0.2  # LeakyReLU negative slope, decoder and encoder


def decoder_shapes(z_dim: int, like_dim: int, x_dim: int = 784) -> list[tuple[int, ...]]:
    """Shapes of (W1, b1, W2, b2, W3, b3); weights stored [fan_in, fan_out]."""
    return [(z_dim, like_dim), (like_dim,), (like_dim, like_dim), (like_dim,),
            (like_dim, x_dim), (x_dim,)]


def linear_init(shapes, generator: torch.Generator) -> torch.Tensor:
    """Flat vector of nn.Linear-style U(-1/sqrt(fan_in), 1/sqrt(fan_in)) draws, in order."""
    parts, fan_in = [], None
    for shape in shapes:
        fan_in = shape[0] if len(shape) == 2 else fan_in
        bound = 1.0 / math.sqrt(fan_in)
        u = torch.rand(math.prod(shape), generator=generator, dtype=torch.float32)
        parts.append((2 * u - 1) * bound)
    return torch.cat(parts)


class BayesianDecoder(nn.Module):
    """q(theta) for M models: ``m`` and ``log_s`` are [M, P]."""

    def __init__(self, seeds: list[int], z_dim: int, like_dim: int, x_dim: int = 784,
                 log_s_init: float = -5.0):
        super().__init__()
        self.shapes = decoder_shapes(z_dim, like_dim, x_dim)
        self.sizes = [math.prod(s) for s in self.shapes]
        self.n_params = sum(self.sizes)
        m = torch.stack([linear_init(self.shapes, torch.Generator().manual_seed(int(s)))
                         for s in seeds])
        self.m = nn.Parameter(m)
        self.log_s = nn.Parameter(torch.full_like(m, float(log_s_init)))

    @property
    def q(self) -> DiagGaussian:
        return DiagGaussian(self.m, self.log_s)

    def unflatten(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """[M, P] -> per-layer views [M, *shape]."""
        parts = torch.split(theta, self.sizes, dim=-1)
        return [p.reshape(theta.shape[:-1] + s) for p, s in zip(parts, self.shapes)]


def decode_hidden(layers: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden layer, z [M, B, d] -> h [M, B, like_dim]."""
    w1, b1, w2, b2 = layers[:4]
    h = F.leaky_relu(torch.baddbmm(b1.unsqueeze(1), z, w1), SLOPE)
    return F.leaky_relu(torch.baddbmm(b2.unsqueeze(1), h, w2), SLOPE)


def decode(layers: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """f_theta(z) for stacked models: layers from ``unflatten`` ([M, ...]), z [M, B, d] -> [M, B, D]."""
    w3, b3 = layers[4:]
    return torch.baddbmm(b3.unsqueeze(1), decode_hidden(layers, z), w3)


# --------------------------------------------------------------------------------------------
# The CPU training kernel: decoder + Gaussian residual, value and gradients in one chunked pass.
# --------------------------------------------------------------------------------------------

#: Rows of the batch per chunk of ``decoder_sse`` on CPU, by matmul dtype: a chunk's
#: activations (a few MB) stay in cache between the forward and the backward matmuls
#: (measured best on a 2-core AMX Xeon at the paper scale; bf16 likes longer chunks).
CHUNK_ROWS = {torch.float32: 1024, torch.bfloat16: 2048}

_lrelu_ = torch._C._nn.leaky_relu_
_lrelu_bw = torch.ops.aten.leaky_relu_backward.grad_input
_DERIVED: list = []      # [(weakref to x, x._version, key, value)], the last few


def derived(x: torch.Tensor, key, make):
    """``make(x)``, remembered for the tensor object ``x`` while its version counter (bumped by
    any in-place change) is unchanged: layouts of the data (a cast, -x^T per chunk) are then
    built once per sweep instead of once per step. Keeps the last few entries."""
    for ref, version, k, val in _DERIVED:
        if ref() is x and version == x._version and k == key:
            return val
    val = make(x)
    _DERIVED.insert(0, (weakref.ref(x), x._version, key, val))
    del _DERIVED[4:]
    return val


def _neg_xt(x: torch.Tensor, chunks, dtype):
    """Per chunk of rows: -x^T, contiguous [D, rows] in ``dtype``; in a half dtype also the
    part of x it cannot hold, x_lo^T = (x - half(x))^T, and sum x_lo^2 (else None, 0).
    Cached per data tensor (see ``derived``)."""
    def make(x):
        out = []
        for r0, r1 in chunks:
            xt = x[r0:r1].t()
            hi = torch.empty(xt.shape, dtype=dtype, device=x.device).copy_(xt)
            lo = lo2 = None
            if dtype != x.dtype:
                lo32 = xt - hi.to(x.dtype)
                lo = torch.empty(xt.shape, dtype=dtype, device=x.device).copy_(lo32)
                lo2 = lo32.square().sum()
            out.append((hi.neg_(), lo, lo2))
        return out
    return derived(x, ("neg_xt", tuple(chunks), dtype), make)


class _Workspace:
    """Buffers of one chunk of c rows. Layer inputs and outputs are feature-major ([features,
    c]) so that every matmul reads its operands in the layout oneDNN / MKL pack fastest; the
    bias of each layer rides in the matmul as an extra input row of ones (W and b are stored
    back to back in theta, so [W; b] is one (fan_in + 1) x fan_out matrix). z and dz stay
    row-major ([c, d]) like the tensors they come from and go to."""

    def __init__(self, d, H, D, c, dtype, device, need_theta):
        e = lambda *s: torch.empty(*s, dtype=dtype, device=device)
        self.za, self.h1a, self.h2a = e(c, d + 1), e(H + 1, c), e(H + 1, c)
        self.za[:, d].fill_(1.0)
        self.h1a[H].fill_(1.0)
        self.h2a[H].fill_(1.0)
        self.g1, self.g2 = e(H, c), e(H, c)
        self.r, self.gz = e(D, c), e(c, d)
        low = dtype != torch.float32 and need_theta
        self.t1, self.t2, self.t3 = (e(d + 1, H), e(H + 1, H), e(H + 1, D)) if low else (None,) * 3


def _acc(g: torch.Tensor, a: torch.Tensor, b: torch.Tensor, tmp: torch.Tensor | None) -> None:
    """g += a @ b, g in the master dtype (fp32 accumulation across chunks)."""
    if tmp is None:
        g.addmm_(a, b)
    else:
        g.add_(torch.mm(a, b, out=tmp))


class _ChunkedDecoderSSE(torch.autograd.Function):
    """s_m = sum_b ||f_theta_m(z_mb) - x_b||^2 for stacked models, with the gradients of s
    computed in the same pass (the backward only scales them by ds).

    Per chunk of rows (feature-major, a ones row appended to each layer input):
        a1 = [W1;b1]^T [z;1],  h1 = lrelu(a1),  a2 = [W2;b2]^T [h1;1],  h2 = lrelu(a2)
        r  = [W3;b3]^T [h2;1] - x                  (one GEMM with beta = 1 onto -x)
        s += ||r||^2                               (fp32 accumulation)
        d[W3;b3] += [h2;1] r^T,  g2 = lrelu'(a2) * (W3 r),  d[W2;b2] += [h1;1] g2^T,
        g1 = lrelu'(a1) * (W2 g2),  d[W1;b1] += [z;1] g1^T,  dz = W1 g1
    (every gradient without its factor 2, applied in backward). In bf16 the matmul operands
    are bf16 (AMX), r is rounded once after fp32 accumulation, s sums per-pixel partial norms
    in fp32 and every gradient accumulates in fp32 across chunks. x itself is not a bf16
    number: the GEMM subtracts x_hi = bf16(x) and s is corrected for x_lo = x - x_hi,
    s = ||r||^2 - 2 <r, x_lo> + ||x_lo||^2, so the value is the ELBO of the real data (without
    this, at sigma = 0.1 the rounding of x alone shifted a poorly fitting model's -ELBO by
    ~1.5 nats: x_lo is not noise, it is biased where pixels are bright). The gradient keeps
    r (it fits x_hi, which moves the optimum by < 0.002 per pixel, a second-order change). Nothing of size [M, B, D]
    is ever stored: memory is O(M P + M B d) plus one chunk's buffers."""

    @staticmethod
    def forward(ctx, theta, z, x, dims, cdt, need_theta, need_z, rows):
        d, H, D = dims
        MS, B = z.shape[:2]
        o1, o2 = (d + 1) * H, (d + 1) * H + (H + 1) * H
        th, dev = theta.detach(), theta.device
        grad = need_theta or need_z
        n_chunks = -(-B // rows)
        c = -(-B // n_chunks)
        chunks = [(r0, min(B, r0 + c)) for r0 in range(0, B, c)]
        # weights in the compute dtype, cast (and transposed) once per call
        thc = th.to(cdt)                               # one cast per call (a no-op in fp32)
        w1t = thc[:, :o1].view(MS, d + 1, H).transpose(1, 2).contiguous()   # [W;b]^T, forward
        w2t = thc[:, o1:o2].view(MS, H + 1, H).transpose(1, 2).contiguous()
        w3t = thc[:, o2:].view(MS, H + 1, D).transpose(1, 2).contiguous()
        w1 = thc[:, :d * H].view(MS, d, H)                                  # W, backward
        w2 = thc[:, o1:o1 + H * H].view(MS, H, H)
        w3 = thc[:, o2:o2 + H * D].view(MS, H, D)
        neg_xt = _neg_xt(x, chunks, cdt)
        parts = torch.empty(MS, len(chunks), D, dtype=cdt, device=dev)    # per-pixel norms
        low = neg_xt[0][1] is not None
        cross = torch.empty(MS, len(chunks), dtype=cdt, device=dev) if low else None
        gth = torch.zeros_like(th) if need_theta else None
        gz = torch.empty(z.shape, dtype=th.dtype, device=dev) if need_z else None
        if need_theta:
            gw = [(gth[i, :o1].view(d + 1, H), gth[i, o1:o2].view(H + 1, H),
                   gth[i, o2:].view(H + 1, D)) for i in range(MS)]
        spaces = {}
        for k, (r0, r1) in enumerate(chunks):
            ws = spaces.get(r1 - r0) or spaces.setdefault(
                r1 - r0, _Workspace(d, H, D, r1 - r0, cdt, dev, need_theta))
            za, h1a, h2a, r = ws.za, ws.h1a, ws.h2a, ws.r
            for i in range(MS):
                za[:, :d].copy_(z[i, r0:r1])
                _lrelu_(torch.mm(w1t[i], za.t(), out=h1a[:H]), SLOPE)      # in place: h1
                _lrelu_(torch.mm(w2t[i], h1a, out=h2a[:H]), SLOPE)
                r.copy_(neg_xt[k][0]).addmm_(w3t[i], h2a)              # r^T = f^T - x^T
                torch.linalg.vector_norm(r, dim=1, out=parts[i, k])
                if low:                                 # for the value against the exact x
                    torch.dot(r.view(-1), neg_xt[k][1].view(-1), out=cross[i, k])
                if not grad:
                    continue
                torch.mm(w3[i], r, out=ws.g2)                          # lrelu' from h's sign
                _lrelu_bw(ws.g2, h2a[:H], SLOPE, True, grad_input=ws.g2)
                torch.mm(w2[i], ws.g2, out=ws.g1)
                _lrelu_bw(ws.g1, h1a[:H], SLOPE, True, grad_input=ws.g1)
                if need_theta:
                    g1, g2, g3 = gw[i]
                    _acc(g3, h2a, r.t(), ws.t3)
                    _acc(g2, h1a, ws.g2.t(), ws.t2)
                    _acc(g1, za.t(), ws.g1.t(), ws.t1)
                if need_z:
                    gz[i, r0:r1].copy_(torch.mm(ws.g1.t(), w1[i].t(), out=ws.gz))
        ctx.save_for_backward(gth, gz)
        sse = parts.to(th.dtype).square().sum((1, 2))
        if low:   # ||r - x_lo||^2 = ||r||^2 - 2 <r, x_lo> + ||x_lo||^2, r = f - half(x)
            sse += sum(lo2 for _, _, lo2 in neg_xt) - 2 * cross.to(th.dtype).sum(1)
        return sse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, ds):
        gth, gz = ctx.saved_tensors              # ours alone (once_differentiable): scale in place
        two_ds = 2 * ds
        return (None if gth is None else gth.mul_(two_ds[:, None]),
                None if gz is None else gz.mul_(two_ds[:, None, None]), None, None, None, None, None, None)


def decoder_sse(theta: torch.Tensor, z: torch.Tensor, x: torch.Tensor, dims, dtype=None,
                rows: int | None = None) -> torch.Tensor:
    """sum_b ||f_theta(z_b) - x_b||^2 per stacked model, differentiable in theta and z.

    theta [M, P] (flat, the layout of ``decoder_shapes``), z [M, B, d], x [B, D] shared;
    dims = (d, like_dim, D). ``dtype`` is the matmul dtype (default: autocast's when autocast
    is on, else theta's). Returns [M] in theta's dtype, equal to
    ``((decode(unflatten(theta), z) - x) ** 2).sum((1, 2))``. The CPU kernel (see
    ``_ChunkedDecoderSSE``); on a GPU the batched path of ``log_prob_affine`` is the fast one.
    """
    if dtype is None:
        dev = theta.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else theta.dtype
    grad = torch.is_grad_enabled()
    with torch.autocast(theta.device.type, enabled=False):
        return _ChunkedDecoderSSE.apply(theta, z, x, tuple(dims), dtype,
                                        grad and theta.requires_grad, grad and z.requires_grad,
                                        rows or CHUNK_ROWS.get(dtype, 1024))
