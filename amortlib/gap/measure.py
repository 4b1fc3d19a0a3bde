"""The gap measurements of a trained sweep (a ``SweepResult``), as tidy DataFrames.

- ``measure_gap``: per-datapoint amortization gaps of the A-VI and constant-VI models on train
  or test images, and the semi-amortized refinement curve on the way (``GapMeasurement``).
- ``gap_table``: the per-model gap table of both splits, cheap enough for every sweep unit.
- ``decompose``: log p(x) by IWAE_K, and the inference gap split into approximation and
  amortization gaps (Cremer et al. 2018, Table 2).
- ``inference_cost``: the amortization dividend: seconds to infer q(z) for 1,000 new images by
  one encoder pass, by K refinement steps, and by F-VI to the same tolerance.
- ``summarise``: a per-model table pooled over seeds (one row per configuration and split).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from .. import data
from ..model import DiagGaussian
from .core import (GAP_COLUMNS, GAP_EXTRA_COLUMNS, GAP_FAMILIES, REFINE_STEPS, SPLITS, Z95,
                   LocalFit, _check_theta, elbo_samples, eval_noise, fit_q, iwae, mean_se,
                   per_image_se)

KEY_COLUMNS = ["dataset", "likelihood", "sigma", "config", "family", "width", "seed"]


# --------------------------------------------------------------------------- inputs
def gap_models(model, families=GAP_FAMILIES, widths=None, seeds=None) -> list[int]:
    """Positions (along the model axis of a ``StackedVAE``) of the models that have an
    inference function: A-VI at every width and constant-VI, optionally filtered."""
    out = []
    for i, s in enumerate(model.specs):
        if s.family not in families:
            continue
        if widths is not None and s.family == "amortized" and s.width not in widths:
            continue
        if seeds is not None and s.seed not in seeds:
            continue
        out.append(i)
    return out


def split_images(result, split: str, n_images: int, x_train: torch.Tensor | None = None) -> torch.Tensor:
    """The first ``n_images`` images of a split, prepared for the likelihood, on the model's
    device. Train images are the sweep's own training images (loaded again from the dataset,
    or ``x_train`` when the sweep was given its own); test images are ``result.x_test``."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is invalid: expected 'train' or 'test'")
    cfg, model = result.cfg, result.model
    if split == "test":
        x = result.x_test
    else:
        x = x_train if x_train is not None else data.load(cfg.dataset, "train", cfg.n_obs, cfg.data_root)
    if n_images is None:
        n_images = len(x)
    if isinstance(n_images, bool) or not isinstance(n_images, int) or not 1 <= n_images <= len(x):
        raise ValueError(f"n_images={n_images!r} is invalid: expected an integer between 1 and "
                         f"{len(x)} (the {split} images of this sweep)")
    device = model.decoder.m.device
    return model.likelihood.prepare(x[:n_images].to(device))


@torch.no_grad()
def encoder_q(model, x: torch.Tensor, index) -> DiagGaussian:
    """q(z) given by the inference functions of the models ``index`` (A-VI or constant-VI):
    mu, log_sigma [M, n, d]."""
    mus, sigmas = {}, {}
    for fam in model.families:
        if fam.family not in GAP_FAMILIES:
            continue
        sl = model.model_slice(fam.family)
        q = fam(x, None)
        for j, pos in enumerate(range(sl.start, sl.stop)):
            mus[pos], sigmas[pos] = q.mu[j], q.log_sigma[j]
    bad = [i for i in index if i not in mus]
    if bad:
        raise ValueError(f"models {bad} have no inference function (only A-VI and constant-VI do)")
    return DiagGaussian(torch.stack([mus[i] for i in index]), torch.stack([sigmas[i] for i in index]))


@torch.no_grad()
def single_encoder(model, pos: int, x: torch.Tensor) -> DiagGaussian:
    """The inference function of ONE model on x [n, D] -> mu, log_sigma [n, d], computed with
    that model's weights only (for timing a model alone; equal to its slice of the stack)."""
    return model.encode_one(pos, x)


def _keys(result, spec) -> dict:
    cfg = result.cfg
    return dict(dataset=cfg.dataset, likelihood=cfg.likelihood, sigma=cfg.sigma, config=spec.label,
                family=spec.family, width=spec.width, seed=spec.seed)


def _interval(est, se) -> tuple[np.ndarray, np.ndarray]:
    return est - Z95 * se, est + Z95 * se


# --------------------------------------------------------------------------- the gap
@dataclass
class GapMeasurement:
    """Per-datapoint amortization gaps of several models on the images of one split.

    ``elbo_enc``, ``elbo_star`` and each ``refined[K]`` are single-draw local ELBOs
    [M, S, n] on the SAME evaluation noise (common random numbers), drawn independently of
    the noise the fit used, so the gap estimate is unbiased for the q* the fit found."""

    result: object = field(repr=False)
    index: list
    split: str
    x: torch.Tensor = field(repr=False)
    q_enc: DiagGaussian = field(repr=False)
    fit: LocalFit = field(repr=False)
    elbo_enc: torch.Tensor = field(repr=False)
    elbo_star: torch.Tensor = field(repr=False)
    refined: dict = field(repr=False)
    settings: dict
    skipped: tuple = ()         # positions in ``index`` whose training diverged or blew up: not fitted

    @property
    def specs(self) -> list:
        return [self.result.model.specs[i] for i in self.index]

    @property
    def q_star(self) -> DiagGaussian:
        return self.fit.q

    @property
    def gap_samples(self) -> torch.Tensor:
        """[M, S, n] single-draw gaps with common random numbers."""
        return self.elbo_star - self.elbo_enc

    def per_image(self) -> pd.DataFrame:
        """One row per model and image: gap (nats) and its Monte Carlo standard error."""
        g = self.gap_samples
        est, se = g.double().mean(1).cpu().numpy(), per_image_se(g).cpu().numpy()
        rows = []
        for i, spec in enumerate(self.specs):
            rows.append(pd.DataFrame(dict(**_keys(self.result, spec), split=self.split,
                                          image=np.arange(est.shape[1]), gap=est[i], gap_se=se[i])))
        return _typed(pd.concat(rows, ignore_index=True))

    def table(self) -> pd.DataFrame:
        """One row per model: the columns of ``GAP_COLUMNS`` then ``GAP_EXTRA_COLUMNS``."""
        g = self.gap_samples
        est, se = mean_se(g)
        lo, hi = _interval(est, se)
        per_n = g.double().mean(1)
        mc = per_image_se(g)
        e_enc, _ = mean_se(self.elbo_enc)
        e_star, _ = mean_se(self.elbo_star)
        rows = []
        nan = float("nan")
        for i, spec in enumerate(self.specs):
            if i in self.skipped:       # a dead model's row: no measurement
                rows.append(dict(**_keys(self.result, spec), split=self.split, gap_mean=nan, gap_se=nan,
                                 gap_lo=nan, gap_hi=nan, n=int(g.shape[2]), gap_sd=nan, mc_se=nan,
                                 elbo_amortized=nan, elbo_fvi=nan, fit_steps=0, converged=False,
                                 theta=self.settings["theta"], n_eval=int(g.shape[1])))
                continue
            rows.append(dict(**_keys(self.result, spec), split=self.split,
                             gap_mean=float(est[i]), gap_se=float(se[i]), gap_lo=float(lo[i]),
                             gap_hi=float(hi[i]), n=int(g.shape[2]),
                             gap_sd=float(per_n[i].std()), mc_se=float(mc[i].square().mean().sqrt()),
                             elbo_amortized=float(e_enc[i]), elbo_fvi=float(e_star[i]),
                             fit_steps=int(self.fit.steps[i]), converged=bool(self.fit.converged[i]),
                             theta=self.settings["theta"], n_eval=int(g.shape[1])))
        return _typed(pd.DataFrame(rows, columns=GAP_COLUMNS + GAP_EXTRA_COLUMNS))

    def refinement(self) -> pd.DataFrame:
        """The semi-amortized curve: per model and number of steps K (0 = the encoder), the
        gap left after K steps, ELBO* - ELBO(q_K) (``gap_mean``, ``gap_se``, 95% interval), and
        the ELBO gained, ELBO(q_K) - ELBO(q_enc) (``gain_mean``, ``gain_se``)."""
        rows = []
        for K in [0] + sorted(self.refined):
            e = self.elbo_enc if K == 0 else self.refined[K]
            left, left_se = mean_se(self.elbo_star - e)
            gain, gain_se = mean_se(e - self.elbo_enc)
            lo, hi = _interval(left, left_se)
            for i, spec in enumerate(self.specs):
                rows.append(dict(**_keys(self.result, spec), split=self.split, steps=K,
                                 gap_mean=float(left[i]), gap_se=float(left_se[i]),
                                 gap_lo=float(lo[i]), gap_hi=float(hi[i]),
                                 gain_mean=float(gain[i]), gain_se=float(gain_se[i]),
                                 n=int(e.shape[2])))
        return _typed(pd.DataFrame(rows))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    if "width" in df:
        df["width"] = df["width"].astype("Int64")
    return df


def measure_gap(result, split: str = "test", n_images: int = 200, *, x_train=None,
                families=GAP_FAMILIES, widths=None, seeds=None, refine_steps=REFINE_STEPS,
                n_eval: int = 32, lr: float = 0.05, n_mc: int = 1, tol: float = 0.01,
                check_every: int = 25, decays: int = 2, max_steps: int = 3000,
                theta: str = "sample", seed: int = 0) -> GapMeasurement:
    """Amortization gaps of the trained A-VI / constant-VI models of ``result`` on the first
    ``n_images`` images of ``split``.

    q_enc: the inference function's output. q*: ``fit_q`` from q_enc (Adam, learning rate
    ``lr``, ``n_mc`` draws a step, stopping rule: < ``tol``
    nats/image of improvement per ``check_every`` steps, after ``decays`` learning-rate
    reductions), with q kept after each K in ``refine_steps`` (at least max(refine_steps)
    steps are taken). Both q's (and the refined ones) are then evaluated on ``n_eval`` fresh
    common draws of (z, theta)."""
    theta = _check_theta(theta)
    model = result.model
    index = gap_models(model, families, widths, seeds)
    if not index:
        raise ValueError(f"no model of this sweep has an inference function among families={families!r}")
    x = split_images(result, split, n_images, x_train)
    model_seeds = [model.specs[i].seed for i in index]
    refine_steps = tuple(sorted(set(int(k) for k in refine_steps)))
    q_enc = encoder_q(model, x, index)
    dec, lik = model.decoder, model.likelihood
    skip = dead_positions(result, index)
    fit = fit_q(dec, lik, x, index, q_enc, model_seeds=model_seeds, lr=lr, n_mc=n_mc, tol=tol,
                check_every=check_every, decays=decays, min_steps=max(refine_steps, default=0),
                max_steps=max_steps, checkpoints=refine_steps, theta=theta, seed=seed, skip=skip)
    M, n, d = q_enc.mu.shape
    eps_z, eps_t = eval_noise(model_seeds, n_eval, n, d, dec.n_params, theta, seed, x.device)
    ev = lambda q: elbo_samples(dec, lik, x, q, index, eps_z, eps_t)
    settings = dict(theta=theta, n_eval=n_eval, lr=lr, n_mc=n_mc, tol=tol, check_every=check_every,
                    decays=decays, max_steps=max_steps, seed=seed, n_images=n)
    return GapMeasurement(result, index, split, x, q_enc, fit, ev(q_enc), ev(fit.q),
                          {K: ev(q) for K, q in fit.snapshots.items()}, settings, tuple(skip))


def dead_positions(result, index) -> list[int]:
    """Positions in ``index`` of the models whose training diverged or blew up (``result.runs``)."""
    runs = getattr(result, "runs", None)
    if runs is None or runs.empty:
        return []
    flags = [f for f in ("diverged", "blew_up") if f in runs]
    if not flags:
        return []
    dead = set(map(tuple, runs.loc[runs[flags].any(axis=1), ["config", "seed"]].itertuples(index=False)))
    specs = result.model.specs
    return [j for j, i in enumerate(index) if (specs[i].label, specs[i].seed) in dead]


def gap_table(result, n_images: int = 200, splits=SPLITS, *, x_train=None, n_eval: int = 32,
              tol: float = 0.01, theta: str = "sample", seed: int = 0, **fit_options) -> pd.DataFrame:
    """The amortization-gap table of a finished sweep: one row per A-VI / constant-VI model
    and split, columns ``GAP_COLUMNS`` (dataset, likelihood, sigma, config, family, width, seed,
    split, gap_mean, gap_se, gap_lo, gap_hi, n) then ``GAP_EXTRA_COLUMNS``.

    gap_mean: mean over the first ``n_images`` images of the split of ELBO_n(q*) - ELBO_n(q_enc)
    in nats (local ELBO: the global KL(q(theta)) cancels); gap_se: its standard error (images
    and Monte Carlo, ``mean_se``); [gap_lo, gap_hi]: the 95% normal interval; gap_sd: the
    spread of the per-image gaps; mc_se: the root-mean-square Monte Carlo standard error of a
    single image's gap; elbo_amortized / elbo_fvi: mean local ELBOs; fit_steps, converged: of
    the F-VI fit (see ``measure_gap`` for its options).

    Cost: one F-VI fit of all models at once per split (a few hundred Adam steps, each about one
    training epoch of those models on n_images images) plus 2 x ``n_eval`` decoder passes. A
    ``quick``-profile unit (15 models with an inference function, 200 images per split, about
    400 steps per fit) took 54 s on one thread of a busy 2-core CPU, about a tenth of the
    unit's training. (On a shared CPU, ``torch.set_num_threads(1)`` is much faster than the
    default: several processes spinning two OpenMP threads each slow everything ~10x.)"""
    out = []
    for split in splits:
        m = measure_gap(result, split, n_images, x_train=x_train, refine_steps=(), n_eval=n_eval,
                        tol=tol, theta=theta, seed=seed, **fit_options)
        out.append(m.table())
    return pd.concat(out, ignore_index=True)


def refinement_table(measurements) -> pd.DataFrame:
    """The refinement curves of several ``GapMeasurement`` s, stacked."""
    if isinstance(measurements, GapMeasurement):
        measurements = [measurements]
    return pd.concat([m.refinement() for m in measurements], ignore_index=True)


def summarise(table: pd.DataFrame, value: str = "gap", by=("config", "split")) -> pd.DataFrame:
    """Pool a per-model table over seeds: per ``by`` group the mean of ``<value>_mean``, its
    standard error sqrt(sum se^2) / #seeds (given the trained models: seed-to-seed variation is
    not in it; ``seed_min`` / ``seed_max`` show it), the 95% interval, and the number of seeds."""
    by = [c for c in (["dataset", "likelihood", "sigma"] + list(by)) if c in table]
    extra = [c for c in ("family", "width", "steps") if c in table and c not in by]
    rows = []
    for key, g in table.groupby(by, sort=False, dropna=False):
        est = g[f"{value}_mean"].mean()
        se = math.sqrt((g[f"{value}_se"] ** 2).sum()) / len(g)
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row.update({c: g[c].iloc[0] for c in extra})
        row.update({f"{value}_mean": est, f"{value}_se": se, f"{value}_lo": est - Z95 * se,
                    f"{value}_hi": est + Z95 * se, "seed_min": g[f"{value}_mean"].min(),
                    "seed_max": g[f"{value}_mean"].max(), "seeds": len(g)})
        if "n" in g:
            row["n"] = int(g["n"].iloc[0])
        rows.append(row)
    return _typed(pd.DataFrame(rows))


# --------------------------------------------------------------------------- IWAE decomposition
class Decomposition(NamedTuple):
    table: pd.DataFrame      # one row per model: log p(x), ELBOs, the three gaps
    iwae: pd.DataFrame       # one row per model, proposal and K: IWAE_K (mean over images)


def decompose(result, measurement: GapMeasurement, n_images: int | None = None,
              ks=(1, 10, 100, 1000, 5000), *, theta: str = "sample", n_theta: int = 4,
              seed: int = 0) -> Decomposition:
    """Cremer et al.'s decomposition on the first ``n_images`` images of a measurement:

        log p_n - ELBO_n(q_enc) = [log p_n - ELBO_n(q*)]  +  [ELBO_n(q*) - ELBO_n(q_enc)]
           inference gap            approximation gap           amortization gap

    log p_n = E_{q(theta)} log p(x_n | theta) is estimated by IWAE_K, K = max(ks), with the
    F-VI optimum q* of the measurement as proposal. IWAE_K <= log p_n, so the approximation gap
    (and the inference gap) it gives is an under-estimate, never an over-estimate; if the F-VI
    fit stopped short of q*, part of the amortization gap is booked as approximation gap
    instead (their sum is unaffected). Both ELBOs come from the same draws as the bounds (the
    mean log-weight over K samples) and share the theta draws (``n_theta`` from q(theta), or
    theta = m with ``theta="mean"``) and the z noise (common random numbers). IWAE_K with the
    encoder's q as proposal is reported too (``iwae_encoder``)."""
    m = measurement
    n = m.x.shape[0] if n_images is None else int(n_images)
    sl = slice(0, n)
    model = result.model
    dec, lik = model.decoder, model.likelihood
    model_seeds = [model.specs[i].seed for i in m.index]
    qs = {"q*": m.q_star, "encoder": m.q_enc}
    res = {}
    for name, q in qs.items():
        q = DiagGaussian(q.mu[:, sl], q.log_sigma[:, sl])
        res[name] = iwae(dec, lik, m.x[sl], q, m.index, ks, model_seeds=model_seeds, theta=theta,
                         n_theta=n_theta, seed=seed)
    star, enc = res["q*"], res["encoder"]
    top = len(star.ks) - 1
    K = star.ks[top]
    parts = dict(log_px=star.bound[top], elbo_fvi=star.elbo, elbo_amortized=enc.elbo,
                 iwae_encoder=enc.bound[top],
                 inference_gap=star.bound[top] - enc.elbo,
                 approx_gap=star.bound[top] - star.elbo,
                 amort_gap=star.elbo - enc.elbo)
    stats = {k: mean_se(v) for k, v in parts.items()}                 # [M, T, n] -> [M]
    rows = []
    for i, spec in enumerate(m.specs):
        row = dict(**_keys(result, spec), split=m.split, n=n, K=K, theta=theta,
                   n_theta=star.bound.shape[2])
        for k, (est, se) in stats.items():
            row[k] = float(est[i])
            row[f"{k}_se"] = float(se[i])
        row["mc_se_log_px"] = float(star.bound_se[top, i].square().mean().sqrt())
        rows.append(row)
    table = _typed(pd.DataFrame(rows))
    rows = []
    for name, r in res.items():
        for j, k in enumerate(r.ks):
            est, se = mean_se(r.bound[j])
            for i, spec in enumerate(m.specs):
                rows.append(dict(**_keys(result, spec), split=m.split, proposal=name, K=k,
                                 iwae_mean=float(est[i]), iwae_se=float(se[i]),
                                 mc_se=float(r.bound_se[j, i].square().mean().sqrt()), n=n))
    return Decomposition(table, _typed(pd.DataFrame(rows)))


# --------------------------------------------------------------------------- the dividend
def _best_seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def inference_cost(result, measurement: GapMeasurement, n_images: int = 1000, *, seeds=None,
                   repeats: int = 5, timed_steps: int = 50, include_prior_fit: bool = True) -> pd.DataFrame:
    """The amortization dividend: seconds to infer q(z) for ``n_images`` new (test) images,
    for each model of ``measurement``, with the amortization gap each method leaves.

    - ``encoder``: one pass of the model's own inference function (timed ALONE, best of
      ``repeats``), leaving the measured amortization gap;
    - ``refine K``: the encoder plus K Adam steps (semi-amortized), leaving the measured gap
      after K steps;
    - ``F-VI from encoder``: until the measurement's stopping rule fired (gap 0 by definition);
    - ``F-VI from prior``: F-VI as it would run without an encoder (q(z_n) = N(0, I) at
      start), to the same stopping rule; its gap is ELBO(q*) - ELBO(q_prior fit), measured
      with the measurement's evaluation noise.

    Seconds of the fits = steps x seconds per step, the step (with its share of the stopping
    checks) timed for ONE model alone on ``n_images`` images over ``timed_steps`` steps (best of
    2); every model's decoder has the same size, so one timing serves all. Steps to the rule are
    those of the fits on the measurement's images (the rule looks at the mean over images,
    which does not depend on how many there are). Timings depend on the machine and its load:
    compare them within one run. ``seeds``: only the models with these seeds (default all)."""
    m = measurement
    keep = [j for j, spec in enumerate(m.specs) if seeds is None or spec.seed in seeds]
    if not keep:
        raise ValueError(f"seeds={seeds!r} is invalid: the measurement has seeds "
                         f"{sorted({s.seed for s in m.specs})}")
    model = result.model
    dec, lik = model.decoder, model.likelihood
    x_new = split_images(result, "test", min(n_images, len(result.x_test)))
    if len(x_new) < n_images:
        raise ValueError(f"n_images={n_images} is invalid: the sweep kept {len(result.x_test)} test images")
    s = m.settings
    opts = dict(lr=s["lr"], n_mc=s["n_mc"], tol=s["tol"], check_every=s["check_every"],
                decays=s["decays"], theta=s["theta"], seed=s["seed"])
    index = [m.index[j] for j in keep]
    step_s = min(_time_steps(dec, lik, x_new, index[0], timed_steps, opts) for _ in range(2))
    enc_s = {i: _best_seconds(lambda i=i: single_encoder(model, i, x_new), repeats) for i in index}
    refine = m.refinement()
    rows = []
    prior_gap = prior_steps = None
    if include_prior_fit:
        # the full measurement noise, then the kept models' rows: the same draws as m's ELBOs
        model_seeds = [model.specs[i].seed for i in m.index]
        eps_z, eps_t = eval_noise(model_seeds, s["n_eval"], *m.q_enc.mu.shape[1:], dec.n_params,
                                  s["theta"], s["seed"], m.x.device)
        keep_t = torch.as_tensor(keep)
        eps_z, eps_t = eps_z[keep_t], (None if eps_t is None else eps_t[keep_t])
        pf = fit_q(dec, lik, m.x, index, None, model_seeds=[model_seeds[j] for j in keep],
                   max_steps=s["max_steps"], **opts)
        e_prior = elbo_samples(dec, lik, m.x, pf.q, index, eps_z, eps_t)
        prior_gap = mean_se(m.elbo_star[keep_t] - e_prior)
        prior_steps = pf.steps
    for r_i, i in enumerate(keep):
        spec = m.specs[i]
        keys = dict(**_keys(result, spec), n_images=n_images)
        r = refine[(refine.config == spec.label) & (refine.seed == spec.seed)]
        for _, row in r.iterrows():
            K = int(row.steps)
            rows.append(dict(**keys, method="encoder" if K == 0 else f"refine {K}", steps=K,
                             seconds=enc_s[m.index[i]] + K * step_s,
                             gap_mean=row.gap_mean, gap_se=row.gap_se))
        rows.append(dict(**keys, method="F-VI from encoder", steps=m.fit.steps[i],
                         seconds=enc_s[m.index[i]] + m.fit.steps[i] * step_s, gap_mean=0.0, gap_se=0.0))
        if include_prior_fit:
            rows.append(dict(**keys, method="F-VI from prior", steps=prior_steps[r_i],
                             seconds=prior_steps[r_i] * step_s, gap_mean=float(prior_gap[0][r_i]),
                             gap_se=float(prior_gap[1][r_i])))
    out = _typed(pd.DataFrame(rows))
    out.attrs["seconds_per_step"] = step_s
    return out


def _time_steps(dec, lik, x, pos, steps, opts) -> float:
    """Seconds per F-VI step (checks included) of one model alone on the images x."""
    o = dict(opts)
    o["tol"] = -float("inf")                     # never stop early: time exactly ``steps`` steps
    t0 = time.perf_counter()
    fit_q(dec, lik, x, [pos], None, max_steps=steps, **o)
    return (time.perf_counter() - t0) / steps
