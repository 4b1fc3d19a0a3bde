r"""Is an "optimum" an optimum? Three checks of a finished sweep, for F-VI above all.

- ``plateau``: how much the logged negative ELBO still fell over the last ``frac`` of the
  epochs (nats per image, and per 100 epochs). A run that still falls has not converged.
- ``local_gradient``: the gradient of each image's local ELBO with respect to its q(z_n)
  parameters (mu_n, log sigma_n) at the end, decoder frozen, estimated with ``n_draws`` draws
  of (z, theta) in two independent halves. With g = (g_A + g_B) / 2,

      E ||g_n||^2 = ||G_n||^2 + Var(g_n),      E ||g_A - g_B||^2 = 4 Var(g_n),

  so ``grad_rms`` = sqrt(mean_n ||g_n||^2 - mean_n ||g_A - g_B||^2 / 4) estimates the root mean
  square of the true per-image gradient G_n (``noise_rms``: the Monte Carlo part). At F-VI's
  optimum G_n = 0 for every image; for A-VI / constant-VI, G_n != 0 is what a per-image
  refinement would gain (Margossian & Blei's F-VI gradient diagnostic, without its noise).
- ``refinement_gain``: the same question in nats. With the decoder frozen, ``fit_q`` refines
  each image's q(z_n) from the model's own; the ELBO gained (common random numbers, with its
  standard error) is what the model's q leaves on the table for its decoder: for A-VI its
  amortization gap, for F-VI its optimisation shortfall in q, ~0 at an optimum.
- ``warm_start_fvi``: the referee's check. F-VI's family contains every A-VI solution (for a
  fixed decoder, the table can hold the encoder's outputs), so F-VI started from an A-VI model
  (its decoder, and its q(z_n) as the table) and trained on must end at least as good as that
  A-VI model. How far a cold-started F-VI run ends below the warm-started one measures its
  optimisation shortfall.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..model import DiagGaussian
from ..objective import elbo_terms
from ..objective import NoiseSource
from .stack import StackedVAE
from .sweep import _batches, train_step, warmup

PLATEAU_COLUMNS = ["config", "seed", "epoch_from", "epoch_to", "neg_elbo_from", "neg_elbo_to",
                   "drop", "drop_per_100_epochs", "rel_drop"]


def plateau(metrics: pd.DataFrame, frac: float = 0.125) -> pd.DataFrame:
    """Per model of a sweep's tidy ``metrics``: the drop of the logged negative ELBO from the
    last logged epoch <= (1 - frac) E to the final one (positive: still improving), per 100
    epochs, and relative to |final|. Diverged rows are left out."""
    if not 0 < frac < 1:
        raise ValueError(f"frac={frac!r} is invalid: expected a number between 0 and 1")
    rows = []
    live = metrics[~metrics["diverged"].astype(bool)] if "diverged" in metrics else metrics
    for (config, seed), g in live.groupby(["config", "seed"], sort=False):
        g = g.sort_values("epoch")
        end = g.iloc[-1]
        start_epoch = (1 - frac) * end.epoch
        before = g[g.epoch <= start_epoch]
        if before.empty:
            continue
        start = before.iloc[-1]
        drop = float(start.neg_elbo - end.neg_elbo)
        span = float(end.epoch - start.epoch)
        rows.append(dict(config=config, seed=int(seed), epoch_from=int(start.epoch),
                         epoch_to=int(end.epoch), neg_elbo_from=float(start.neg_elbo),
                         neg_elbo_to=float(end.neg_elbo), drop=drop,
                         drop_per_100_epochs=100 * drop / span if span else float("nan"),
                         rel_drop=drop / max(abs(float(end.neg_elbo)), 1e-12)))
    return pd.DataFrame(rows, columns=PLATEAU_COLUMNS)


def losses_plateau(losses, frac: float = 0.125) -> dict:
    """``plateau`` for one per-epoch loss curve (a sequence of negative ELBOs)."""
    losses = np.asarray(losses, dtype=float)
    E = len(losses)
    i = max(0, int(round((1 - frac) * E)) - 1)
    drop = float(losses[i] - losses[-1])
    return dict(epoch_from=i + 1, epoch_to=E, drop=drop,
                drop_per_100_epochs=100 * drop / max(E - 1 - i, 1),
                rel_drop=drop / max(abs(float(losses[-1])), 1e-12))


def local_gradient(model: StackedVAE, x: torch.Tensor, q: DiagGaussian | None = None, *,
                   n_draws: int = 32, block: int = 8, seed: int = 0) -> pd.DataFrame:
    """Per model: ``grad_rms`` and ``noise_rms`` (see the module docstring) of the per-image
    local-ELBO gradient w.r.t. (mu_n, log sigma_n), nats per unit of parameter, at q (default:
    each family's own q on the training images x, the first n of the sweep's) with q(theta)
    frozen; plus ``grad_rms_mu`` / ``grad_rms_log_sigma``, the two halves of it."""
    if n_draws < 2 or n_draws % 2:
        raise ValueError(f"n_draws={n_draws!r} is invalid: expected an even integer >= 2")
    dec, lik = model.decoder, model.likelihood
    n = x.shape[0]
    if q is None:
        with torch.no_grad():
            q = model.q_z(x, torch.arange(n, device=x.device))
    M, _, d = q.mu.shape
    q_theta = DiagGaussian(dec.m.detach(), dec.log_s.detach())
    noise = NoiseSource([s.seed for s in model.specs], x.device, offset=50_021 + int(seed))
    idx = torch.arange(M, device=x.device)
    halves = []
    for _ in range(2):
        g_mu = torch.zeros_like(q.mu, dtype=torch.float64)
        g_ls = torch.zeros_like(g_mu)
        done = 0
        while done < n_draws // 2:
            k = min(block, n_draws // 2 - done)
            mu = q.mu.detach().clone().requires_grad_(True)
            ls = q.log_sigma.detach().clone().requires_grad_(True)
            eps_z, eps_t = noise.draw(idx, k, n, d, dec.n_params)
            t = elbo_terms(x, DiagGaussian(mu, ls), dec, lik, n, eps_z, eps_t, q_theta=q_theta)
            a, b = torch.autograd.grad(((t.expected_log_lik - t.kl_z) * n).sum(), (mu, ls))
            g_mu += a.double() * k                   # elbo_terms averages its k draws
            g_ls += b.double() * k
            done += k
        halves.append((g_mu / done, g_ls / done))
    (mu_a, ls_a), (mu_b, ls_b) = halves
    rows = []
    for i, spec in enumerate(model.specs):
        def rms(ga, gb):
            g2 = ((ga[i] + gb[i]) / 2).square().sum(-1).mean()
            v = (ga[i] - gb[i]).square().sum(-1).mean() / 4
            return math.sqrt(max(float(g2 - v), 0.0)), math.sqrt(float(v))
        g_mu_rms, n_mu = rms(mu_a, mu_b)
        g_ls_rms, n_ls = rms(ls_a, ls_b)
        rows.append(dict(config=spec.label, seed=spec.seed,
                         grad_rms=math.hypot(g_mu_rms, g_ls_rms), noise_rms=math.hypot(n_mu, n_ls),
                         grad_rms_mu=g_mu_rms, grad_rms_log_sigma=g_ls_rms, n_draws=n_draws, n=n))
    return pd.DataFrame(rows)


def refinement_gain(model: StackedVAE, x: torch.Tensor, index=None, *, n_eval: int = 32,
                    fit_options: dict | None = None, seed: int = 0) -> pd.DataFrame:
    """Per model (positions ``index``, default all): the mean local ELBO of its own q(z_n) on the
    training images x (prepared, the first n of the sweep's), the mean after ``fit_q`` refined
    it with the decoder frozen (options ``gap.evaluate.FINAL_FIT``, updated by ``fit_options``),
    and the gain with its standard error (``mean_se`` over ``n_eval`` common draws)."""
    from ..gap import elbo_samples, eval_noise, fit_q, mean_se
    from ..gap.evaluate import FINAL_FIT
    index = list(range(model.n_models)) if index is None else list(index)
    n = x.shape[0]
    with torch.no_grad():
        q_all = model.q_z(x, torch.arange(n, device=x.device))
    sel = torch.as_tensor(index, device=x.device)
    q0 = DiagGaussian(q_all.mu[sel].detach(), q_all.log_sigma[sel].detach())
    seeds = [model.specs[i].seed for i in index]
    fit = fit_q(model.decoder, model.likelihood, x, index, q0, model_seeds=seeds, seed=seed,
                **{**FINAL_FIT, **(fit_options or {})})
    eps_z, eps_t = eval_noise(seeds, n_eval, n, q0.mu.shape[-1], model.decoder.n_params,
                              "sample", seed, x.device)
    e0 = elbo_samples(model.decoder, model.likelihood, x, q0, index, eps_z, eps_t)
    e1 = elbo_samples(model.decoder, model.likelihood, x, fit.q, index, eps_z, eps_t)
    gain, se = mean_se(e1 - e0)
    rows = []
    for j, i in enumerate(index):
        spec = model.specs[i]
        rows.append(dict(config=spec.label, seed=spec.seed, elbo_own=float(e0[j].double().mean()),
                         elbo_refined=float(e1[j].double().mean()), gain=float(gain[j]),
                         gain_se=float(se[j]), fit_steps=int(fit.steps[j]), n=n))
    return pd.DataFrame(rows)


def certificate(result, x_train: torch.Tensor | None = None, *, frac: float = 0.125,
                n_draws: int = 32, seed: int = 0) -> pd.DataFrame:
    """``plateau`` of the sweep's metrics joined with ``local_gradient`` and ``refinement_gain``
    on its training images: one row per model, the numbers an "optimum" should come with."""
    from .. import data
    cfg, model = result.cfg, result.model
    if x_train is None:
        x_train = data.load(cfg.dataset, "train", cfg.n_obs, cfg.data_root)
    x = model.likelihood.prepare(x_train.to(model.decoder.m.device))
    grads = local_gradient(model, x, n_draws=n_draws, seed=seed)
    gain = refinement_gain(model, x, seed=seed).drop(columns=["n"])
    return (plateau(result.metrics, frac).merge(grads, on=["config", "seed"], how="outer")
            .merge(gain, on=["config", "seed"], how="outer"))


# --------------------------------------------------------------------------- the referee's check
def warm_start_fvi(result, config, seed=None, *, x_train=None, epochs: int | None = None,
                   lr: float | None = None, local_lr: float | None = None, callback=None) -> dict:
    """Train F-VI jointly (decoder and table) from the A-VI model ``config`` (e.g. "A-VI k=64")
    of ``result``, seed ``seed`` (default the sweep's first): its decoder's q(theta), and its
    encoder's q(z_n) of every training image as the table. ``config`` and ``seed`` may also be
    equal-length lists: one warm-started F-VI per (config, seed) pair, trained side by side (one
    model per seed, seeds distinct). ``epochs`` / ``lr`` / ``local_lr`` default to the sweep's.
    Returns dict(model, losses, start, config, sources): ``model`` an F-VI ``StackedVAE`` (for
    ``gap.final_evaluation`` through a ``SweepResult``), ``losses`` the one-draw loss per epoch
    ([epochs] for one pair, [epochs][pairs] for lists), ``start`` the loss before the first
    step (likewise), ``sources`` the (config, seed) pairs."""
    from .. import data
    from ..gap.measure import encoder_q
    cfg, model = result.cfg, result.model
    many = isinstance(config, (list, tuple)) or isinstance(seed, (list, tuple))
    configs = list(config) if isinstance(config, (list, tuple)) else None
    seeds = ([int(s) for s in seed] if isinstance(seed, (list, tuple)) else
             [cfg.seeds[0] if seed is None else int(seed)] * (len(configs) if configs else 1))
    configs = configs if configs is not None else [config] * len(seeds)
    if len(configs) != len(seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"config={config!r}, seed={seed!r} is invalid: expected one config per "
                         f"seed, and distinct seeds")
    pos = []
    for c_, s_ in zip(configs, seeds):
        found = [i for i, s in enumerate(model.specs) if s.label == c_ and s.seed == s_]
        if not found or model.specs[found[0]].family == "factorized":
            labels = sorted({s.label for s in model.specs if s.family != "factorized"})
            raise ValueError(f"config={c_!r} with seed={s_!r} is invalid: expected one of "
                             f"{', '.join(labels)} and a seed of the sweep {list(cfg.seeds)}")
        pos.append(found[0])
    order_ = sorted(range(len(seeds)), key=lambda j: seeds[j])   # the stack orders its seeds
    seeds, configs, pos = [seeds[j] for j in order_], [configs[j] for j in order_], [pos[j] for j in order_]
    over = dict(families=("factorized",), widths=(), seeds=tuple(seeds), progress=False)
    for name, value in dict(epochs=epochs, lr=lr, local_lr=local_lr).items():
        if value is not None:
            over[name] = value
    c = cfg.replace(**over)
    dev = model.decoder.m.device
    if x_train is None:
        x_train = data.load(cfg.dataset, "train", cfg.n_obs, cfg.data_root)
    x = model.likelihood.prepare(x_train.to(dev))
    fvi = StackedVAE(c, x_dim=x.shape[1]).to(dev)
    with torch.no_grad():
        fvi.decoder.m.copy_(model.decoder.m[pos])
        fvi.decoder.log_s.copy_(model.decoder.log_s[pos])
        fvi.families[0].set_rows(encoder_q(model, x, pos))
    opts = fvi.optimizers(c.lr, c.weight_decay, c.local_lr)
    noise = NoiseSource(fvi.seeds, dev, offset=31)
    M = len(seeds)
    alive = torch.ones(M, dtype=torch.bool, device=dev)
    order = torch.Generator().manual_seed(c.data_seed)
    with torch.no_grad():
        eps_z, eps_t = noise.draw_streams(c.n_mc, len(x), c.z_dim, fvi.decoder.n_params)
        idx = torch.arange(len(x), device=dev)
        start = (-elbo_terms(x, fvi.q_z(x, idx), fvi.decoder, fvi.likelihood, c.n_obs,
                             eps_z, eps_t).elbo).tolist()
    losses, base_lrs = [], None
    for epoch in range(1, c.epochs + 1):
        base_lrs = warmup(opts, epoch, c, base_lrs)
        total = torch.zeros(M, dtype=torch.float64)
        for b in _batches(c.n_obs, c.batch_size, order, dev):
            loss, alive = train_step(fvi, opts, x, b, noise, alive, c)
            total += loss.double().cpu() * len(b) / c.n_obs
        losses.append(total.tolist() if many else float(total[0]))
        if callback is not None:
            callback(epoch, fvi)
    return dict(model=fvi, losses=losses, start=start if many else start[0], config=c,
                sources=list(zip(configs, seeds)))


AUDIT_COLUMNS = ["dataset", "likelihood", "sigma", "config", "seed", "source", "elbo_fvi", "elbo_fvi_se",
                 "elbo_source", "elbo_warm", "warm_vs_source", "warm_vs_source_se", "shortfall",
                 "shortfall_se", "refine_gain", "refine_gain_se", "fvi_still_falling",
                 "warm_still_falling", "warm_epochs", "n_images", "n_draws"]


def _train_elbo_draws(model, x, index, n_draws, seed) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-draw local ELBOs [len(index), n_draws, n] of the models ``index`` on their own
    q(z) of the training images x (the first n), and KL(q(theta)) / N [len(index)]."""
    from ..gap.evaluate import many_draw_elbos
    from ..model import kl_std_normal
    n = x.shape[0]
    with torch.no_grad():
        q = model.q_z(x, torch.arange(n, device=x.device))
        sel = torch.as_tensor(index, device=x.device)
        q = DiagGaussian(q.mu[sel], q.log_sigma[sel])
        seeds = [model.specs[i].seed for i in index]
        draws = many_draw_elbos(model.decoder, model.likelihood, x, q, index, seeds, n_draws,
                                seed=seed)
        dec = model.decoder
        kl = kl_std_normal(dec.m[sel], dec.log_s[sel]).double().cpu() / model.cfg.n_obs
    return draws.double().cpu(), kl


@torch.no_grad()
def fvi_audit(result, *, x_train=None, n_images: int = 200, n_draws: int = 100,
              epochs: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The referee's checks of a sweep's F-VI, one row per seed whose F-VI and at least one
    A-VI model are live (not diverged, not blown up); columns ``AUDIT_COLUMNS``, nats per image
    (``config`` is "F-VI", the audited model). Cost: the sweep's F-VI training once more (one
    model per seed), a frozen-decoder fit of q(z) on ``n_images``, 3 x ``n_draws`` decoder passes.

    - ``source``: that seed's best A-VI model (lowest final negative ELBO among the live widths).
    - ``elbo_fvi`` / ``elbo_source`` / ``elbo_warm``: the train ELBO per image (the mean local
      ELBO of the first ``n_images`` training images by ``n_draws`` draws of (z, theta), minus
      KL(q(theta)) / N) of F-VI as trained, of the source, and of F-VI warm-started from the
      source (``warm_start_fvi``) and trained ``epochs`` more epochs (default the sweep's) with
      the sweep's optimiser. Common random numbers within a seed.
    - ``warm_vs_source`` = elbo_warm - elbo_source: for a fixed decoder F-VI's family holds
      every A-VI solution, so this should not be negative beyond its standard error.
    - ``shortfall`` = elbo_warm - elbo_fvi: how far the F-VI run ends below a point its own
      family reaches (from a better start, after the source's own epochs): positive means the
      run is not at its family's best; an existence proof, not the distance to the optimum.
    - ``refine_gain``: what ``refinement_gain`` still finds for F-VI's q(z_n) with its decoder
      frozen (~0 at an optimum in q).
    - ``fvi_still_falling`` / ``warm_still_falling``: the drop of the one-draw loss per 100
      epochs over the last eighth of training (``plateau``): ~0 on a plateau."""
    from .. import data
    cfg, model, runs = result.cfg, result.model, result.runs
    if "factorized" not in cfg.families or "amortized" not in cfg.families:
        raise ValueError("fvi_audit needs a sweep with both F-VI and A-VI models")
    if x_train is None:
        x_train = data.load(cfg.dataset, "train", cfg.n_obs, cfg.data_root)
    dev = model.decoder.m.device
    dead = runs["diverged"].astype(bool)
    if "blew_up" in runs:
        dead = dead | runs["blew_up"].astype(bool)
    live = runs[~dead]
    pairs = []
    for s in cfg.seeds:
        here = live[live["seed"] == s]
        avi = here[here["family"] == "amortized"]
        if (here["family"] == "factorized").any() and not avi.empty:
            pairs.append((avi.sort_values("neg_elbo")["config"].iloc[0], int(s)))
    if not pairs:
        return pd.DataFrame(columns=AUDIT_COLUMNS)
    with torch.enable_grad():
        warm = warm_start_fvi(result, [c for c, _ in pairs], [s for _, s in pairs],
                              x_train=x_train, epochs=epochs)
    n = min(int(n_images), cfg.n_obs)
    x = model.likelihood.prepare(x_train[:n].to(dev))
    pos = {(sp.label, sp.seed): i for i, sp in enumerate(model.specs)}
    fvi_idx = [pos[("F-VI", s)] for _, s in warm["sources"]]
    src_idx = [pos[(c, s)] for c, s in warm["sources"]]
    d_fvi, kl_fvi = _train_elbo_draws(model, x, fvi_idx, n_draws, seed)
    d_src, kl_src = _train_elbo_draws(model, x, src_idx, n_draws, seed)
    d_warm, kl_warm = _train_elbo_draws(warm["model"], x, list(range(len(fvi_idx))), n_draws, seed)
    from ..gap import mean_se
    e_fvi, se_fvi = mean_se(d_fvi)
    e_src, _ = mean_se(d_src)
    e_warm, _ = mean_se(d_warm)
    g_ws, se_ws = mean_se(d_warm - d_src)
    g_sh, se_sh = mean_se(d_warm - d_fvi)
    with torch.enable_grad():
        gain = refinement_gain(model, x, fvi_idx, seed=seed)
    fall = plateau(result.metrics).set_index(["config", "seed"])["drop_per_100_epochs"]
    rows = []
    for j, (src, s) in enumerate(warm["sources"]):
        w_losses = [l[j] for l in warm["losses"]]
        rows.append(dict(
            dataset=cfg.dataset, likelihood=cfg.likelihood, sigma=cfg.sigma, config="F-VI", seed=s, source=src,
            elbo_fvi=float(e_fvi[j] - kl_fvi[j]), elbo_fvi_se=float(se_fvi[j]),
            elbo_source=float(e_src[j] - kl_src[j]), elbo_warm=float(e_warm[j] - kl_warm[j]),
            warm_vs_source=float(g_ws[j] - kl_warm[j] + kl_src[j]), warm_vs_source_se=float(se_ws[j]),
            shortfall=float(g_sh[j] - kl_warm[j] + kl_fvi[j]), shortfall_se=float(se_sh[j]),
            refine_gain=float(gain["gain"].iloc[j]), refine_gain_se=float(gain["gain_se"].iloc[j]),
            fvi_still_falling=float(fall.get(("F-VI", s), float("nan"))),
            warm_still_falling=losses_plateau(w_losses)["drop_per_100_epochs"],
            warm_epochs=warm["config"].epochs, n_images=n, n_draws=int(n_draws)))
    return pd.DataFrame(rows, columns=AUDIT_COLUMNS)
