"""The results chapter's conclusions, each a sentence with the predicate that must hold on the
evidence table for the sentence to be printed (see ``claims``). They describe the ``quick``
profile's likelihood-scale study; a rerun that contradicts one stops the chapter with the
false sentences named."""
from __future__ import annotations

import pandas as pd

from ..config import DATASETS
from .claims import Claim
from .compare import GROUP, baselines, convergence, match_summary, study_table, RUN_KEYS

WIDE = ["A-VI k=16", "A-VI k=64", "A-VI k=256"]


def evidence_table(res: dict) -> pd.DataFrame:
    """Study table (means over surviving seeds) joined with the paired comparison to F-VI
    (``gap_nats``, ``matches``, speed-ups at the absolute and the relative tolerance)."""
    study = study_table(res, gap=res.get("gap"))
    conv = convergence(res["metrics"], baselines(res))
    runs = res["runs"].merge(conv[RUN_KEYS + ["epochs_to_abs", "epochs_to_rel"]], on=RUN_KEYS)
    m_abs = match_summary(runs, speed_col="epochs_to_abs")
    m_rel = match_summary(runs, speed_col="epochs_to_rel")[GROUP + ["config", "speedup", "speedup_min"]]
    m = m_abs.merge(m_rel.rename(columns={"speedup": "speedup_rel", "speedup_min": "speedup_rel_min"}),
                    on=GROUP + ["config"])
    return study.merge(m.drop(columns=["seeds"]), on=GROUP + ["config"], how="left")


def _rows(t, setting, configs=None, dataset=None):
    r = t[t["setting"] == setting]
    if configs is not None:
        r = r[r["config"].isin(configs)]
    if dataset is not None:
        r = r[r["dataset"] == dataset]
    if r.empty:
        raise KeyError(f"no rows for {setting} {configs} {dataset}")
    return r


def _both(rows):
    """``rows``, which must cover both datasets (for a sentence that says "on both datasets")."""
    missing = set(DATASETS) - set(rows["dataset"])
    if missing:
        raise KeyError(f"no rows for {', '.join(sorted(missing))}")
    return rows


def _all(series) -> bool:
    return bool(series.notna().all() and series.astype(bool).all())


FINDINGS = [
    Claim("At Gaussian σ = 1 on MNIST the latent variable is hardly used: "
          "every configuration ends with a training MSE within 10% of the mean-image MSE, and every one, "
          "constant-VI included, ends within 0.5 nats per image of F-VI's ELBO. A-VI \"matches\" F-VI "
          "there because no family needs to infer anything.",
          lambda t: _all(_rows(t, "Gaussian σ=1", dataset="mnist")["mse_train_rel"].between(0.9, 1.1))
          and _all(_rows(t, "Gaussian σ=1", dataset="mnist")["gap_nats"].abs() < 0.5)),
    Claim("At σ = 1, constant-VI, which cannot tell one image from another, passes the tolerance "
          "of jordandeklerk/Amortized-Bayes (train MSE < 0.07) on MNIST: that tolerance measures how fast the decoder learns the "
          "mean image, not inference.",
          lambda t: _all(_rows(t, "Gaussian σ=1", ["constant-VI"], "mnist")["epochs_to_abs"].notna())),
    Claim("Fashion-MNIST's images vary more (mean-image MSE 0.087 against MNIST's 0.066): there, even at "
          "σ = 1, F-VI uses its latent and ends with less than 60% of the mean-image error, while "
          "constant-VI stays at the mean image.",
          lambda t: _all(_rows(t, "Gaussian σ=1", ["F-VI"], "fashion_mnist")["mse_train_rel"] < 0.6)
          and _all(_rows(t, "Gaussian σ=1", ["constant-VI"], "fashion_mnist")["mse_train_rel"] > 0.98)),
    Claim("At σ = 0.1 the latent matters: constant-VI stays at the mean image (train MSE within 2% of it, "
          "no active unit), while F-VI and A-VI with k ≥ 16 reconstruct training images with less than "
          "45% of the mean-image error and use every latent dimension.",
          lambda t: _all(_rows(t, "Gaussian σ=0.1", ["constant-VI"])["mse_train_rel"].between(0.98, 1.02))
          and _all(_rows(t, "Gaussian σ=0.1", ["constant-VI"])["active_units"] == 0)
          and _all(_rows(t, "Gaussian σ=0.1", ["F-VI"] + WIDE)["mse_train_rel"] < 0.45)
          and _all(_rows(t, "Gaussian σ=0.1", ["F-VI", "A-VI k=16", "A-VI k=64"])["active_units"] >= 15.5)),
    Claim("At σ = 0.1, an encoder with one hidden unit (k = 1) ends more than 100 nats per image behind "
          "F-VI on both datasets.",
          lambda t: _all(_both(_rows(t, "Gaussian σ=0.1", ["A-VI k=1"]))["gap_nats"] > 100)),
    Claim("At σ = 0.1, after the same 800 epochs at the same learning rate, A-VI with k ≥ 16 ends with a "
          "better ELBO than jointly trained F-VI on both datasets. That lead is an optimisation artifact of "
          "this budget, not an advantage of amortization: for a fixed decoder the F-VI family contains every "
          "A-VI solution, so F-VI at its optimum can only do better; its per-image parameters, each updated "
          "from one image, are still far from that optimum here.",
          lambda t: _all(_both(_rows(t, "Gaussian σ=0.1", WIDE))["gap_nats"] < 0)),
    Claim("At σ = 0.1, A-VI with k ≥ 16 reaches the tolerance that needs the latent (train MSE below 90% "
          "of the mean-image MSE) at least 3 times faster in epochs than F-VI, on both datasets.",
          lambda t: _all(_both(_rows(t, "Gaussian σ=0.1", WIDE))["speedup_rel"] >= 3)),
    Claim("At σ = 0.3 on MNIST, where F-VI has had time to catch up, A-VI with k ≥ 16 ends 1 to 5 nats "
          "per image behind F-VI: there the amortization gap shows in the ELBO, and no width tried closes it.",
          lambda t: _all(_rows(t, "Gaussian σ=0.3", WIDE, "mnist")["gap_nats"].between(1, 5))),
    Claim("With the Bernoulli likelihood on MNIST, A-VI with k ≥ 64 ends better than F-VI, and k = 1 more "
          "than 30 nats per image behind it.",
          lambda t: _all(_rows(t, "Bernoulli", ["A-VI k=64", "A-VI k=256"], "mnist")["gap_nats"] < 0)
          and _all(_rows(t, "Bernoulli", ["A-VI k=1"], "mnist")["gap_nats"] > 30)),
    Claim("On training images the amortization gap at σ = 0.1 narrows as the encoder widens (k = 1 to "
          "k = 64), and on test images it is larger than on training images for every A-VI width: "
          "encoders fitted to 1,000 images generalise imperfectly.",
          lambda t: all(_rows(t, "Gaussian σ=0.1", ["A-VI k=1"], ds)["gap_train"].iloc[0]
                        > _rows(t, "Gaussian σ=0.1", ["A-VI k=64"], ds)["gap_train"].iloc[0]
                        for ds in t["dataset"].unique())
          and _all(_rows(t, "Gaussian σ=0.1", ["A-VI k=1"] + WIDE).eval("gap_test > gap_train"))),
    Claim("Training is not always stable at this learning rate (0.01, ten times the reference codes'): on "
          "Fashion-MNIST the widest encoder (A-VI k = 256) diverged (NaN) or blew up (its negative ELBO ran "
          "off to more than ten times its scale) in at least one seed of every likelihood setting, and in "
          "every seed with the Bernoulli likelihood. Such runs are listed with their epoch and left out of "
          "every mean and verdict. The paper profile uses their 0.001.",
          lambda t: _all(_rows(t, "Gaussian σ=0.1", ["A-VI k=256"], "fashion_mnist").eval("diverged + blew_up") >= 1)
          and _all(_rows(t, "Gaussian σ=0.3", ["A-VI k=256"], "fashion_mnist").eval("diverged + blew_up") >= 1)
          and _all(_rows(t, "Gaussian σ=1", ["A-VI k=256"], "fashion_mnist").eval("diverged + blew_up") >= 1)
          and _all(_rows(t, "Bernoulli", ["A-VI k=256"], "fashion_mnist")["seeds"] == 0)),
]
