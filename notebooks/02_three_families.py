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
# # Three variational families
#
# [![Open in Colab](../book/_static/open-in-colab.svg)](https://colab.research.google.com/github/amortlib/amortized-vi-book/blob/v0.1.0/notebooks/02_three_families.ipynb)
#
# A **latent variable model** has global parameters $\theta$, one local latent variable $z_n$
# per observation $x_n$, and the joint density
#
# $$
# p(\theta, z_{1:N}, x_{1:N}) = p(\theta) \prod_{n=1}^N p(z_n)\, p(x_n \mid z_n, \theta).
# $$
#
# Variational inference {cite}`blei2017variational` approximates the posterior
# $p(\theta, z_{1:N} \mid x_{1:N})$ with a tractable $q$ by maximising the ELBO. This chapter,
# like the paper it follows {cite}`margossian2023amortized`, keeps the *form* of $q$ fixed —
# mean-field and Gaussian,
#
# $$
# q(\theta, z_{1:N}) = q(\theta) \prod_{n=1}^N q(z_n; \nu_n), \qquad
# q(z_n; \nu_n) = \mathcal{N}\big(z_n;\, \mu_n, \omega_n^2\big), \quad \nu_n = (\mu_n, \log \omega_n),
# $$
#
# and asks only *how the local parameters $\nu_1, \dots, \nu_N$ are produced*. Three answers
# give three variational families.

# %% [markdown]
# ## Factorized, amortized, constant
#
# **Factorized VI (F-VI).** Every $\nu_n$ is a free parameter. This is classical mean-field
# VI: the most flexible choice, with $2N$ local parameters that grow with the data, and no
# answer at all for a new observation $x_{N+1}$ without another optimisation.
#
# **Amortized VI (A-VI).** One *inference function* (encoder) $f_\phi$ maps an observation to
# its variational parameters, $\nu_n = f_\phi(x_n)$, and only the weights $\phi$ are optimised.
# This is how variational autoencoders are trained {cite}`kingma2014auto`: the number of
# parameters does not grow with $N$, and a new $x$ gets its $q$ from one evaluation of $f_\phi$.
#
# **Constant VI.** All datapoints share one $\nu$: $\nu_n = \nu$. It is A-VI with a constant
# inference function, a floor that shows how much the datapoint-specific information is worth.
#
# For given data, every constant solution is an amortized one, and every amortized solution
# $\big(f_\phi(x_1), \dots, f_\phi(x_N)\big)$ is a factorized one. Maximising the same ELBO over
# nested sets gives ordered optima,
#
# $$
# \mathrm{ELBO}^*_{\text{constant}} \;\le\; \mathrm{ELBO}^*_{\text{A-VI}}
#   \;\le\; \mathrm{ELBO}^*_{\text{F-VI}} \;\le\; \log p(x_{1:N}).
# $$

# %% [markdown]
# ## Two gaps
#
# The distance from $\log p(x)$ to an amortized fit splits in two {cite}`cremer2018inference`:
#
# $$
# \log p(x) - \mathrm{ELBO}_{\text{A-VI}}
#   = \underbrace{\log p(x) - \mathrm{ELBO}^*_{\text{F-VI}}}_{\text{approximation gap}}
#   + \underbrace{\mathrm{ELBO}^*_{\text{F-VI}} - \mathrm{ELBO}_{\text{A-VI}}}_{\text{amortization gap}\;\ge\;0}.
# $$
#
# The **approximation gap** is the price of the family (mean-field Gaussian): it is
# $\mathrm{KL}(q^* \,\|\, p(\cdot \mid x))$ at the F-VI optimum. The **amortization gap** is the
# price of producing $\nu_n$ by a shared function instead of optimising it freely. Semi-amortized
# VI {cite}`kim2018semi` attacks the second gap by running a few F-VI steps from the encoder's
# output. Margossian and Blei {cite}`margossian2023amortized` ask when there is nothing to
# attack: the amortization gap is zero exactly when some $f$ in the encoder class hits the F-VI
# optimum at every datapoint, $f(x_n) = \nu^*_n$ for all $n$ — when an **ideal inference
# function** exists. They show that it does for *simple hierarchical models*, where the
# posterior of $z_n$ depends on the data only through $x_n$ (given $\theta$), so that
# $\nu^*_n$ is a function of $x_n$; whether a given encoder class contains that function is then
# a question of capacity, taken up in the chapter on when amortization can close the gap.

# %% [markdown]
# ## The amortization interpolation problem
#
# F-VI only ever answers for the $N$ datapoints it was fitted to. An inference function is
# defined everywhere, and is used everywhere: on new data at test time, and — in a VAE — on
# data whose $\theta$ keeps moving during training. Fitting $f_\phi$ to $x_1, \dots, x_N$ is
# therefore also an interpolation (and extrapolation) problem {cite}`margossian2023amortized`:
# an encoder that matches $\nu^*_n$ at the training points may still be wrong in between or
# beyond them. A small gap on the training data is necessary, not sufficient. Where the ideal
# inference function is simple and the encoder class contains it, both problems vanish at once,
# as the example below shows.

# %% [markdown]
# ## An example with every answer in closed form
#
# The **normal-normal model** (`amortlib.theory.normal_normal`):
#
# $$
# \theta \sim \mathcal{N}(0, 10^2), \qquad z_n \sim \mathcal{N}(0, 1), \qquad
# x_n \mid \theta, z_n \sim \mathcal{N}(\theta + \tau z_n,\, \sigma^2), \qquad n = 1, \dots, N,
# $$
#
# with $\tau = 1.5$, $\sigma = 1$ known, $N = 100$ simulated points with $\theta = 2$. The
# posterior is jointly Gaussian; with $V = \sigma^2 + \tau^2$,
#
# $$
# \theta \mid x \sim \mathcal{N}(m_\theta, v_\theta),\quad v_\theta = \Big(\frac{1}{10^2} + \frac{N}{V}\Big)^{-1},\quad
# m_\theta = v_\theta \frac{\sum_n x_n}{V}, \qquad
# \mathbb{E}[z_n \mid x] = \frac{\tau\,(x_n - m_\theta)}{V}, \quad
# \mathrm{Var}[z_n \mid x] = \frac{\sigma^2}{V} + \frac{\tau^2 v_\theta}{V^2}.
# $$
#
# The F-VI (mean-field) optimum of a Gaussian target is known exactly: its **means are the exact
# posterior means**, and its variances are the inverse diagonal of the posterior precision,
# $\omega_n^2 = \sigma^2 / V$ and $s^2 = (1/10^2 + N/\sigma^2)^{-1}$ — *smaller* than the exact
# marginal variances (mean-field underestimates uncertainty: here by $\tau^2 v_\theta / V^2$,
# which is $O(1/N)$, for each $z_n$, and by about the factor $\sigma^2/V$ for $\theta$).
#
# So the optimal mean $\mu^*_n = \tau (x_n - m_\theta)/V$ is **affine in $x_n$** and
# $\omega^*_n$ does not depend on $n$: the ideal inference function exists and is affine. We fit
# three families to the same data by maximising the closed-form ELBO (Adam, then L-BFGS; all
# with $q(\theta) = \mathcal{N}(m, s^2)$ fitted jointly):
#
# - F-VI: a free $(\mu_n, \log\omega_n)$ per datapoint;
# - A-VI with an **affine** encoder $\big(\mu_n, \log\omega_n\big) = \big(a x_n + b,\; c x_n + d\big)$;
# - constant-VI.

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
import numpy as np
import torch

import amortlib.plots  # noqa: F401  (plotly figures that render in Jupyter and in the book)
from amortlib.theory import fit as tf
from amortlib.plots.theory import means_figure

torch.manual_seed(0)
res = tf.compare("normal_normal", width=None, n=100, seed=0)   # F-VI, affine A-VI, constant-VI
model, data = res["model"], res["data"]
exact = model.exact_posterior(data)
n = model.n_local(data)

fits = [res[fam] for fam in tf.FAMILIES]
print("ELBOs, in nats per datapoint")
print(tf.format_table(
    [{"family": r.label, "ELBO/N": r.elbo, "gap to F-VI": res["factorized"].elbo - r.elbo,
      "log p(x)/N - ELBO/N": res["log_evidence"] - r.elbo} for r in fits]
    + [{"family": "exact", "ELBO/N": res["log_evidence"], "gap to F-VI": "-",
        "log p(x)/N - ELBO/N": "0"}]))
print()
print("posterior moments (err = max over n of |E_q[z_n] - E[z_n | x]|; sd z_n averaged over n)")
print(tf.format_table(
    [{"family": r.label, "err": np.abs(r.mu - exact["mean_z"].numpy()).max(),
      "E theta": r.glob[0], "sd z_n": np.exp(r.log_sigma).mean(), "sd theta": np.exp(r.glob[1])}
     for r in fits]
    + [{"family": "exact", "err": "0", "E theta": exact["mean_theta"],
        "sd z_n": float(exact["var_z"].mean()) ** 0.5, "sd theta": exact["var_theta"] ** 0.5}]))

# %% [markdown]
# Reading the table (numbers to 3 significant figures; `<1e-06` marks differences at the level
# of optimisation error):
#
# - **F-VI and affine A-VI reach the same optimum**: the same ELBO, an amortization gap of
#   zero, and posterior means of every $z_n$ and of $\theta$ equal to the exact ones.
# - **Their standard deviations are the mean-field ones**, below the exact marginal standard
#   deviations (last row of the second table). Both fits are equally wrong about the variance — a property of the
#   mean-field family, not of amortization. The distance to $\log p(x)$, the approximation gap,
#   is exactly $\mathrm{KL}(q^* \,\|\, p(\cdot\mid x)) = \tfrac12 \log\!\big(v_\theta\,(1/10^2 + N/\sigma^2)\big)$
#   in total, here a few thousandths of a nat per datapoint.
# - **Constant-VI is strictly worse**, by more than a nat per datapoint: one mean for all $z_n$
#   cannot follow the data. What it can get right, it does: setting the ELBO's derivatives to
#   zero shows that its $q(\theta)$ mean is exactly $m_\theta$ and its shared $\mu$ is the
#   average of the exact $\mathbb{E}[z_n \mid x]$ (see the `E theta` column),
#   and its variances are the mean-field ones. The whole loss is in the means of the $z_n$.

# %%
means_figure(res)

# %% [markdown]
# In the left panel the F-VI means (circles, one free number per datapoint) lie on the exact
# posterior mean function (wide grey line), and so does the affine encoder (orange line). The
# encoder is drawn on a grid that extends a quarter of the data's range beyond the data on both
# sides: it is a function, and it is right there too. That is the interpolation problem solved
# for free — the encoder class contains the ideal inference function, so fitting it at $N$
# points pins it down everywhere:

# %%
grid = torch.linspace(-15.0, 20.0, 351, dtype=torch.float64)[:, None]   # far beyond the data
mu_grid, log_sd_grid = res["amortized"].encoder(grid)
ideal = exact["ideal_slope"] * grid[:, 0] + exact["ideal_intercept"]
print("affine encoder g on x in [-15, 20] vs the ideal inference function")
print(tf.format_table([{
    "slope a": float((mu_grid[-1] - mu_grid[0]) / (grid[-1, 0] - grid[0, 0])),
    "tau / V": exact["ideal_slope"],
    "max mean error": float((mu_grid - ideal).abs().max()),
    "max log-sd error": float((log_sd_grid - exact["ideal_log_sigma"]).abs().max()),
}]))

# %% [markdown]
# The normal-normal model is the friendly case: the ideal inference function is affine, so the
# smallest sensible encoder closes the amortization gap and generalises exactly. The chapter on
# when amortization can close the gap looks at the two ways this can fail — an ideal function
# too complex for the encoder (a *capacity* problem, which width fixes), and no ideal function
# of the encoder's input at all (a *domain* problem, which no width fixes).
