r"""Fitting code shared by the three theory examples: F-VI, A-VI and constant-VI, one API.

Every model (``NormalNormal``, ``Nonlinear``, ``Saw``) has a closed-form ELBO
``elbo_sum(data, mu, log_sigma, glob)`` for a mean-field Gaussian q(z_n) = N(mu_n, omega_n^2)
(and, for the normal-normal model, q(theta) = N(m, s^2), glob = (m, log s)). The three families
differ only in how (mu_n, log omega_n) are produced:

- ``factorized`` (F-VI): a free pair per n;
- ``amortized`` (A-VI): (mu_n, log omega_n) = g(u_n), where u_n is x_n (``inputs="x"``) or the
  pair (x_n, x_{n+1}) (``inputs="x,x_next"``), standardised with the training mean and sd, and g
  is affine (``width=None``) or a one-hidden-layer tanh MLP of width k (``width=k``);
- ``constant``: one pair shared by all n.

All families start at the prior, q(z_n) = N(0, 1) (the MLP's output layer starts at zero), and
q(theta) starts at N(0, 1). Optimisation is full-batch and deterministic (float64, no Monte Carlo):
``steps`` Adam steps with a cosine-decayed learning rate (the recorded ELBO curve), then, for each
fitted model on its own, an L-BFGS polish (``POLISH_ITERS`` iterations for F-VI, constant-VI
and the affine encoder, whose objectives are concave in the normal-normal and saw models;
``POLISH_ITERS_MLP`` for an MLP encoder, whose objective is not, so that its final ELBO is a
good local optimum, not a certified global one).

The amortization gap of a fit is ``ELBO(F-VI optimum) - ELBO(fit)``, in nats per datapoint
(per local latent z_n); it is >= 0 up to optimisation error.

Several encoders (widths x restarts) can be trained as one stack: their parameters are
independent and Adam is coordinate-wise, so a stacked fit equals separate fits (up to floating
point summation order) at a fraction of the cost on a CPU.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from ..plots.format import sig3
from .nonlinear import Nonlinear
from .normal_normal import NormalNormal
from .saw import Saw
from .scalar import DTYPE

MODELS = {"normal_normal": NormalNormal, "nonlinear": Nonlinear, "saw": Saw}
FAMILIES = ("factorized", "amortized", "constant")
INPUTS = ("x", "x,x_next")
LABELS = {"factorized": "F-VI", "constant": "constant-VI"}
POLISH_ITERS = 1000        # L-BFGS iterations for F-VI, constant-VI, affine encoders
POLISH_ITERS_MLP = 300     # ... and for each MLP encoder

#: Defaults per model: data size, Adam steps and learning rate (tuned to run in about a second).
DEFAULTS = {
    "normal_normal": dict(n=100, steps=500, lr=0.05),
    "nonlinear": dict(n=256, steps=500, lr=0.03),
    "saw": dict(n=256, steps=500, lr=0.03),
}


def get_model(model) -> NormalNormal | Nonlinear | Saw:
    """A model instance from its name (``"normal_normal"``, ``"nonlinear"``, ``"saw"``)."""
    if isinstance(model, str):
        if model not in MODELS:
            raise ValueError(f"model={model!r} is invalid: expected one of {sorted(MODELS)}")
        return MODELS[model]()
    return model


def family_label(family: str, width: int | None) -> str:
    if family == "amortized":
        return "A-VI affine" if width is None else f"A-VI k={width}"
    return LABELS[family]


# --------------------------------------------------------------------------------- encoders
class EncoderStack(nn.Module):
    """M independent encoders u -> (mu, log omega) that share their input u.

    Encoder i is affine if ``widths[i] is None``, else a one-hidden-layer tanh MLP of width
    ``widths[i]``. The hidden units of all MLPs sit side by side in one hidden layer of
    H = sum of widths units, and a block mask on the output weights lets encoder i read only its
    own block, so each encoder is exactly its own size and independent of the others (one
    [N, d] x [d, H] and one [N, H] x [H, 2M] product per step, no padding). Initialisation:
    hidden weights and biases ~ N(0, INIT_SCALE^2), drawn from a generator fixed by
    (seed, width, restart), so an encoder starts the same in any stack; the output layer and the
    affine map start at zero, so every encoder starts at q(z_n) = N(0, 1)."""

    INIT_SCALE = 3.0   # steep enough for the tanh units to resolve the wiggles of the examples

    def __init__(self, widths: Sequence[int | None], d_in: int, seed: int, restarts: int = 1):
        super().__init__()
        self.specs = [(w, r) for w in widths for r in range(restarts)]
        m = len(self.specs)
        blocks, start = [], 0
        for w, _ in self.specs:
            k = 0 if w is None else int(w)
            blocks.append((start, start + k))
            start += k
        h = max(start, 1)
        w1 = torch.zeros(d_in, h, dtype=DTYPE)
        b1 = torch.zeros(h, dtype=DTYPE)
        mask = torch.zeros(h, m, dtype=DTYPE)
        affine = torch.zeros(m, dtype=DTYPE)
        for i, ((w, r), (lo, hi)) in enumerate(zip(self.specs, blocks)):
            if w is None:
                affine[i] = 1.0
                continue
            g = torch.Generator().manual_seed(7919 * (int(seed) + 1) + 104729 * r + int(w))
            w1[:, lo:hi] = self.INIT_SCALE * torch.randn(d_in, w, generator=g, dtype=DTYPE)
            b1[lo:hi] = self.INIT_SCALE * torch.randn(w, generator=g, dtype=DTYPE)
            mask[lo:hi, i] = 1.0
        self.blocks = blocks
        self.w1, self.b1 = nn.Parameter(w1), nn.Parameter(b1)
        self.w2 = nn.Parameter(torch.zeros(h, m, 2, dtype=DTYPE))
        self.b2 = nn.Parameter(torch.zeros(m, 2, dtype=DTYPE))
        self.lin = nn.Parameter(torch.zeros(d_in, m, 2, dtype=DTYPE))
        self.register_buffer("mask", mask)
        self.register_buffer("affine", affine)

    def take(self, i: int) -> "EncoderStack":
        """A copy of encoder i alone (a stack of one)."""
        one = EncoderStack.__new__(EncoderStack)
        nn.Module.__init__(one)
        lo, hi = self.blocks[i]
        if hi == lo:               # affine: keep one (masked) hidden unit
            hi = lo + 1 if lo < self.w1.shape[1] else lo
            lo = hi - 1
        one.specs, one.blocks = [self.specs[i]], [(0, hi - lo)]
        with torch.no_grad():
            one.w1 = nn.Parameter(self.w1[:, lo:hi].clone())
            one.b1 = nn.Parameter(self.b1[lo:hi].clone())
            one.w2 = nn.Parameter(self.w2[lo:hi, i:i + 1].clone())
            one.b2 = nn.Parameter(self.b2[i:i + 1].clone())
            one.lin = nn.Parameter(self.lin[:, i:i + 1].clone())
            one.register_buffer("mask", self.mask[lo:hi, i:i + 1].clone())
            one.register_buffer("affine", self.affine[i:i + 1].clone())
        return one

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u: standardised inputs [N, d] -> mu, log_sigma, each [M, N]."""
        h = torch.tanh(u @ self.w1 + self.b1)                                  # [N, H]
        out = torch.einsum("nh,hmc->mnc", h, self.w2 * self.mask[:, :, None])
        out = out + torch.einsum("nd,dmc->mnc", u, self.lin * self.affine[:, None])
        out = out + self.b2[:, None]
        return out[..., 0], out[..., 1]


class _Family(nn.Module):
    """M stacked instances of one family for one model and data set."""

    def __init__(self, model, data, family: str, widths=(None,), inputs: str = "x",
                 seed: int = 0, restarts: int = 1):
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"family={family!r} is invalid: expected one of {FAMILIES}")
        self.family, self.inputs = family, inputs
        n = model.n_local(data)
        if family == "amortized":
            raw = model.inputs(data, inputs)
            self.register_buffer("u_mean", raw.mean(0))
            self.register_buffer("u_sd", raw.std(0))
            self.register_buffer("u", (raw - self.u_mean) / self.u_sd)
            self.enc = EncoderStack(widths, raw.shape[1], seed, restarts)
            self.specs = self.enc.specs
        elif family == "factorized":
            self.specs = [(None, 0)]
            self.local = nn.Parameter(torch.zeros(1, n, 2, dtype=DTYPE))
        else:
            self.specs = [(None, 0)]
            self.local = nn.Parameter(torch.zeros(1, 1, 2, dtype=DTYPE))
        m = len(self.specs)
        self.glob = nn.Parameter(torch.zeros(m, 2, dtype=DTYPE)) if model.has_global else None

    def q(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.family == "amortized":
            return self.enc(self.u)
        return self.local[..., 0], self.local[..., 1]

    def split(self) -> list["_Family"]:
        """One single-model ``_Family`` per stacked model (copies of the parameters)."""
        if len(self.specs) == 1:
            return [self]
        out = []
        for i, spec in enumerate(self.specs):
            one = _Family.__new__(_Family)
            nn.Module.__init__(one)
            one.family, one.inputs, one.specs = self.family, self.inputs, [spec]
            for name in ("u_mean", "u_sd", "u"):
                one.register_buffer(name, getattr(self, name))
            one.enc = self.enc.take(i)
            one.glob = (None if self.glob is None
                        else nn.Parameter(self.glob[i:i + 1].detach().clone()))
            out.append(one)
        return out

    def encode(self, raw: torch.Tensor, i: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply encoder i to new raw inputs [N', d] (A-VI only): the inference function."""
        mu, ls = self.enc((raw - self.u_mean) / self.u_sd)
        return mu[i], ls[i]


# --------------------------------------------------------------------------------- results
@dataclass
class FitResult:
    """One fitted variational family. ELBOs are in nats per datapoint (per local latent z_n)."""

    model: str
    family: str
    width: int | None
    inputs: str
    n: int
    seed: int
    elbo: float                      # final ELBO (after the polish, if any)
    curve: np.ndarray                # ELBO after each Adam step; curve[0] is the starting point
    mu: np.ndarray                   # [N] means of q(z_n)
    log_sigma: np.ndarray            # [N] log sds of q(z_n)
    glob: np.ndarray | None          # (m, log s) of q(theta), normal-normal only
    seconds: float
    restart: int = 0
    encoder: object = field(default=None, repr=False)   # callable raw inputs -> (mu, log_sigma)

    @property
    def label(self) -> str:
        return family_label(self.family, self.width)


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread inside the block (restored after). These problems are tiny:
    a second thread only adds synchronisation, and on a busy 2-core machine OpenMP's waiting
    threads can make each op tens of times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _lr_at(step: int, steps: int, lr: float) -> float:
    return lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * step / max(steps, 1))))


def _objective(model, data, fam: _Family) -> torch.Tensor:
    """ELBO per datapoint, [M]."""
    mu, ls = fam.q()
    return model.elbo_sum(data, mu, ls, fam.glob) / model.n_local(data)


def _lbfgs(model, data, fam: _Family, max_iter: int) -> None:
    params = [p for p in fam.parameters() if p.requires_grad]
    lbfgs = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, max_eval=2 * max_iter,
                              history_size=50, tolerance_grad=1e-11, tolerance_change=1e-15,
                              line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad(set_to_none=True)
        loss = -_objective(model, data, fam).sum()
        loss.backward()
        return loss

    lbfgs.step(closure)


def _train(model, data, fam: _Family, steps: int, lr: float, polish: int) -> tuple[np.ndarray, list]:
    """Adam on the whole stack (recording the ELBO curve), then an optional L-BFGS polish of
    each stacked model on its own (so a model's result does not depend on its stack-mates)."""
    params = [p for p in fam.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    curve = np.empty((steps + 1, len(fam.specs)))
    for step in range(steps + 1):
        elbo = _objective(model, data, fam)
        curve[step] = elbo.detach().numpy()
        if step == steps:
            break
        for gr in opt.param_groups:
            gr["lr"] = _lr_at(step, steps, lr)
        opt.zero_grad(set_to_none=True)
        (-elbo.sum()).backward()
        opt.step()
    singles = fam.split()
    if polish:
        for one in singles:
            _lbfgs(model, data, one, polish)
    return curve, singles


def _results(model, data, singles, curve, n, seed, seconds) -> list[FitResult]:
    out = []
    nl = model.n_local(data)
    for i, one in enumerate(singles):
        (w, r), = one.specs
        with torch.no_grad():
            final = float(_objective(model, data, one)[0])
            mu, ls = (t.detach()[0].expand(nl) for t in one.q())
        enc = None
        if one.family == "amortized":
            enc = (lambda raw, _one=one: tuple(t.detach() for t in _one.encode(raw, 0)))
        out.append(FitResult(
            model=model.name, family=one.family, width=w, inputs=one.inputs, n=n, seed=seed,
            elbo=final, curve=curve[:, i].copy(), mu=mu.numpy().copy(),
            log_sigma=ls.numpy().copy(),
            glob=None if one.glob is None else one.glob[0].detach().numpy().copy(),
            seconds=seconds, restart=r, encoder=enc))
    return out


def simulate(model, n: int | None = None, seed: int = 0) -> dict:
    """The data set of a (model, n, seed); the same everywhere in the book."""
    model = get_model(model)
    n = DEFAULTS[model.name]["n"] if n is None else int(n)
    return model.simulate(n, seed)


def fit(model, family: str, width: int | None = None, inputs: str = "x", n: int | None = None,
        seed: int = 0, steps: int | None = None, lr: float | None = None,
        polish: bool | None = None, data: dict | None = None) -> FitResult:
    """Fit one variational family by maximising the closed-form ELBO.

    model: a name in ``MODELS`` or an instance; family: ``"factorized"``, ``"amortized"`` or
    ``"constant"``; width: A-VI encoder width (``None`` = affine); inputs: A-VI input domain,
    ``"x"`` or ``"x,x_next"``; n, seed: the simulated data set (ignored if ``data`` is given;
    seed also fixes the encoder initialisation); steps, lr: Adam; polish: L-BFGS after Adam
    (default: on for every family but MLP encoders)."""
    return fit_many(model, family, [width], inputs, n, seed, steps, lr, polish, data)[0]


def fit_many(model, family: str, widths: Sequence[int | None] = (None,), inputs: str = "x",
             n: int | None = None, seed: int = 0, steps: int | None = None,
             lr: float | None = None, polish: bool | None = None, data: dict | None = None,
             restarts: int = 1) -> list[FitResult]:
    """Like ``fit``, for several A-VI widths (x ``restarts`` initialisations) trained as one stack.
    Returns one ``FitResult`` per (width, restart), in that order."""
    model = get_model(model)
    if inputs not in INPUTS:
        raise ValueError(f"inputs={inputs!r} is invalid: expected one of {INPUTS}")
    d = DEFAULTS[model.name]
    n = d["n"] if n is None else int(n)
    steps = d["steps"] if steps is None else int(steps)
    lr = d["lr"] if lr is None else float(lr)
    data = model.simulate(n, seed) if data is None else data
    n = model.n_local(data)
    widths = list(widths) if family == "amortized" else [None]
    if polish is None:
        polish = True
    t0 = time.perf_counter()
    mlp = family == "amortized" and any(w is not None for w in widths)
    polish = (POLISH_ITERS_MLP if mlp else POLISH_ITERS) if polish is True else int(polish)
    with single_thread():
        fam = _Family(model, data, family, widths, inputs, seed, restarts)
        curve, singles = _train(model, data, fam, steps, lr, polish)
        out = _results(model, data, singles, curve, n, seed, time.perf_counter() - t0)
    return out


def best_of(results: Sequence[FitResult]) -> list[FitResult]:
    """Keep, for each width, the restart with the highest final ELBO (order of first appearance)."""
    best: dict = {}
    for r in results:
        if r.width not in best or r.elbo > best[r.width].elbo:
            best[r.width] = r
    return list(best.values())


def compare(model, width: int | None = None, inputs: str = "x", n: int | None = None,
            seed: int = 0, steps: int | None = None, lr: float | None = None) -> dict:
    """F-VI, A-VI (one width and input domain) and constant-VI on the same data, same steps.

    Returns a dict with the three ``FitResult`` s under ``"factorized"``, ``"amortized"``,
    ``"constant"``, the amortization gaps ``gap_amortized``, ``gap_constant`` (nats per
    datapoint, relative to the F-VI fit), the exact ``log_evidence`` per datapoint and the data."""
    model = get_model(model)
    n = DEFAULTS[model.name]["n"] if n is None else int(n)
    data = model.simulate(n, seed)
    kw = dict(n=n, seed=seed, steps=steps, lr=lr, data=data)
    res = {f: fit(model, f, width=width if f == "amortized" else None, inputs=inputs, **kw)
           for f in FAMILIES}
    ref = res["factorized"].elbo
    res["gap_amortized"] = ref - res["amortized"].elbo
    res["gap_constant"] = ref - res["constant"].elbo
    res["log_evidence"] = model.log_evidence(data) / model.n_local(data)
    res["data"] = data
    res["model"] = model
    return res


def width_sweep(model, widths: Sequence[int | None], inputs: str = "x", n: int | None = None,
                seed: int = 0, steps: int | None = None, lr: float | None = None,
                restarts: int = 1, data: dict | None = None) -> dict:
    """Amortization gap against encoder width, for one input domain.

    Fits F-VI and constant-VI once, and all widths as one stack of A-VI encoders (best of
    ``restarts`` initialisations per width). Returns ``{"factorized", "constant", "amortized":
    [FitResult per width], "gaps": {width: gap}, "gap_constant", "log_evidence", "data"}``."""
    model = get_model(model)
    n = DEFAULTS[model.name]["n"] if n is None else int(n)
    data = model.simulate(n, seed) if data is None else data
    kw = dict(seed=seed, steps=steps, lr=lr, data=data)
    fvi = fit(model, "factorized", **kw)
    const = fit(model, "constant", **kw)
    avi = best_of(fit_many(model, "amortized", widths, inputs, restarts=restarts, **kw))
    return {
        "factorized": fvi, "constant": const, "amortized": avi,
        "gaps": {r.width: fvi.elbo - r.elbo for r in avi},
        "gap_constant": fvi.elbo - const.elbo,
        "log_evidence": model.log_evidence(data) / model.n_local(data),
        "data": data, "model": model,
    }


def evaluate(result: FitResult, data: dict, model=None) -> float:
    """ELBO per datapoint of a fitted A-VI encoder applied, unchanged, to another data set
    (for the normal-normal model with the fitted q(theta) kept): how the inference function
    generalises to new x (the amortization interpolation problem)."""
    if result.encoder is None:
        raise ValueError("evaluate needs an A-VI fit (family='amortized')")
    model = get_model(result.model if model is None else model)
    with torch.no_grad():
        mu, ls = result.encoder(model.inputs(data, result.inputs))
        glob = None if result.glob is None else torch.as_tensor(result.glob, dtype=DTYPE)[None]
        return float(model.elbo_sum(data, mu[None], ls[None], glob)[0]) / model.n_local(data)


def heldout_gaps(results: Sequence[FitResult], n: int | None = None, seed: int = 1000,
                 model=None) -> dict:
    """Amortization gaps of fitted encoders on a fresh data set (same model, ``seed``):
    F-VI is re-fitted on the new data, the encoders are not. Models without a global latent
    only (with one, F-VI would also re-fit q(theta) and the comparison would mix two things)."""
    model = get_model(results[0].model if model is None else model)
    if model.has_global:
        raise ValueError(f"heldout_gaps needs a model without a global latent, not {model.name}")
    data = model.simulate(results[0].n if n is None else int(n), seed)
    ref = fit(model, "factorized", data=data, seed=seed).elbo
    return {r.width: ref - evaluate(r, data, model) for r in results}


def format_table(rows: Sequence[dict], floor: float = 1e-6) -> str:
    """A plain-text table of dicts (same keys), numbers to 3 significant figures."""
    if not rows:
        return ""
    keys = list(rows[0])
    cells = [[k for k in keys]] + [[sig3(r[k], floor) if not isinstance(r[k], str) else r[k]
                                     for k in keys] for r in rows]
    widths = [max(len(c[j]) for c in cells) for j in range(len(keys))]
    lines = ["  ".join(c[j].rjust(widths[j]) if j else c[j].ljust(widths[j])
                       for j in range(len(keys))) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def as_compare(sweep: dict, width: int | None) -> dict:
    """The ``compare``-style dict (F-VI, one A-VI width, constant-VI) from a ``width_sweep``,
    without re-fitting anything."""
    avi = {r.width: r for r in sweep["amortized"]}[width]
    return {
        "factorized": sweep["factorized"], "amortized": avi, "constant": sweep["constant"],
        "gap_amortized": sweep["gaps"][width], "gap_constant": sweep["gap_constant"],
        "log_evidence": sweep["log_evidence"], "data": sweep["data"], "model": sweep["model"],
    }
