# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Measuring the gap
#
# [![Open in Colab](../book/_static/open-in-colab.svg)](https://colab.research.google.com/github/amortlib/amortized-vi-book/blob/v0.1.0/notebooks/06_measuring_the_gap.ipynb)
#
# The experiment of the previous chapters compares *how well* each variational family trains a
# Bayesian VAE. This chapter measures the thing the book is about directly: for a trained model,
# how much ELBO does the encoder leave on the table, image by image? And what does it cost to
# get it back?
#
# Fix a trained model: its decoder's $q(\theta) = \mathcal{N}(m, s^2)$ and its inference
# function, the encoder $x \mapsto q_{\mathrm{enc}}(z_n \mid x_n)$ of A-VI (or the single
# shared $q(z)$ of constant-VI). With $q(\theta)$ frozen, each image has its own *local* ELBO
#
# $$
# \mathrm{ELBO}_n(q) = \mathbb{E}_{q(\theta)}\,\mathbb{E}_{q(z_n)}
#   \big[\log p(x_n \mid z_n, \theta)\big] - \mathrm{KL}\big(q(z_n) \,\|\, \mathcal{N}(0, I)\big)
#   \;\le\; \log p_n := \mathbb{E}_{q(\theta)} \log p(x_n \mid \theta).
# $$
#
# The model's full ELBO is the sum of these minus $\mathrm{KL}(q(\theta) \,\|\, p(\theta))$,
# which does not depend on $q(z)$ and cancels from every difference below. Cremer, Li and
# Duvenaud {cite}`cremer2018inference` split the **inference gap** of datapoint $n$ in two:
#
# $$
# \underbrace{\log p_n - \mathrm{ELBO}_n(q_{\mathrm{enc}})}_{\text{inference gap}}
# = \underbrace{\log p_n - \mathrm{ELBO}_n(q^*)}_{\text{approximation gap}}
# + \underbrace{\mathrm{ELBO}_n(q^*) - \mathrm{ELBO}_n(q_{\mathrm{enc}})}_{\text{amortization gap}},
# $$
#
# where $q^*$ is the best Gaussian $q(z_n)$ for that image, the one F-VI would find. The
# approximation gap is the price of the Gaussian family; the amortization gap is the price of
# asking one network to produce every $q(z_n)$ {cite}`margossian2023amortized`.

# %%
# In Colab: install amortlib (with the book's chapters and published results) at this book's
# release and let widgets draw; elsewhere this does nothing.
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "amortlib @ git+https://github.com/amortlib/amortized-vi-book@v0.1.0"], check=True)
    from google.colab import output
    output.enable_custom_widget_manager()

# %% [markdown]
# ## A small model to measure
#
# One sweep trains A-VI with encoders of width $k = 1, 16, 128$ and constant-VI, two seeds
# each, on 500 MNIST images (8 latent dimensions, decoder 8 → 64 → 64 → 784, Gaussian
# likelihood with $\sigma = 0.2$ so that the latent variables are worth using). It takes about
# a minute on two CPU cores. We use one thread: on a busy shared machine that is often the
# fastest setting, and it makes every number below the same on every run.

# %%
import sys
import time

import pandas as pd
import torch

import amortlib.plots  # noqa: F401  (plotly figures that render in Jupyter and in the book)
from amortlib import SweepConfig
from amortlib.gap import decompose, inference_cost, measure_gap, refinement_table, summarise
from amortlib.plots.format import text_table
from amortlib.plots.gap import (decomposition_figure, dividend_figure, gap_figure, iwae_figure,
                                refinement_figure)
from amortlib.widgets.image_gaps import ImageGapExplorer
from amortlib.train import run_sweep

torch.set_num_threads(1)
cfg = SweepConfig(dataset="mnist", n_obs=500, n_test=1000, z_dim=8, like_dim=64,
                  widths=(1, 16, 128), seeds=(0, 1), families=("amortized", "constant"),
                  epochs=400, lr=3e-3, likelihood="gaussian", sigma=0.2, eval_points=10,
                  progress=False)
if "google.colab" in sys.modules:  # Colab's free CPU runtime: a shorter run, so its numbers differ
    cfg = cfg.replace(epochs=150)
t0 = time.perf_counter()
result = run_sweep(cfg, calibrate_steps=0)
train_seconds = time.perf_counter() - t0

# %% tags=["nbval-ignore-output"]
print(f"{result.info['n_models']} models trained in {train_seconds:.0f} s")

# %% [markdown]
# The trained models, per configuration (mean over the two seeds): negative ELBO in nats per
# image, reconstruction error at the posterior means, and the number of latent dimensions in
# use (active units).

# %%
runs = result.runs.groupby("config", sort=False)[["neg_elbo", "mse_train", "mse_test",
                                                  "active_units"]].mean().reset_index()
print(text_table(runs))

# %% [markdown]
# ## The amortization gap, image by image
#
# For every model and image we compute $q_{\mathrm{enc}}(z_n)$, then run F-VI on $q(z_n)$
# **starting from it**, with $q(\theta)$ frozen: Adam on $\mathrm{ELBO}_n$ with one fresh draw
# of $(z, \theta)$ per step, learning rate 0.05. The **stopping rule**: every 25 steps the mean
# ELBO over the images is evaluated on a fixed set of draws; when it has improved by less than
# 0.01 nats per image the learning rate drops by a factor 0.3, and at the third such plateau
# the fit stops. The result is $q^*$.
#
# Both $q$'s are then evaluated on 64 fresh draws of $(z, \theta)$, *the same draws for both*
# (common random numbers), so that the noise of $\theta$, which moves both ELBOs alike,
# largely cancels from their difference. The estimate is unbiased for the $q^*$ the fit found;
# if F-VI stopped short of the true optimum the gap is under-, never over-estimated. We use the
# first 150 training images (which the encoders were trained on) and the first 150 test images
# (which they have never seen).

# %% tags=["nbval-ignore-output"]
measurements = {split: measure_gap(result, split, n_images=150, n_eval=64, lr=0.05, tol=0.01)
                for split in ("train", "test")}
per_model = pd.concat([m.table() for m in measurements.values()], ignore_index=True)
gaps = summarise(per_model)
print(text_table(gaps, ["config", "split", "gap_mean", "gap_lo", "gap_hi", "seed_min", "seed_max", "n"],
                 rename={"gap_mean": "gap", "gap_lo": "95% lo", "gap_hi": "95% hi"}))

# %% [markdown]
# Gaps in nats per image, mean over 150 images and the two seeds, with a 95% interval for that
# mean (the standard error combines the spread over images with the Monte Carlo error; the
# interval is conditional on the two trained models, and `seed_min`/`seed_max` show how far
# the seeds are apart). Per model, with the Monte Carlo error of a *single* image's gap
# (`mc_se`, root mean square over images) next to the spread of the gaps over images
# (`gap_sd`):

# %% tags=["nbval-ignore-output"]
print(text_table(per_model, ["config", "seed", "split", "gap_mean", "gap_se", "gap_sd", "mc_se",
                             "elbo_amortized", "elbo_fvi", "fit_steps"]))

# %% tags=["nbval-ignore-output"]
gap_figure(gaps)

# %% [markdown]
# Choose an inference function to see the whole distribution of per-image gaps behind each
# mean. (In this static page the dropdowns show their saved state; launch the notebook to
# change them.)

# %%
ImageGapExplorer(pd.concat([m.per_image() for m in measurements.values()], ignore_index=True),
            config="A-VI k=128")

# %% [markdown]
# What the numbers say:
#
# - **On the training images the gap shrinks with the encoder's width.** A width-1 encoder
#   leaves tens of nats per image; width 16 several; width 128 a few. A wider encoder is a
#   richer inference function, and on the images it was trained on it gets closer to F-VI.
# - **On new images the gap is much larger, and width stops helping.** Trained on only 500
#   images, the wider encoders fit those images' posteriors well but generalise poorly: on
#   test images widths 16 and 128 leave about the same gap, several times their training
#   gap. Part of what is called the amortization gap here is the encoder's generalisation
#   gap.
# - **The gap is measured against the model's own decoder.** Constant-VI has a small gap
#   even though it cannot tell images apart: its decoder learned to ignore $z$ (no active
#   units), so there is little for a per-image $q(z_n)$ to gain. The decoder adapts to the
#   inference it is trained with, as {cite}`cremer2018inference` observed; the gap of a trained
#   model understates what amortization cost during training.
# - The gaps vary a lot from image to image (`gap_sd` is as large as the mean) and are
#   skewed to the right (the histograms): on test images a tenth of the images carries about a
#   third of the total, and the median gap is well below the mean.

# %% [markdown]
# ## How large is the approximation gap?
#
# To complete the decomposition we need $\log p_n$, which no ELBO gives. The importance-weighted
# bound of Burda, Grosse and Salakhutdinov {cite}`burda2016importance`,
#
# $$
# \mathrm{IWAE}_K = \mathbb{E}\Big[\log \frac1K \sum_{k=1}^K
#   \frac{p(x_n, z_k \mid \theta)}{q(z_k)}\Big], \quad z_k \sim q \text{ iid},
# $$
#
# equals the ELBO at $K = 1$, never decreases with $K$, and tends to $\log p(x_n \mid \theta)$.
# We take $q = q^*$ as the proposal and $K$ up to 5,000, for the first 50 test images, with
# $\theta$ drawn from $q(\theta)$ (two draws, each shared by all $K$ samples, averaged: an
# estimate of $\log p_n$ as defined above). Both ELBOs come from the same draws, so the three
# gaps add up exactly. Being a lower bound, $\mathrm{IWAE}_{5000}$ can only *under*-estimate
# $\log p_n$, hence the approximation gap.

# %% tags=["nbval-ignore-output"]
decomposition = decompose(result, measurements["test"], n_images=50, ks=(1, 10, 100, 1000, 5000),
                          n_theta=2)
dec = decomposition.table.groupby("config", sort=False)[
    ["log_px", "elbo_fvi", "elbo_amortized", "inference_gap", "approx_gap", "amort_gap",
     "iwae_encoder"]].mean().reset_index()
print(text_table(dec, rename={"log_px": "log p (IWAE_5000)", "elbo_fvi": "ELBO(q*)",
                              "elbo_amortized": "ELBO(q_enc)", "approx_gap": "approx. gap",
                              "amort_gap": "amort. gap", "iwae_encoder": "IWAE_5000(q_enc)"}))

# %% tags=["nbval-ignore-output"]
decomposition_figure(decomposition.table)

# %% [markdown]
# The analogue of Table 2 of {cite}`cremer2018inference`, on test images, in nats per image,
# mean over the two seeds. The approximation gap, what a diagonal Gaussian misses of the true
# posterior $p(z_n \mid x_n, \theta)$, is a few nats; the amortization gap is more than ten
# times larger for every A-VI encoder (about four times for constant-VI). As in Cremer et al.'s
# MNIST experiments, it is the amortization, not the Gaussian family, that dominates the
# inference gap. The last column is the same bound with
# the *encoder's* $q$ as the proposal: a worse proposal needs far more samples, so at equal $K$
# its bound is lower, and its ELBO is lower still. Below, the whole curve, relative to
# $\mathrm{IWAE}_{5000}(q^*)$: with the encoder's $q$ as proposal even 5,000 samples leave
# tens of nats of an A-VI model's gap; importance sampling from a poor proposal is no
# substitute for fitting $q$.

# %% tags=["nbval-ignore-output"]
iwae_figure(decomposition.iwae)

# %% [markdown]
# ## Semi-amortized inference: a few steps from the encoder
#
# Between the two extremes lies semi-amortized inference {cite}`kim2018semi`: take the encoder's
# output as the starting point and run $K$ gradient steps of F-VI on each $q(z_n)$. The
# refinement steps were recorded on the way to $q^*$ above (same optimiser, same draws for the
# evaluation), so the curve costs nothing extra. Gap left after $K$ steps, test images, mean
# over seeds:

# %% tags=["nbval-ignore-output"]
refine = refinement_table(list(measurements.values()))
curve = summarise(refine, by=("config", "split", "steps"))
wide = curve[curve.split == "test"].pivot(index="config", columns="steps", values="gap_mean")
wide = wide.reindex(list(dict.fromkeys(curve.config))).reset_index()
wide.columns = ["config"] + [f"K={k}" for k in wide.columns[1:]]
print(text_table(wide))

# %% tags=["nbval-ignore-output"]
refinement_figure(refine, split="test")

# %% [markdown]
# A handful of steps recovers most of the gap of the wide encoders: their $q_{\mathrm{enc}}$
# is close to $q^*$, and a few steps of a per-image optimiser finish the job. The width-1
# encoder's output is far from $q^*$ and needs many more steps. Every step is evaluated with
# common random numbers against the step before; the ELBO never goes down (the tests of
# `amortlib.gap` check this).

# %% [markdown]
# ## The amortization dividend
#
# What does the gap buy? Inference for 1,000 new images: one pass of the encoder, against F-VI
# run to the same stopping rule, from the encoder's output or from the prior $\mathcal{N}(0,
# I)$ as F-VI would run without an encoder. Each model is timed *alone* on one thread: the
# encoder pass (best of five), and one F-VI step on 1,000 images (checks included); a fit
# costs its number of steps times that. (Seconds depend on the machine and its load; their
# ratios are what to read.)

# %% tags=["nbval-ignore-output"]
cost = inference_cost(result, measurements["test"], n_images=1000, seeds=(0,))
table = cost[cost.method.isin(["encoder", "refine 10", "F-VI from encoder", "F-VI from prior"])]
print(f"one F-VI step on 1,000 images: {cost.attrs['seconds_per_step'] * 1e3:.1f} ms")
print(text_table(table, ["config", "method", "steps", "seconds", "gap_mean", "gap_se"]))

# %% tags=["nbval-ignore-output"]
dividend_figure(cost)

# %% [markdown]
# One encoder pass takes about a millisecond or less for 1,000 images; F-VI takes hundreds of
# steps, thousands of times longer. From the prior it needs more steps than from the encoder's
# output and ends within about a nat of $q^*$ (a little above it for the width-1 model, whose
# encoder starts F-VI in a slightly worse local optimum for some images; a little below for
# width 128): the encoder's output is a good place to start. Semi-amortization sits in between:
# ten steps cost a few hundred encoder passes and remove about three quarters of a wide
# encoder's gap. The amortization gap is the price of a speed-up of three to four orders of
# magnitude.

# %% [markdown]
# ## An exact check at MNIST scale
#
# Every number above is a Monte Carlo estimate made by code that could be wrong. One model of
# this size can be checked against exact answers: a VAE whose decoder is linear,
# $x = W z + b + \sigma \varepsilon$ (probabilistic PCA). Fitted by maximum likelihood to 1,000
# MNIST training images with $d = 16$ (which gives $\sigma = 0.16$), and with its latent space
# rotated so that the posterior is not diagonal (which leaves $p(x)$ unchanged), it has a
# closed-form $\log p(x)$, exact posterior, F-VI optimum $q^*$ (the posterior means and variances
# $1/\Lambda_{jj}$ of the posterior precision $\Lambda$) and ideal encoder, which is linear
# (`amortlib.theory.ppca`). The engine's networks express it exactly: LeakyReLU(0.2) satisfies
# $\mathrm{leaky}(u) - \mathrm{leaky}(-u) = 1.2\,u$, so two mirrored units per latent carry a
# linear map through each layer of the decoder ($16 \to 32 \to 32 \to 784$) and of a width-32
# A-VI encoder. On the first 100 images, in float64, the engine's own ELBO, F-VI fitter, IWAE
# and gap code against the closed forms, in nats per image (mean over the images; `mc_se` is the
# Monte Carlo standard error of the engine's number):

# %%
from amortlib import data
from amortlib.theory.ppca import FIT_OPTIONS, PPCA, compare

anchor = PPCA.fit(data.load("mnist", "train", 1000), d=16).rotated(seed=0)
chapter_fit = dict(lr=0.05, n_mc=1, tol=0.01)          # the settings of measure_gap above
anchor_table, anchor_details = compare(
    anchor, data.load("mnist", "train", 100),
    fits={"1 draw a step, tol 0.01": chapter_fit, "8 draws a step, tol 0.001": FIT_OPTIONS})
print(f"sigma = {anchor.sigma:.3f}, closed-form approximation gap {anchor.approximation_gap:.3f} nats")
print(text_table(anchor_table))

# %% [markdown]
# The engine's ELBO at $q^*$ agrees with the closed form within its Monte Carlo error. F-VI run
# from the prior does not quite reach $q^*$: with one draw of $z$ a step and the stopping rule
# of this chapter it ends a few tenths of a nat short, with eight draws and a tighter rule a few
# hundredths. That is Adam's noise floor: the Monte Carlo gradient keeps moving $q$ around the
# optimum. So the $q^*$ of the measurements above is a slightly pessimistic reference, and the
# amortization gaps they report are low by about that much (small next to the gaps measured).
# $\mathrm{IWAE}_{1000}$ with $q^*$ as proposal recovers all but about 0.06 nats of the
# 1.27-nat approximation gap, from below, as a lower bound must. The gap code (its refit run
# with eight draws a step) gives about zero, a little below (the refit from the optimum can
# only lose), for the ideal linear encoder, and
# the closed-form gap of about 60 nats for an encoder whose means are shrunk by 0.7 and whose
# $\log\sigma$ is 0.5 too large. `tests/test_anchor.py` asserts each of these to a stated
# tolerance.

# %% [markdown]
# ## The gap of every sweep unit
#
# `amortlib.gap.gap_table(result, n_images=200)` computes the per-model table above, both
# splits, for any finished `run_sweep` result, with the columns `dataset, likelihood, sigma,
# config, family, width, seed, split, gap_mean, gap_se, gap_lo, gap_hi, n` (then the spread
# over images, the Monte Carlo error, both ELBOs and the fit's steps). It runs one stacked F-VI
# fit per split (a few hundred steps, each about one training epoch of the models on `n_images`
# images) and two evaluations; for a `quick`-profile unit (15 models with an inference
# function, 200 images per split) that is about a minute on one CPU thread, a tenth of the
# unit's training.
#
# Caveats. The gaps are for one small model trained on 500 images for 400 epochs; longer
# training and more data change the encoders' generalisation and hence the test gaps. The
# amortization gap is measured against each model's *own* decoder, which was trained together
# with its encoder. $q^*$ is a local optimum found from the encoder's output (from the prior,
# F-VI ends within about a nat of it here). $\mathrm{IWAE}_{5000}$ is a lower bound on
# $\log p_n$, so the approximation gaps are under-estimates (as is the inference gap); and
# with $\theta$ drawn from $q(\theta)$ rather than fixed, they also include what a $q(z_n)$
# that cannot depend on $\theta$ must miss.
