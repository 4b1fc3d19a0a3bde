r"""Final numbers of a trained sweep that a reader can trust: many-draw ELBOs with standard
errors on train and test images, and the test log-likelihood of each family by IWAE.

The training loss the sweep logs is a one-draw estimate of the ELBO at the last step. Here,
for every model of a ``SweepResult`` (F-VI, A-VI at each width, constant-VI):

- **train ELBO** per image: (1/n) sum_n ELBO_n(q) - KL(q(theta) || p(theta)) / N, the local
  ELBOs estimated with ``n_draws`` independent draws of (z, theta) (theta ~ q(theta): the decoder
  is Bayesian, theta are its weights), the KL of theta exact; q is the family's own q(z): F-VI's
  table, the encoder's output, the constant q;
- **test ELBO** per image: the mean local ELBO (1/n) sum_n E_{q(theta)} ELBO_n(q) on test
  images, a lower bound on E_{q(theta)} log p(x_n | theta) (q(theta) is the approximate
  posterior given the training images, so no KL(theta) term belongs to a test image). A-VI and
  constant-VI use their inference function; F-VI, which has none, uses q* fitted by ``fit_q``
  from the prior with the decoder frozen (``FINAL_FIT``);
- **test log-likelihood**: IWAE_K (K = ``iwae_k``) with the same q as proposal, ``n_theta``
  draws of theta each shared by the K samples of z: a lower bound on E_{q(theta)} log p(x_n | theta)
  that tightens with K.

Standard errors are ``mean_se``'s: images as a sample plus the Monte Carlo error.
"""
from __future__ import annotations

import pandas as pd
import torch

from ..model import DiagGaussian, kl_std_normal
from .core import _check_theta, elbo_samples, eval_noise, fit_q, iwae, mean_se
from .measure import KEY_COLUMNS, _keys, _typed, encoder_q, split_images

#: F-VI's test-time fit in ``final_evaluation``: four draws a step and a tight stopping rule
#: (the anchor model of ``amortlib.theory.ppca`` shows one draw a step stopping ~0.3 nats short).
FINAL_FIT = dict(lr=0.05, n_mc=4, tol=1e-3, decays=3, max_steps=3000)
FINAL_COLUMNS = KEY_COLUMNS + ["elbo_train", "elbo_train_se", "kl_theta_per_image", "elbo_test",
                               "elbo_test_se", "test_loglik", "test_loglik_se", "iwae_k",
                               "n_draws", "n_train", "n_test", "fvi_test_steps"]


def family_q(model, x: torch.Tensor, split: str, *, fit_options=None, theta: str = "sample",
             seed: int = 0) -> tuple[DiagGaussian, dict]:
    """q(z) of every model of the stack on the images x [n, D] (prepared), [M, n, d]: on the
    training images (the first n) each family's own q; on other images the inference function
    of A-VI / constant-VI and, for F-VI, ``fit_q`` from the prior. Returns (q, {position: steps})."""
    M = model.n_models
    n = x.shape[0]
    if split == "train":
        with torch.no_grad():
            q = model.q_z(x, torch.arange(n, device=x.device))
        return DiagGaussian(q.mu.detach(), q.log_sigma.detach()), {}
    fvi = list(range(model.model_slice("factorized").start, model.model_slice("factorized").stop))
    others = [i for i in range(M) if i not in fvi]
    mu = torch.empty(M, n, model.cfg.z_dim, dtype=x.dtype, device=x.device)
    ls = torch.empty_like(mu)
    steps = {}
    if others:
        q = encoder_q(model, x, others)
        mu[others], ls[others] = q.mu, q.log_sigma
    if fvi:
        fit = fit_q(model.decoder, model.likelihood, x, fvi, None,
                    model_seeds=[model.specs[i].seed for i in fvi], theta=theta, seed=seed,
                    **{**FINAL_FIT, **(fit_options or {})})
        mu[fvi], ls[fvi] = fit.q.mu.to(mu.dtype), fit.q.log_sigma.to(ls.dtype)
        steps = dict(zip(fvi, fit.steps))
    return DiagGaussian(mu, ls), steps


def many_draw_elbos(decoder, likelihood, x, q: DiagGaussian, index, model_seeds, n_draws: int,
                    theta: str = "sample", seed: int = 0, block: int = 10) -> torch.Tensor:
    """Single-draw local ELBOs [M, n_draws, n] of q, the draws of (z, theta) made ``block`` at a
    time (each block from its own noise stream, so memory stays O(block P))."""
    M, n, d = q.mu.shape
    out = []
    for b, s0 in enumerate(range(0, n_draws, block)):
        k = min(block, n_draws - s0)
        eps_z, eps_t = eval_noise(model_seeds, k, n, d, decoder.n_params, theta, seed, x.device,
                                  stream=20 + b)
        out.append(elbo_samples(decoder, likelihood, x, q, index, eps_z, eps_t))
    return torch.cat(out, 1)


@torch.no_grad()
def final_evaluation(result, *, x_train=None, n_images: int | None = None, n_draws: int = 100,
                     iwae_k: int = 1000, n_theta: int = 4, theta: str = "sample",
                     fit_options: dict | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per model of ``result`` (a ``SweepResult``): columns ``FINAL_COLUMNS`` (see the
    module docstring), all in nats per image. ``n_images``: the first that many images of each
    split (default all); ``iwae_k=0`` skips the IWAE bound. Cost, per split: n_draws decoder
    passes of every model over the images, plus K samples per test image for IWAE."""
    theta = _check_theta(theta)
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 2:
        raise ValueError(f"n_draws={n_draws!r} is invalid: expected an integer >= 2")
    model = result.model
    dec, lik = model.decoder, model.likelihood
    index = list(range(model.n_models))
    seeds = [s.seed for s in model.specs]
    kl_theta = (kl_std_normal(dec.m, dec.log_s) / result.cfg.n_obs).double().cpu()
    cols = {}
    for split in ("train", "test"):
        x = split_images(result, split, n_images, x_train)
        with torch.enable_grad():
            q, steps = family_q(model, x, split, fit_options=fit_options, theta=theta, seed=seed)
        est, se = mean_se(many_draw_elbos(dec, lik, x, q, index, seeds, n_draws, theta, seed))
        cols[split] = (est.cpu(), se.cpu(), x.shape[0], steps)
        if split == "test" and iwae_k:
            r = iwae(dec, lik, x, q, index, ks=(iwae_k,), model_seeds=seeds, theta=theta,
                     n_theta=n_theta, seed=seed)
            cols["iwae"] = mean_se(r.bound[-1])
    rows = []
    for i, spec in enumerate(model.specs):
        (tr, tr_se, n_tr, _), (te, te_se, n_te, steps) = cols["train"], cols["test"]
        ll, ll_se = cols.get("iwae", (None, None))
        rows.append(dict(**_keys(result, spec), elbo_train=float(tr[i] - kl_theta[i]),
                         elbo_train_se=float(tr_se[i]), kl_theta_per_image=float(kl_theta[i]),
                         elbo_test=float(te[i]), elbo_test_se=float(te_se[i]),
                         test_loglik=float("nan") if ll is None else float(ll[i]),
                         test_loglik_se=float("nan") if ll is None else float(ll_se[i]),
                         iwae_k=int(iwae_k), n_draws=int(n_draws), n_train=n_tr, n_test=n_te,
                         fvi_test_steps=int(steps.get(i, 0))))
    return _typed(pd.DataFrame(rows, columns=FINAL_COLUMNS))
