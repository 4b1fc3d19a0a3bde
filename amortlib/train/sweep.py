"""The one-pass sweep engine: every model of a sweep (F-VI, A-VI at each width, constant-VI,
times every seed) trained in ONE loop, one optimiser step for all of them.

    for epoch in 1..E:
        for batch B (full batch by default):
            q(z_B) <- every family          (stacked: [M, B, d])
            loss_m = -ELBO_m / N             (one number per model)
            step Adam on sum_m loss_m        (models share no parameter, so this is M Adams)
        at ~100 log-spaced epochs: neg-ELBO, train/test MSE at the posterior means

A model whose loss turns NaN or infinite is marked diverged (with its epoch) and no longer
logged; the others train on unaffected, since no operation mixes models. A model whose finite
loss runs away is marked ``blew_up`` (``amortlib.metrics.blowups``); both are left out of means.
"""
from __future__ import annotations

import math

import platform
import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from .. import data
from ..config import SweepConfig
from ..metrics import (METRIC_COLUMNS, active_units, eval_epochs, kl_per_dim, mark_blowups, mean_image_mse,
                       mse, time_to_tolerance)
from ..model import DiagGaussian
from ..objective import neg_elbo
from .fit_local import fit_local, posterior_mean_recon
from ..objective import NoiseSource
from .stack import StackedVAE


def resolve_device(device: str = "auto") -> torch.device:
    """CUDA when present (``auto``), else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' is invalid here: no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(device)


@dataclass
class SweepResult:
    cfg: SweepConfig
    metrics: pd.DataFrame            # tidy, one row per model and logged epoch
    runs: pd.DataFrame               # one row per model: final metrics, time to tolerance
    model: StackedVAE
    info: dict = field(default_factory=dict)
    test_mu: torch.Tensor | None = None   # posterior means of the test images, [M, n_test, d]
    x_test: torch.Tensor | None = None

    @torch.no_grad()
    def reconstructions(self, n: int = 8) -> dict:
        """First ``n`` test images and, per configuration (first seed), their reconstructions
        at the posterior means, as uint8 [n, 28, 28] arrays keyed by configuration label."""
        import numpy as np
        to_img = lambda t: (t.clamp(0, 1) * 255).round().to(torch.uint8).reshape(-1, 28, 28).cpu().numpy()
        out = {"original": to_img(self.x_test[:n])}
        first = self.cfg.seeds[0]
        idx = [i for i, s in enumerate(self.model.specs) if s.seed == first]
        rec = posterior_mean_recon(self.model.decoder, self.model.likelihood, self.test_mu[idx, :n], idx)
        for j, i in enumerate(idx):
            out[self.model.specs[i].label] = to_img(rec[j])
        return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _batches(n: int, batch_size: int | None, gen: torch.Generator, device):
    if batch_size is None or batch_size >= n:
        return [torch.arange(n, device=device)]
    perm = torch.randperm(n, generator=gen).to(device)
    return list(torch.split(perm, batch_size))


def train_step(model: StackedVAE, opts, x, idx, noise: NoiseSource, alive, cfg: SweepConfig):
    """One optimiser step for all models on batch ``idx``; returns (loss [M], alive [M])."""
    xb = x if len(idx) == len(x) else x[idx]
    eps_z, eps_t = noise.draw_streams(cfg.n_mc, len(idx), cfg.z_dim, model.decoder.n_params)
    with _autocast(x.device, cfg.precision):
        q = model.q_z_parts(xb, idx)
        loss = neg_elbo(xb, q, model.decoder, model.likelihood, cfg.n_obs, eps_z, eps_t,
                        noise_index=model.seed_index)
    alive = alive & torch.isfinite(loss)
    for o in opts:
        o.zero_grad(set_to_none=True)
    torch.where(alive, loss, torch.zeros_like(loss)).sum().backward()
    for o in opts:
        o.step()
    return loss.detach(), alive


def lr_scale(epoch: int, cfg: SweepConfig) -> float:
    """The factor on every learning rate in epoch ``epoch`` (1-based): a linear warm-up over
    the first ``cfg.warmup_epochs`` epochs (Adam's first steps move every weight by about its
    lr whatever its gradient, so a wide encoder on dense images can swing its outputs by many
    units per step; the warm-up keeps those steps small), then 1, or with ``lr_decay="cosine"``
    (1 + cos(pi t)) / 2 with t going from 0 after the warm-up to 1 in the last epoch: a
    constant rate leaves each parameter jittering about its optimum by about lr (with one-draw
    gradients, F-VI's per-image table at lr 0.1 hovers tens of nats per image below it); the
    decay lets every family settle."""
    w = cfg.warmup_epochs
    if w and epoch <= w:
        return epoch / w
    if cfg.lr_decay == "cosine":
        t = (epoch - w) / max(cfg.epochs - w, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    return 1.0


def warmup(opts, epoch: int, cfg: SweepConfig, base: list | None = None) -> list:
    """Set every parameter group of ``opts`` to its base rate times ``lr_scale(epoch, cfg)``.
    Returns the base rates (pass them back in later epochs); no-op for a constant schedule."""
    base = base if base is not None else [[g["lr"] for g in o.param_groups] for o in opts]
    if cfg.warmup_epochs or cfg.lr_decay != "none":
        scale = lr_scale(epoch, cfg)
        for o, lrs in zip(opts, base):
            for g, lr in zip(o.param_groups, lrs):
                g["lr"] = lr * scale
    return base


def _autocast(device, precision):
    """The context of a training step's forward pass for ``cfg.precision``:

    - ``"fp32"`` (the default; use it where exactness matters: tests, reference numbers):
      everything in float32, and a model trained inside a sweep gets the numbers it gets alone.
    - ``"bf16"`` (where the device has fast bf16: AMX Xeons, Ampere-or-later GPUs): matmuls in
      bfloat16 (AMX / tensor cores) with float32 master weights and Adam state, float32
      reductions of the ELBO (squared residuals, log-likelihood, both KLs), float32
      accumulation of the weight gradients across chunks, and the data entering the residual
      exactly (see ``decoder_sse``). About 2.4x faster per epoch than fp32 at the paper scale
      on a 2-core AMX Xeon (benchmarks/README.md); without hardware bf16 it is slower, not
      faster. Final -ELBO and MSE stay within the seed-to-seed spread of fp32
      (tests/test_precision.py).
    """
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def _train_means(model: StackedVAE, x) -> DiagGaussian:
    return model.q_z(x, torch.arange(len(x), device=x.device))


@torch.no_grad()
def _test_means(model: StackedVAE, x_test, fvi_q: DiagGaussian | None) -> torch.Tensor:
    parts = []
    for fam in model.families:
        parts.append(fvi_q.mu if fam.family == "factorized" else fam(x_test, None).mu)
    return torch.cat(parts)


def _fit_test_fvi(model, x_test, init, steps, cfg, epoch):
    sl = model.model_slice("factorized")
    if sl.stop == sl.start:
        return None
    idx = list(range(sl.start, sl.stop))
    seeds = [100_003 * model.specs[i].seed + epoch for i in idx]
    return fit_local(model.decoder, model.likelihood, x_test, idx, init=init, steps=steps,
                     lr=cfg.fit_lr, seed=seeds).q


def calibrate(cfg: SweepConfig, x: torch.Tensor, device, steps: int = 3) -> dict[str, float]:
    """Seconds per epoch of each configuration trained ALONE (first seed), after one warm-up
    step: the honest per-model cost that turns epochs into seconds inside a joint sweep."""
    out = {}
    configs = [("factorized", None), ("constant", None)] + [("amortized", w) for w in cfg.widths]
    for fam, w in configs:
        if fam not in cfg.families:
            continue
        c = cfg.replace(families=(fam,), widths=(w,) if w else (), seeds=cfg.seeds[:1], progress=False)
        model = StackedVAE(c).to(device)
        opts = model.optimizers(c.lr, c.weight_decay, c.local_lr)
        noise = NoiseSource(model.seeds, device, offset=99)
        alive = torch.ones(1, dtype=torch.bool, device=device)
        gen = torch.Generator().manual_seed(c.data_seed)
        times = []
        for i in range(steps + 1):
            _sync(device)
            t0 = time.perf_counter()
            for idx in _batches(len(x), c.batch_size, gen, device):
                train_step(model, opts, x, idx, noise, alive, c)
            _sync(device)
            times.append(time.perf_counter() - t0)
        out[model.specs[0].label] = min(times[1:])
    return out


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_sweep(cfg: SweepConfig, x_train: torch.Tensor | None = None, x_test: torch.Tensor | None = None,
              calibrate_steps: int = 3, callback=None) -> SweepResult:
    """Train every model of ``cfg`` in one vectorised loop and return tidy metrics.

    ``x_train`` / ``x_test`` default to the first n_obs / n_test images of the dataset.
    ``callback(epoch, model)`` (optional) runs after each epoch (used by tests).

    Test MSE: A-VI and constant-VI map test images through their inference function; F-VI has
    none, so its test q(z) is fitted with ``fit_local`` (decoder frozen), warm-started from the
    previous checkpoint's fit: ``fit_steps // 20`` Adam steps per checkpoint, ``fit_steps`` at
    the last epoch.
    """
    device = resolve_device(cfg.device)
    if cfg.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision='bf16' is invalid on this GPU: it has no fast bf16; use 'fp32'")
    if x_train is None:
        x_train = data.load(cfg.dataset, "train", cfg.n_obs, cfg.data_root)
    if x_test is None:
        x_test = data.load(cfg.dataset, "test", cfg.n_test, cfg.data_root)
    if len(x_train) != cfg.n_obs:
        raise ValueError(f"x_train has {len(x_train)} rows but n_obs={cfg.n_obs}")
    model = StackedVAE(cfg, x_dim=x_train.shape[1]).to(device)
    x = model.likelihood.prepare(x_train.to(device))
    xt = model.likelihood.prepare(x_test.to(device))
    sec_per_epoch = calibrate(cfg, x, device, calibrate_steps) if calibrate_steps else {}

    opts = model.optimizers(cfg.lr, cfg.weight_decay, cfg.local_lr)
    noise = NoiseSource(model.seeds, device)
    order = torch.Generator().manual_seed(cfg.data_seed)
    M = model.n_models
    alive = torch.ones(M, dtype=torch.bool, device=device)
    died_at = torch.zeros(M, dtype=torch.long, device=device)    # 0: never
    logged_dead = [False] * M
    checkpoints = set(eval_epochs(cfg.epochs, cfg.eval_points))
    fvi_test, rows = None, []
    test_steps = max(1, cfg.fit_steps // 20)   # warm-started F-VI test fit per checkpoint
    labels = [s.label for s in model.specs]

    from tqdm.auto import tqdm
    bar = tqdm(total=cfg.epochs, disable=not cfg.progress, desc=f"{cfg.dataset} {M} models",
               leave=False, mininterval=0.5)
    t_start, t_eval = time.perf_counter(), 0.0
    base_lrs = None
    for epoch in range(1, cfg.epochs + 1):
        base_lrs = warmup(opts, epoch, cfg, base_lrs)
        epoch_loss = torch.zeros(M, device=device)
        for idx in _batches(cfg.n_obs, cfg.batch_size, order, device):
            loss, alive = train_step(model, opts, x, idx, noise, alive, cfg)
            epoch_loss += loss * (len(idx) / cfg.n_obs)
        died_at = torch.where((~alive) & (died_at == 0), torch.full_like(died_at, epoch), died_at)
        if callback is not None:
            callback(epoch, model)
        bar.update(1)
        if epoch not in checkpoints:
            continue
        t0 = time.perf_counter()
        last = epoch == cfg.epochs
        fvi_test = _fit_test_fvi(model, xt, fvi_test, cfg.fit_steps if last else test_steps, cfg, epoch)
        with torch.no_grad():
            mse_tr = mse(x, posterior_mean_recon(model.decoder, model.likelihood, _train_means(model, x).mu))
            mse_te = mse(xt, posterior_mean_recon(model.decoder, model.likelihood, _test_means(model, xt, fvi_test)))
        t_eval += time.perf_counter() - t0
        sweep_wall = time.perf_counter() - t_start - t_eval
        vals = torch.stack([epoch_loss, mse_tr, mse_te]).cpu().tolist()
        dead = died_at.cpu().tolist()
        for i, spec in enumerate(model.specs):
            if logged_dead[i]:
                continue
            diverged = dead[i] > 0
            logged_dead[i] = diverged
            rows.append(dict(
                dataset=cfg.dataset, likelihood=cfg.likelihood, sigma=cfg.sigma, family=spec.family,
                width=spec.width, seed=spec.seed, config=labels[i],
                epoch=dead[i] if diverged else epoch,
                neg_elbo=float("nan") if diverged else vals[0][i],
                mse_train=float("nan") if diverged else vals[1][i],
                mse_test=float("nan") if diverged else vals[2][i],
                wall_s=(dead[i] if diverged else epoch) * sec_per_epoch.get(labels[i], float("nan")),
                sweep_wall_s=sweep_wall, diverged=diverged))
        live = [v for v, d in zip(vals[0], dead) if d == 0]
        bar.set_postfix(neg_elbo=f"{min(live):.1f}..{max(live):.1f}" if live else "all diverged")
    bar.close()
    train_s = time.perf_counter() - t_start - t_eval

    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    metrics["width"] = metrics["width"].astype("Int64")
    runs = final_runs(model, metrics, x, xt, fvi_test, cfg)
    metrics, runs = mark_blowups(metrics, runs)
    info = dict(device=str(device), device_name=_device_name(device), precision=cfg.precision,
                torch=torch.__version__, python=platform.python_version(), n_models=M,
                threads=torch.get_num_threads(),   # the last digits depend on it (float reductions)
                train_seconds=train_s, eval_seconds=t_eval, sec_per_epoch_alone=sec_per_epoch,
                mean_image_mse_train=mean_image_mse(x), mean_image_mse_test=mean_image_mse(x, xt),
                split_limits=cfg.split_limits(), finished_at=time.time())
    test_mu = _test_means(model, xt, fvi_test)
    return SweepResult(cfg, metrics, runs, model, info, test_mu=test_mu, x_test=xt)


def _device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


@torch.no_grad()
def final_runs(model, metrics, x, xt, fvi_test, cfg) -> pd.DataFrame:
    """One row per model: its last logged metrics, time to tolerance, latent usage."""
    last = metrics.sort_values("epoch").groupby("config seed".split(), sort=False).tail(1)
    tt = time_to_tolerance(metrics, cfg.tol)
    runs = last.merge(tt, on=["dataset", "likelihood", "sigma", "family", "width", "seed", "config"])
    q = _train_means(model, x)
    au = active_units(q.mu).cpu().tolist()
    kl = kl_per_dim(q.mu, q.log_sigma)
    kl_total, kl_max = kl.sum(-1).cpu().tolist(), kl.max(-1).values.cpu().tolist()
    extra = pd.DataFrame(dict(config=[s.label for s in model.specs], seed=[s.seed for s in model.specs],
                              active_units=au, kl_z=kl_total, kl_z_max_dim=kl_max))
    runs = runs.merge(extra, on=["config", "seed"]).rename(columns={"epoch": "final_epoch"})
    runs["diverged_epoch"] = runs["final_epoch"].where(runs["diverged"])
    return runs.reset_index(drop=True)
