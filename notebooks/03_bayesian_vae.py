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
# # The Bayesian VAE
#
# [![Open in Colab](../book/_static/open-in-colab.svg)](https://colab.research.google.com/github/amortlib/amortized-vi-book/blob/v0.1.0/notebooks/03_bayesian_vae.ipynb)
#
# The experiments of this book fit one model, a variational autoencoder {cite}`kingma2014auto`
# whose decoder is itself uncertain: a *Bayesian* VAE, as in {cite}`margossian2023amortized`.
#
# ## The model
#
# For images $x_1, \dots, x_N \in [0, 1]^{784}$ with latent codes $z_n \in \mathbb{R}^d$:
#
# $$
# z_n \sim \mathcal{N}(0, I_d), \qquad
# \theta \sim \mathcal{N}(0, I_P), \qquad
# x_n \mid z_n, \theta \sim \mathcal{N}\big(f_\theta(z_n), \sigma^2 I_{784}\big),
# $$
#
# where $f_\theta$ is a multilayer perceptron $d \to h \to h \to 784$ with LeakyReLU(0.2)
# activations and $\theta$ collects **all** its $P$ weights and biases. A Bernoulli likelihood
# $x_{ni} \sim \mathrm{Bernoulli}(\mathrm{sigmoid}\, f_\theta(z_n)_i)$ on binarised pixels is
# the other option.
#
# ## Why the decoder gets a posterior
#
# A plain VAE fits $\theta$ by maximum likelihood. Here $\theta$ has a prior, so it gets a
# variational posterior too, $q(\theta) = \mathcal{N}(m, \mathrm{diag}\, s^2)$. This makes the
# ELBO a bound on the marginal likelihood of the *whole model*, $\log p(x_{1:N})$, and puts all
# three variational families on the same footing: they differ only in $q(z_n)$, never in how
# the decoder is treated. The price is the global term $\mathrm{KL}(q(\theta) \,\|\, p(\theta))$,
# which does not shrink with $N$; per image it is $\mathrm{KL}_\theta / N$.
#
# ## The ELBO, in nats
#
# $$
# \mathrm{ELBO} = \sum_{n=1}^N \Big( \mathbb{E}_{q(\theta) q(z_n)} \log p(x_n \mid z_n, \theta)
#    - \mathrm{KL}\big(q(z_n) \,\|\, p(z_n)\big) \Big) - \mathrm{KL}\big(q(\theta) \,\|\, p(\theta)\big)
#    \;\le\; \log p(x_{1:N}).
# $$
#
# Both KL terms are between Gaussians and are computed in closed form; the expected
# log-likelihood is estimated by reparameterised Monte Carlo
# ($z_n = \mu_n + \sigma_n \varepsilon$, $\theta = m + s \varepsilon'$). Every normalising
# constant is kept, so the number is a real bound on $\log p(x)$, reported per image.
# The two earlier codes of this experiment (Margossian and Blei's notebook, and
# jordandeklerk/Amortized-Bayes; their settings are listed in *How to run*) drop the constant
# $-\tfrac{784}{2}\log(2\pi\sigma^2)$ and weight the squared error by 1, which is
# $1/(2\sigma^2)$ with $\sigma^2 = \tfrac12$ ($\sigma \approx 0.71$); their "negative ELBO" is
# therefore not comparable with these nats per image, and not a bound.

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
# This is the function that computes it. It receives $q(z)$ as a pair of tensors and never
# asks which variational family produced them:

# %%
import inspect
from IPython.display import Code

from amortlib.objective import elbo as elbo_module

Code(inspect.getsource(elbo_module.elbo_terms), language="python")

# %% [markdown]
# ## The three families behind one interface
#
# `amortlib.model` implements $q(z_n)$ three ways. Each maps a batch of images (and their
# indices) to means and log-scales of shape `[models, batch, d]`:
#
# | family | $q(z_n)$ | parameters |
# |---|---|---|
# | `factorized` (F-VI) | $\mathcal{N}(\mu_n, \sigma_n^2)$, free per image | $2 N d$ |
# | `amortized` (A-VI) | $(\mu_n, \log\sigma_n) = g_\phi(x_n)$, an MLP of width $k$ | $\approx 784 k + 2 k d$ |
# | `constant` | $\mathcal{N}(\mu, \sigma^2)$, one for all images | $2d$ |
#
# Below, one small stacked model with all three families on 200 MNIST images: the terms of
# the ELBO at initialisation, in nats per image, with the same noise for every family.

# %%
import pandas as pd
import torch

from amortlib import SweepConfig, data
from amortlib.objective import NoiseSource, elbo_terms
from amortlib.train import StackedVAE

cfg = SweepConfig(n_obs=200, z_dim=8, like_dim=32, widths=(4, 64), seeds=(0,), sigma=0.3)
x = data.load("mnist", "train", n=cfg.n_obs)
model = StackedVAE(cfg)
idx = torch.arange(cfg.n_obs)
eps_z, eps_theta = NoiseSource(model.seeds, "cpu").draw(model.seed_index, 64, cfg.n_obs, cfg.z_dim,
                                                         model.decoder.n_params)
with torch.no_grad():
    t = elbo_terms(x, model.q_z(x, idx), model.decoder, model.likelihood, cfg.n_obs, eps_z, eps_theta)
terms = pd.DataFrame({"model": [s.label for s in model.specs],
                      "E log p(x|z,θ)": t.expected_log_lik.tolist(), "KL(q(z)||p(z))": t.kl_z.tolist(),
                      "KL(q(θ)||p(θ)) / N": t.kl_theta.tolist(), "ELBO": t.elbo.tolist()})
terms.round(2)

# %% [markdown]
# The decoders start identical (the same seed initialises them), so the terms differ only
# through $q(z)$. $\mathrm{KL}(q(\theta)\,\|\,p(\theta))/N$ is large at the start: $q(\theta)$
# begins with tiny scales $s = e^{-5}$, far from the unit-variance prior; training trades it
# off against the likelihood.
#
# ## Training every model at once
#
# The experiment trains F-VI, A-VI at several widths and constant-VI, for several seeds, in
# **one** loop: `amortlib.train.StackedVAE` stacks the $M$ models along a leading axis (the
# decoders as batched matrix products, encoders of equal width side by side), computes one
# negative ELBO per model, and takes one Adam step on their sum. No operation mixes models,
# so each model follows exactly the trajectory it would follow alone (a test checks this to
# a relative $10^{-5}$), and a model that diverges cannot disturb the others.

# %%
from amortlib.train import run_sweep

small = cfg.replace(epochs=150, eval_points=6, fit_steps=60, n_test=100, progress=False)
res = run_sweep(small, calibrate_steps=0)
res.metrics.pivot_table(index="epoch", columns="config", values="neg_elbo").round(1)

# %% [markdown]
# Each column is a model; each row a logged epoch (log-spaced). The next chapter runs the
# same engine at the scale of the experiment.
