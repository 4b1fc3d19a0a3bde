r"""Measuring the amortization gap of trained models (Cremer, Li & Duvenaud 2018).

Everything here is *local*: q(theta) = N(m, s^2) of a trained model is frozen, and the
objects are the per-datapoint quantities

    ELBO_n(q) = E_{q(theta)} E_{q(z_n)} [log p(x_n | z_n, theta)] - KL(q(z_n) || N(0, I))
    log p_n   = E_{q(theta)} [log p(x_n | theta)],   log p(x_n | theta) = log int p(x_n, z | theta) dz

in nats. The global KL(q(theta) || p(theta)) is left out: it is the same for every q(z) and
cancels in every gap below. For any q(z_n), ELBO_n(q) <= log p_n (Jensen for each theta).

- **amortization gap** of datapoint n: ELBO_n(q*_n) - ELBO_n(q_enc,n), where q_enc is the
  trained inference function's output (an encoder of width k, or the constant q of
  constant-VI) and q*_n is F-VI's optimum, found by gradient ascent on q(z_n) *from q_enc,n*
  (``fit_q``) until the ELBO stops improving.
- **approximation gap**: log p_n - ELBO_n(q*_n), with log p_n estimated by the
  importance-weighted bound IWAE_K (Burda et al. 2016) with q* as proposal (``iwae``).
- **inference gap** = approximation gap + amortization gap = log p_n - ELBO_n(q_enc,n).

Theta: by default (``theta="sample"``) the expectations over q(theta) are Monte Carlo
averages over draws theta = m + s * eps, the objective the models were trained on. With
``theta="mean"`` theta is fixed at m (then the fits, ELBOs and bounds all use theta = m).

Monte Carlo: every comparison of two q's uses common random numbers (the same eps for z and
theta), and every estimate comes with a standard error ``se`` that combines the spread over
images (the n images are a sample) with the Monte Carlo error (``mean_se``).
"""
from __future__ import annotations

import math
import time
from typing import NamedTuple

import torch

from ..model import DiagGaussian, decode
from ..model.decoder import decode_hidden
from ..model.gaussian import kl_std_normal
from ..objective import NoiseSource, elbo_terms

#: Columns of ``gap_table`` (one row per trained model and split), in this order; further
#: columns follow (see ``gap_table``).
GAP_COLUMNS = ["dataset", "likelihood", "sigma", "config", "family", "width", "seed", "split",
               "gap_mean", "gap_se", "gap_lo", "gap_hi", "n"]
GAP_EXTRA_COLUMNS = ["gap_sd", "mc_se", "elbo_amortized", "elbo_fvi", "fit_steps", "converged",
                     "theta", "n_eval"]
Z95 = 1.959963984540054
#: Refinement steps K of the semi-amortized curve (Kim et al. 2018), K = 0 being the encoder.
REFINE_STEPS = (1, 2, 5, 10, 20, 50, 100)
THETA_MODES = ("sample", "mean")
GAP_FAMILIES = ("amortized", "constant")
SPLITS = ("train", "test")
#: Floats (4 bytes each) one chunk of a Monte Carlo evaluation may hold, about 256 MB.
CHUNK_FLOATS = 2 ** 26


# --------------------------------------------------------------------------- small helpers
def mean_se(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over draws and images of ``values`` [M, S, n] (S Monte Carlo draws of n per-image
    quantities) and its standard error [M]:

        se^2 = Var_n(mean_s values) / n  +  Var_s(mean_n values) / S

    the first term for the images being a sample (it also holds the independent part of the
    Monte Carlo noise), the second for Monte Carlo noise shared by all images (theta draws are
    shared). Slightly conservative: the independent Monte Carlo noise is counted in both."""
    values = values.double()
    M, S, n = values.shape
    est = values.mean((1, 2))
    var_img = values.mean(1).var(1, unbiased=True) / n if n > 1 else torch.zeros(M, dtype=values.dtype, device=values.device)
    var_mc = values.mean(2).var(1, unbiased=True) / S if S > 1 else torch.zeros(M, dtype=values.dtype, device=values.device)
    return est, (var_img + var_mc).sqrt()


def per_image_se(values: torch.Tensor) -> torch.Tensor:
    """Monte Carlo standard error of each image's mean over draws: [M, S, n] -> [M, n]."""
    S = values.shape[1]
    if S < 2:
        return torch.full(values[:, 0].shape, float("nan"), dtype=torch.float64, device=values.device)
    return values.double().std(1, unbiased=True) / math.sqrt(S)


def _check_theta(theta: str) -> str:
    if theta not in THETA_MODES:
        raise ValueError(f"theta={theta!r} is invalid: expected 'sample' or 'mean'")
    return theta


def _noise(model_seeds, seed: int, stream: int, device) -> NoiseSource:
    """The gap code's noise: one generator per model, seeded from (``seed``, the model's own
    seed, ``stream``), so models that share a seed get the same noise (common random numbers
    across widths) and a model gets the same noise whatever else is measured beside it."""
    return NoiseSource(model_seeds, device, offset=1_000_003 * int(seed) + 101 * int(stream) - 10)


def _theta(decoder, index, eps_theta: torch.Tensor | None) -> torch.Tensor:
    """theta = m + s * eps of the models ``index``: eps [M, S, P] -> [M, S, P]; eps None: m [M, 1, P]."""
    m = decoder.m.detach()[index]
    if eps_theta is None:
        return m[:, None]
    return m[:, None] + decoder.log_s.detach()[index].exp()[:, None] * eps_theta


def _index(index, device) -> torch.Tensor:
    return torch.as_tensor(list(index), dtype=torch.long, device=device)


# --------------------------------------------------------------------------- the ELBO per image
@torch.no_grad()
def elbo_samples(decoder, likelihood, x: torch.Tensor, q: DiagGaussian, index,
                 eps_z: torch.Tensor, eps_theta: torch.Tensor | None) -> torch.Tensor:
    """Single-draw local ELBOs log p(x_n | z_ns, theta_s) - KL(q(z_n) || N(0, I)), [M, S, n].

    x [n, D] (prepared); q with mu, log_sigma [M, n, d] for the models ``index``;
    eps_z [M, S, n, d]; eps_theta [M, S, P], or None for theta = m. The KL is exact; the
    mean over s is an unbiased estimate of ELBO_n(q). Pass the same eps for two q's to compare
    them with common random numbers. Memory-bounded: draws are processed in chunks."""
    index = _index(index, x.device)
    M, S, n, d = eps_z.shape
    D = x.shape[-1]
    kl = kl_std_normal(q.mu, q.log_sigma)                                     # [M, n]
    sigma = q.log_sigma.exp()
    step = max(1, CHUNK_FLOATS // max(1, M * n * D * 3))
    out = []
    for s0 in range(0, S, step):
        s1 = min(S, s0 + step)
        k = s1 - s0
        th = _theta(decoder, index, None if eps_theta is None else eps_theta[:, s0:s1])
        th = th.expand(M, k, -1)
        layers = decoder.unflatten(th.reshape(M * k, -1))
        z = q.mu[:, None] + sigma[:, None] * eps_z[:, s0:s1]                   # [M, k, n, d]
        f = decode(layers, z.reshape(M * k, n, d))
        out.append(likelihood.log_prob(x, f.float()).view(M, k, n))
    return torch.cat(out, 1) - kl[:, None]


def eval_noise(model_seeds, n_samples: int, n: int, d: int, P: int, theta: str, seed: int,
               device, stream: int = 1):
    """Evaluation noise (eps_z [M, S, n, d], eps_theta [M, S, P] or None), independent of the
    noise any fit used (a separate stream)."""
    noise = _noise(model_seeds, seed, stream, device)
    eps_t = noise.normal(n_samples, P) if theta == "sample" else None
    return noise.normal(n_samples, n, d), eps_t


# --------------------------------------------------------------------------- F-VI on q(z_n)
class LocalFit(NamedTuple):
    q: DiagGaussian                 # final q(z), mu / log_sigma [M, n, d]
    snapshots: dict                 # K -> DiagGaussian after K steps (K in ``checkpoints``)
    steps: list                     # per model: steps taken when its stopping rule fired
    converged: list                 # per model: the rule fired before max_steps
    history: list                   # (step, [M] lr, [M] mean check-ELBO) at every check
    seconds: float                  # wall-clock seconds of the whole (stacked) fit


def fit_q(decoder, likelihood, x: torch.Tensor, index, init: DiagGaussian | None = None, *,
          model_seeds=None, lr: float = 1e-2, n_mc: int = 1, tol: float = 0.01,
          check_every: int = 25, decays: int = 2, decay_factor: float = 0.3, min_steps: int = 0,
          max_steps: int = 3000, checkpoints=(), n_check: int = 8, theta: str = "sample",
          seed: int = 0, skip=()) -> LocalFit:
    """F-VI on q(z_n) of the images x [n, D] (prepared) under the frozen q(theta) of the
    decoder's models ``index``, from ``init`` (mu, log_sigma [M, n, d]; default the prior).

    Adam (written out, with one learning rate per model) on the local ELBO summed over images,
    so every image's q(z_n) is fitted on its own, with ``n_mc`` fresh draws of (z, theta) a
    step. **Stopping rule** (per model): every ``check_every`` steps the mean local ELBO is
    evaluated on a *fixed* set of ``n_check`` draws (common random numbers, so the check is not
    fooled by Monte Carlo noise); when it has improved by less than ``tol`` nats per image since
    the previous check, the model's learning rate is multiplied by ``decay_factor``, and at its
    ``decays`` + 1-th such plateau the model stops (its q is frozen from then on). A model that
    is fitted beside others gets exactly the numbers it gets alone. ``min_steps`` forces that
    many steps before any plateau counts. ``checkpoints``: steps K after which q is kept (the
    semi-amortized refinement of Kim et al. 2018: K steps from the encoder's output).
    ``skip``: positions in ``index`` left out of the fit (learning rate 0 from the first step;
    steps 0, not converged), e.g. models whose training diverged or blew up: their local ELBO
    is NaN or huge, never meets the stopping rule, and would keep the batch at ``max_steps``."""
    theta = _check_theta(theta)
    index = list(index)
    M, n, d = len(index), x.shape[0], decoder.shapes[0][0]
    P = decoder.n_params
    dev = x.device
    model_seeds = list(model_seeds) if model_seeds is not None else [0] * M
    idx_t = _index(index, dev)
    q_theta = DiagGaussian(decoder.m.detach()[idx_t], decoder.log_s.detach()[idx_t])
    if init is None:
        params = torch.zeros(2, M, n, d, device=dev)
    else:
        params = torch.stack([init.mu.detach(), init.log_sigma.detach()]).clone().to(dev)
    params.requires_grad_(True)
    m1, v1 = torch.zeros_like(params), torch.zeros_like(params)
    beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
    lrs = torch.full((M,), float(lr), device=dev)
    train_noise = _noise(model_seeds, seed, 0, dev)
    eps_cz, eps_ct = eval_noise(model_seeds, n_check, n, d, P, theta, seed, dev, stream=2)
    checkpoints = sorted(set(int(k) for k in checkpoints))
    snapshots = {}
    zeros_t = torch.zeros(M, n_mc, P, device=dev) if theta == "mean" else None

    def q_now():
        p = params.detach()
        return DiagGaussian(p[0].clone(), p[1].clone())

    def check():
        return elbo_samples(decoder, likelihood, x, q_now(), index, eps_cz, eps_ct).mean((1, 2))

    t0 = time.perf_counter()
    last = check()
    history = [(0, lrs.tolist(), last.tolist())]
    plateaus = [0] * M
    stopped = [None] * M
    skip = sorted(set(int(i) for i in skip))
    for i in skip:
        if not 0 <= i < M:
            raise ValueError(f"skip={skip!r} is invalid: expected positions 0..{M - 1} of index")
        lrs[i] = 0.0
    skipped = set(skip)
    need = max(checkpoints, default=0)
    step = 0
    for step in range(1, max_steps + 1):
        eps_z = train_noise.normal(n_mc, n, d)
        eps_t = zeros_t if theta == "mean" else train_noise.normal(n_mc, P)
        terms = elbo_terms(x, DiagGaussian(params[0], params[1]), decoder, likelihood, n,
                           eps_z, eps_t, q_theta=q_theta)
        grad, = torch.autograd.grad((terms.expected_log_lik - terms.kl_z).sum(), params)
        with torch.no_grad():                      # Adam ascent, one learning rate per model
            m1.mul_(beta1).add_(grad, alpha=1 - beta1)
            v1.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v1 / (1 - beta2 ** step)).sqrt_().add_(adam_eps)
            params.add_(m1 / (1 - beta1 ** step) / denom * lrs.view(1, M, 1, 1))
        if step in checkpoints:
            snapshots[step] = q_now()
        if step % check_every:
            continue
        now = check()
        history.append((step, lrs.tolist(), now.tolist()))
        if step >= min_steps:
            for i in range(M):
                if stopped[i] is None and i not in skipped and float(now[i] - last[i]) < tol:
                    plateaus[i] += 1
                    if plateaus[i] > decays:
                        stopped[i] = step
                        lrs[i] = 0.0               # frozen: later steps leave it unchanged
                    else:
                        lrs[i] *= decay_factor
        last = now
        if all(s is not None or i in skipped for i, s in enumerate(stopped)) and step >= need:
            break
    seconds = time.perf_counter() - t0
    steps = [0 if i in skipped else s if s is not None else step for i, s in enumerate(stopped)]
    return LocalFit(q_now(), snapshots, steps, [s is not None for s in stopped], history, seconds)


# --------------------------------------------------------------------------- IWAE
class IWAEResult(NamedTuple):
    ks: tuple                       # the K of each row of ``bound``
    bound: torch.Tensor             # [len(ks), M, T, n] IWAE_K per theta draw and image
    bound_se: torch.Tensor          # [len(ks), M, T, n] its Monte Carlo standard error
    elbo: torch.Tensor              # [M, T, n] the ELBO estimated from the same draws (mean log w)
    elbo_se: torch.Tensor           # [M, T, n]
    k_max: int


@torch.no_grad()
def iwae(decoder, likelihood, x: torch.Tensor, q: DiagGaussian, index, ks=(1, 10, 100, 1000, 5000),
         *, model_seeds=None, theta: str = "sample", n_theta: int = 4, seed: int = 0,
         chunk_floats: int = CHUNK_FLOATS // 4) -> IWAEResult:
    """Importance-weighted bounds (Burda et al. 2016) on log p(x_n | theta) with proposal q(z_n):

        IWAE_K = E[ log 1/K sum_k p(x_n, z_k | theta) / q(z_k) ],   z_k ~ q(z_n) iid,

    non-decreasing in K, equal to the ELBO at K = 1 and tending to log p(x_n | theta).

    One pass draws K_max = max(ks) samples per image and theta draw; IWAE_K for a smaller K is
    the mean over the K_max // K disjoint blocks of K samples (same cost, lower variance).
    Its standard error: the spread over blocks when there are >= 10 of them, else the delta
    method, sqrt((mean w^2 / mean^2 w - 1) / K) per block. theta: ``n_theta`` draws from
    q(theta) (``theta="sample"``), each shared by all K samples and images, or theta = m
    (``"mean"``, one draw). Memory: the log-weights [M, K_max, images] are kept for a chunk of
    images at a time, at most ``chunk_floats`` floats. Gaussian likelihoods use
    ||x - hW - b||^2 = ||x - b||^2 - 2 h.W(x - b) + h W W^T h^T, so a sample costs the first two
    decoder layers plus one H x H product instead of an H x 784 one."""
    theta = _check_theta(theta)
    ks = tuple(sorted(set(int(k) for k in ks)))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks={ks!r} is invalid: expected positive integers")
    index = list(index)
    dev = x.device
    idx_t = _index(index, dev)
    M, n, d = q.mu.shape
    D = x.shape[-1]
    H = decoder.shapes[4][0]                                                # last hidden width
    P = decoder.n_params
    k_max = ks[-1]
    T = n_theta if theta == "sample" else 1
    model_seeds = list(model_seeds) if model_seeds is not None else [0] * M
    noise = _noise(model_seeds, seed, 3, dev)
    gaussian = getattr(likelihood, "name", "") == "gaussian"
    sigma_q, log_sigma_sum = q.log_sigma.exp(), q.log_sigma.sum(-1)          # [M, n, d], [M, n]
    nb = max(1, min(n, chunk_floats // (M * k_max)))                        # images per chunk
    kc = max(1, min(k_max, chunk_floats // (M * nb * (3 * H + (0 if gaussian else 2 * D)))))
    bound = torch.empty(len(ks), M, T, n, dtype=torch.float64, device=dev)
    bound_se = torch.empty_like(bound)
    elbo = torch.empty(M, T, n, dtype=torch.float64, device=dev)
    elbo_se = torch.empty_like(elbo)
    for t in range(T):
        eps_t = noise.normal(1, P) if theta == "sample" else None
        th = _theta(decoder, idx_t, eps_t)[:, 0]                             # [M, P]
        layers = decoder.unflatten(th)
        w3, b3 = layers[4], layers[5]                                        # [M, H, D], [M, D]
        if gaussian:
            c = x[None] - b3[:, None]                                        # [M, n, D]
            c2 = c.square().sum(-1)                                          # [M, n]
            v = torch.bmm(c, w3.transpose(1, 2))                             # [M, n, H]
            G = torch.bmm(w3, w3.transpose(1, 2))                            # [M, H, H]
        for i0 in range(0, n, nb):
            i1 = min(n, i0 + nb)
            b = i1 - i0
            lw = torch.empty(M, k_max, b, device=dev)
            for k0 in range(0, k_max, kc):
                k1 = min(k_max, k0 + kc)
                kk = k1 - k0
                eps = noise.normal(kk, b, d)                                 # [M, kk, b, d]
                z = q.mu[:, None, i0:i1] + sigma_q[:, None, i0:i1] * eps
                log_prior_ratio = (0.5 * (eps.square() - z.square()).sum(-1)
                                   + log_sigma_sum[:, None, i0:i1])         # log p(z) - log q(z)
                h = decode_hidden(layers, z.reshape(M, kk * b, d))           # [M, kk*b, H]
                if gaussian:
                    quad = (torch.bmm(h, G) * h).sum(-1).view(M, kk, b)
                    lin = (h.view(M, kk, b, H) * v[:, None, i0:i1]).sum(-1)
                    ll = likelihood.log_prob_sse(c2[:, None, i0:i1] - 2 * lin + quad, D)
                else:
                    f = torch.baddbmm(b3.unsqueeze(1), h, w3)
                    ll = likelihood.log_prob(x[i0:i1].repeat(kk, 1), f.float()).view(M, kk, b)
                lw[:, k0:k1] = ll + log_prior_ratio
            lw = lw.double()
            for j, K in enumerate(ks):
                B = k_max // K
                blocks = lw[:, : B * K].view(M, B, K, b)
                lme = torch.logsumexp(blocks, 2) - math.log(K)               # [M, B, b]
                bound[j, :, t, i0:i1] = lme.mean(1)
                if B >= 10:
                    bound_se[j, :, t, i0:i1] = lme.std(1, unbiased=True) / math.sqrt(B)
                else:
                    w = (blocks - blocks.amax(2, keepdim=True)).exp()
                    rel = (w.square().mean(2) / w.mean(2).square() - 1).clamp_min(0)  # [M, B, b]
                    bound_se[j, :, t, i0:i1] = (rel / K).mean(1).sqrt() / math.sqrt(B)
            elbo[:, t, i0:i1] = lw.mean(1)
            elbo_se[:, t, i0:i1] = lw.std(1, unbiased=True) / math.sqrt(k_max)
    return IWAEResult(ks, bound.cpu(), bound_se.cpu(), elbo.cpu(), elbo_se.cpu(), k_max)
