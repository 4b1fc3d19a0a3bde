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
# # Variational inference in one page
#
# [![Open in Colab](../book/_static/open-in-colab.svg)](https://colab.research.google.com/github/amortlib/amortized-vi-book/blob/v0.1.0/notebooks/01_vi_in_one_page.ipynb)
#
# A Bayesian model is a joint density $p(x, z) = p(z)\,p(x \mid z)$ over observations $x$ and
# latent variables $z$. Everything we want to know after seeing $x$ is in the **posterior**
#
# $$
# p(z \mid x) = \frac{p(x, z)}{p(x)}, \qquad p(x) = \int p(x, z)\,\mathrm{d}z ,
# $$
#
# and the **evidence** $p(x)$ is an integral we usually cannot compute. Variational inference
# {cite}`blei2017variational` replaces integration by optimisation: choose a family of
# tractable densities $q_\lambda(z)$ and look for the member closest to the posterior.

# %% [markdown]
# ## KL divergence and the ELBO
#
# "Closest" is measured by the Kullback–Leibler divergence
#
# $$
# \mathrm{KL}\big(q(z) \,\|\, p(z \mid x)\big)
#   = \mathbb{E}_{q}\left[\log q(z) - \log p(z \mid x)\right] \;\ge\; 0 ,
# $$
#
# which is zero only when $q = p(\cdot \mid x)$. It contains the unknown posterior, but
# substituting $\log p(z \mid x) = \log p(x, z) - \log p(x)$ splits it into a computable part
# and a constant:
#
# $$
# \log p(x)
#   = \underbrace{\mathbb{E}_{q}\left[\log p(x, z) - \log q(z)\right]}_{\mathrm{ELBO}(q)}
#   + \mathrm{KL}\big(q(z) \,\|\, p(z \mid x)\big).
# $$
#
# Because the KL is non-negative, the **evidence lower bound** satisfies
# $\mathrm{ELBO}(q) \le \log p(x)$, and because $\log p(x)$ does not depend on $q$,
# *maximising the ELBO is the same as minimising the KL*. The gap
# $\log p(x) - \mathrm{ELBO}(q)$ is exactly the KL: a number we can measure whenever
# $\log p(x)$ is known, and will measure throughout this book.

# %% [markdown]
# ## The reparameterisation trick
#
# The ELBO is an expectation under $q_\lambda$, so its gradient in $\lambda$ is not an
# expectation of a gradient, at least not directly. For a Gaussian
# $q_\lambda = \mathcal{N}(m, s^2)$ with $\lambda = (m, \log s)$, write the sample as a
# deterministic function of parameter-free noise {cite}`kingma2014auto`:
#
# $$
# \begin{aligned}
# z &= m + s\,\varepsilon, \qquad \varepsilon \sim \mathcal{N}(0, 1),
# \qquad\text{so}\\
# \nabla_\lambda \mathrm{ELBO}
#   &= \mathbb{E}_{\varepsilon}\left[\nabla_\lambda \log p(x, m + s\,\varepsilon)\right]
#   + \nabla_\lambda \mathbb{H}[q_\lambda],
# \end{aligned}
# $$
#
# with the Gaussian entropy $\mathbb{H}[q_\lambda] = \tfrac12 \log(2\pi e) + \log s$ in
# closed form. Averaging the first term over a handful of draws $\varepsilon_1, \dots,
# \varepsilon_S$ gives an unbiased gradient estimate; stochastic gradient ascent does the rest.
# The same trick trains the variational autoencoders of the later chapters.

# %% [markdown]
# ## A posterior with two modes
#
# To see all three terms of the identity we need a model whose evidence we *can* compute.
# One dimension suffices: a location $z$ with prior $\mathcal{N}(0, 2.5^2)$, observed four
# times through heavy-tailed Cauchy noise of scale $0.4$,
#
# $$
# z \sim \mathcal{N}(0, 2.5^2), \qquad
# x_i \mid z \sim \mathrm{Cauchy}(z, 0.4), \qquad x = (-2.0, -1.4, 2.1, 2.9).
# $$
#
# No conjugacy, and the two clusters of observations pull the posterior into two modes. On a
# fine grid, though, $p(x)$ and $p(z \mid x)$ are known to many digits
# (`amortlib.theory.vi1d`).

# %%
# In Colab: install amortlib (with the book's chapters and published results) at this book's
# release and let widgets draw; elsewhere this does nothing.
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "amortlib @ git+https://github.com/amortlib/amortized-vi-book@v0.1.0"], check=True)
    from google.colab import output
    output.enable_custom_widget_manager()

# %%
import amortlib.plots  # noqa: F401  (plotly figures that render in Jupyter and in the book)
from amortlib.theory import vi1d
from amortlib.plots.vi import fits_figure
from amortlib.widgets.vi_explorer import VIExplorer

model = vi1d.CauchyLocationModel()
posterior = vi1d.posterior_on_grid(model)
print(f"log p(x) = {vi1d.sig3(posterior.log_evidence)}")

# %% [markdown]
# ## The identity, measured
#
# For a few Gaussians $q = \mathcal{N}(m, s^2)$ we compute the ELBO by quadrature of the
# *unnormalised* joint in the reparameterised coordinate $\varepsilon$, and the KL from the
# *normalised* posterior on the grid: two separate computations. Their sum is $\log p(x)$ for
# every $q$, while each term on its own depends strongly on $q$.

# %%
fixed_qs = [(0.0, 0.0), (-1.6, -0.8), (2.2, -0.6), (0.2, 0.5), (4.0, -1.0)]
print(vi1d.format_table([vi1d.summary(model, m, log_s, posterior) for m, log_s in fixed_qs]))

# %% [markdown]
# ## Explore
#
# Move $m$ and $\log s$ and watch the ELBO and the KL trade places while their sum stays put;
# **optimise** runs 300 steps of reparameterised-gradient ascent (Adam, 16 draws of
# $\varepsilon$ a step) from wherever the sliders are. In this static page the sliders show
# their saved state; launch the notebook (Binder or Colab, rocket icon at the top) to move them.

# %%
VIExplorer(mean=-3.0, log_scale=0.0)

# %% [markdown]
# ## Three starts, three answers
#
# Gradient ascent finds *a* local maximum of the ELBO. From three starting means it finds
# three different Gaussians: one on each mode, and one wide $q$ that straddles both.

# %%
starts = (-3.0, 0.0, 3.0)
fits = {f"start m = {m0:g}": vi1d.fit_gaussian(model, m0, 0.0, steps=300, seed=0).final
        for m0 in starts}
print(vi1d.format_table([vi1d.summary(model, m, log_s, posterior) for m, log_s in fits.values()]))
fits_figure(model, fits, posterior)

# %% [markdown]
# The rows follow the starts $m = -3, 0, 3$. The best of the three, the one with the highest
# ELBO, has the smallest KL, and that KL is still not zero: no Gaussian is the posterior.
# Minimising $\mathrm{KL}(q \,\|\, p)$ penalises $q$ for putting mass where the posterior
# has little, so the best Gaussian settles on the heavier mode and ignores the other rather
# than spread over both. What remains at the best $q$, $\min_q \mathrm{KL}$, is the price of
# the family itself, the *approximation gap*.
#
# The rest of the book adds a second price. In a model with one latent $z_n$ per data point,
# fitting a separate $q(z_n)$ for every $n$ gets expensive, and **amortized** inference trains
# one network, an encoder, that maps $x_n$ to the parameters of $q(z_n)$
# {cite}`kingma2014auto`. An encoder of limited capacity may not reach the best $q(z_n)$ for
# every $n$: the *amortization gap* {cite}`cremer2018inference`. When can amortization close
# it, and when can it not? That is the question of {cite}`margossian2023amortized`, which the
# following chapters take up and measure.
