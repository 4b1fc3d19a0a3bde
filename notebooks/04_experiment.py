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
# # The experiment
#
# [![Open in Colab](../book/_static/open-in-colab.svg)](https://colab.research.google.com/github/amortlib/amortized-vi-book/blob/v0.1.0/notebooks/04_experiment.ipynb)
#
# This notebook is the unit of work of the sweep: `amortlib sweep` executes it with
# [papermill](https://papermill.readthedocs.io) once per dataset and likelihood setting, and keeps
# every executed copy under `results/<profile>/runs/` as the record of what ran.
# Run as it stands, it trains the tiny `test` profile in a few seconds and saves nothing.
#
# One call trains **every** model of the unit at once: F-VI, A-VI at each encoder width and
# constant-VI, for every seed, stacked along a leading model axis and updated by one optimiser
# step (see {doc}`03_bayesian_vae`).
#
# To run one unit yourself, give papermill the parameters of the next cell. Lists take JSON
# from `-p`, or YAML from `-y`; with `output` (a results folder) and `unit`, the unit is saved
# there as the sweep saves it, with its provenance (amortlib version, git commit, a digest of
# the installed packages, the data files' SHA-256):
#
# ```bash
# papermill notebooks/04_experiment.ipynb out.ipynb -p profile quick -p dataset fashion_mnist \
#     -p widths '[1, 16]' -p seeds '[0, 1]' -p output results/mine -p unit fashion_mnist-gaussian-s0.1
# papermill notebooks/04_experiment.ipynb out.ipynb -y 'widths: [1, 16]'
# ```

# %%
# In Colab: install amortlib (with the book's chapters and published results) at this book's
# release and let widgets draw; elsewhere this does nothing.
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "amortlib @ git+https://github.com/amortlib/amortized-vi-book@v0.1.0"], check=True)
    from google.colab import output
    output.enable_custom_widget_manager()

# %% tags=["parameters"]
_names_before = set(globals())
profile = "test"      # quick | paper | test: the defaults for everything left as None
dataset = "mnist"     # mnist | fashion_mnist
widths = None         # encoder widths k of A-VI, e.g. [1, 16, 64, 256]
seeds = None          # e.g. [0, 1, 2]
epochs = None
n_obs = None          # training images (the first n of the split)
z_dim = None
like_dim = None
lr = None
n_test = None         # test images
precision = None      # fp32 | bf16
device = None         # auto | cpu | cuda
likelihood = None     # gaussian | bernoulli
sigma = None          # scale of the Gaussian likelihood
output = None         # results folder to write; None: show the results, save nothing
unit = None           # file stem of this unit inside `output`

# %% [markdown]
# The parameters are checked before anything trains: an unknown name or a bad value stops
# here with a message naming the parameter and what it accepts.

# %%
params = {k: v for k, v in globals().items() if k not in _names_before and not k.startswith("_")}
from amortlib.experiment import experiment_config

cfg, output, unit = experiment_config(params)
cfg

# %% tags=["nbval-ignore-output"]
from amortlib.train import run_sweep

result = run_sweep(cfg)
print(f"{result.info['n_models']} models, {cfg.epochs} epochs: "
      f"{result.info['train_seconds']:.1f} s training on {result.info['device']}")

# %% [markdown]
# Per configuration, the mean and standard deviation over seeds of the final negative ELBO
# (nats per image), the reconstruction error at the posterior means on training and test
# images, and the epochs to reach the tolerance of jordandeklerk/Amortized-Bayes (train MSE <
# `tol`, 0.07 by default).

# %% tags=["summary"]
from amortlib.metrics import summary_table

table = summary_table(result.runs)
table[["config", "neg_elbo_mean", "neg_elbo_std", "mse_train_mean", "mse_test_mean",
       "epochs_to_tol_mean"]].round(3)

# %% [markdown]
# The amortization gap of every model with an inference function (see {doc}`06_measuring_the_gap`):
# per image, the ELBO that F-VI reaches when it refines the model's q(z) with the decoder
# frozen, minus the ELBO of the model's own q(z), in nats; mean over images, training and
# test split.

# %%
from amortlib.gap import gap_table

gap = gap_table(result, n_images=min(200, cfg.n_obs, cfg.n_test))
gap.pivot_table(index="config", columns="split", values="gap_mean", sort=False).round(1)

# %% [markdown]
# The final numbers, re-estimated: the training loss above is a one-draw estimate at the last
# step. Per model, the ELBO per image with 100 draws of (z, theta) and its standard error on
# training and test images (F-VI's test images through q* fitted with the decoder frozen), and
# the test log-likelihood by IWAE with K = 1000 (`amortlib.gap.final_evaluation`); means over
# seeds here, every model in the saved table.

# %%
from amortlib.gap import final_evaluation

final = final_evaluation(result, n_images=min(200, cfg.n_obs, cfg.n_test))
final.groupby("config", sort=False)[["elbo_train", "elbo_test", "test_loglik"]].mean().round(1)

# %% [markdown]
# Is F-VI at its optimum? The referee's checks (`amortlib.train.fvi_audit`), per seed: F-VI is
# trained once more, warm-started from that seed's best A-VI model (its decoder, and its
# encoder's q(z_n) as F-VI's table), with the same optimiser and epochs. For a fixed decoder
# F-VI's family holds every A-VI solution, so the warm start must end at least as good as its
# source (`warm_vs_source` >= 0); how far the F-VI run of the sweep ends below the warm start
# (`shortfall`, nats per image, with its standard error) shows how far it is from a point its
# own family reaches (from a better start, after its source's epochs: positive means the run
# is not at its family's best). `refine_gain`: what a frozen-decoder refit of F-VI's q(z_n)
# still gains; `*_still_falling`: the drop of the loss per 100 epochs at the end.

# %%
from amortlib.train import fvi_audit

audit = fvi_audit(result, n_images=min(200, cfg.n_obs)) if {"factorized", "amortized"} <= set(cfg.families) else None
None if audit is None else audit[["seed", "source", "elbo_fvi", "elbo_warm", "warm_vs_source", "shortfall",
                                  "refine_gain", "fvi_still_falling", "warm_still_falling"]].round(2)

# %%
if output is not None:
    from amortlib.provenance import record
    from amortlib.results import save_unit

    result.info["provenance"] = record(cfg)   # version, commit, dependencies, data checksums
    path = save_unit(result, output, unit, recon=result.reconstructions(), tables={"gap": gap, "final": final,
                     **({"audit": audit} if audit is not None else {})})
    print("saved", path.name)
