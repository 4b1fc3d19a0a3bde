r"""How much the learning rate decides the comparison: the same sweep at several Adam learning
rates (and with F-VI's table given its own, ``local_lr``), read side by side.

Each setting is one results folder (``amortlib sweep ... --lr LR [--local-lr LR] --out DIR``).
``lr_table`` puts, per dataset, likelihood setting, learning-rate setting and configuration:

- ``neg_elbo`` (mean and sd over the live seeds; ``seeds`` live of ``of``, ``blew_up`` and
  ``diverged`` the others): the final logged negative ELBO, nats per image;
- ``gap_nats``: paired by seed, the configuration's negative ELBO minus F-VI's at the same
  setting (mean, min..max; negative: better than F-VI);
- ``still_falling``: how much the negative ELBO fell over the last eighth of the epochs, per
  100 epochs (``audit.plateau``; mean over live seeds): a run still falling has not reached its
  optimum, so a comparison with it holds *at this budget* only;
- ``speedup``: F-VI's epochs to train MSE < 0.07 over the configuration's, per seed (mean);
  NaN where either never reaches it; ``reached``: the live seeds that reached that tolerance
  within the budget.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import excluded
from .claims import Claim
from .compare import GROUP, baselines, convergence, match_summary

#: The learning-rate settings of the study: (folder name, lr, local_lr or None). The
#: ``lr_0_01`` setting holds the quick profile's sigma 0.1 units as published before F-VI's
#: table got its own rate (lr 0.01 everywhere, 3 seeds, torch's default threads); the folders live in
#: ``results/published/lr_study/`` (names without dots: they are package data too).
LR_SETTINGS = [("lr_0_001", 1e-3, None), ("lr_0_003", 3e-3, None), ("lr_0_01", 1e-2, None),
               ("lr_0_01_local_0_1", 1e-2, 0.1)]
SETTING = ["lr", "local_lr"]


def _setting(res: dict) -> tuple[float, float]:
    cfgs = {(m["config"]["lr"], m["config"].get("local_lr")) for m in res["meta"].values()}
    if len(cfgs) != 1:
        raise ValueError(f"results in {res['folder']} mix learning rates {sorted(cfgs)}: expected one setting a folder")
    lr, local = cfgs.pop()
    return float(lr), float(lr if local is None else local)


def lr_table(results: list[dict], speed_col: str = "epochs_to_abs") -> pd.DataFrame:
    """One row per dataset, likelihood setting, (lr, local_lr) and configuration, over the loaded
    results folders ``results`` (``load_results``; one learning-rate setting each). Only the
    dataset/likelihood settings present in every folder are compared."""
    from ..train.audit import plateau
    if not results:
        raise ValueError("results=[] is invalid: expected one or more loaded results folders")
    common = set.intersection(*(set(map(tuple, r["runs"][GROUP].drop_duplicates().to_numpy())) for r in results))
    rows = []
    for res in results:
        lr, local = _setting(res)
        conv = convergence(res["metrics"], baselines(res))
        runs = res["runs"].merge(conv[["dataset", "likelihood", "sigma", "family", "width", "seed", speed_col]],
                                 on=["dataset", "likelihood", "sigma", "family", "width", "seed"], how="left")
        runs = runs[[tuple(k) in common for k in runs[GROUP].to_numpy()]]
        match = match_summary(runs, speed_col=speed_col)
        live = runs[~excluded(runs)]
        g = live.groupby(GROUP + ["config"], sort=False)
        stats = g.agg(neg_elbo=("neg_elbo", "mean"), neg_elbo_sd=("neg_elbo", "std"),
                      reached=(speed_col, "count")).reset_index()
        dead = runs.groupby(GROUP + ["config"], sort=False)[["blew_up", "diverged"]].sum().reset_index()
        falls = []
        for key, m in res["metrics"].groupby(GROUP, sort=False):
            if tuple(key) not in common:
                continue
            keep = live[(live[GROUP] == pd.Series(dict(zip(GROUP, key)))).all(axis=1)][["config", "seed"]]
            p = plateau(m).merge(keep, on=["config", "seed"])
            f = p.groupby("config", sort=False)["drop_per_100_epochs"].mean().rename("still_falling").reset_index()
            falls.append(f.assign(**dict(zip(GROUP, key))))
        fall = pd.concat(falls, ignore_index=True) if falls else pd.DataFrame(columns=GROUP + ["config", "still_falling"])
        t = (match[GROUP + ["config", "gap_nats", "gap_nats_min", "gap_nats_max", "speedup", "seeds", "of"]]
             .merge(stats, on=GROUP + ["config"], how="left")
             .merge(dead, on=GROUP + ["config"], how="left")
             .merge(fall, on=GROUP + ["config"], how="left"))
        rows.append(t.assign(lr=lr, local_lr=local))
    out = pd.concat(rows, ignore_index=True)
    out[["blew_up", "diverged", "reached"]] = out[["blew_up", "diverged", "reached"]].fillna(0).astype(int)
    order = {c: i for i, c in enumerate(dict.fromkeys(out["config"]))}
    out = out.sort_values(GROUP + SETTING + ["config"],
                          key=lambda s: s.map(order) if s.name == "config" else s, ignore_index=True)
    cols = GROUP + SETTING + ["config", "neg_elbo", "neg_elbo_sd", "gap_nats", "gap_nats_min", "gap_nats_max",
                              "still_falling", "speedup", "reached", "seeds", "of", "blew_up", "diverged"]
    return out[cols]


def load_lr_study(root: Path, base: Path | None = None) -> list[dict]:
    """The loaded results folders of the study under ``root`` (one per ``LR_SETTINGS`` name that
    exists there), with ``base`` for the ``lr_0_01`` setting when given."""
    from ..results import ResultsError, load_results
    root = Path(root)
    folders = [base if (name == "lr_0_01" and base is not None) else root / name for name, _, _ in LR_SETTINGS]
    found = [f for f in folders if f is not None and (Path(f) / "units").is_dir()]
    if not found:
        raise ResultsError(f"no learning-rate study under {root}: expected folders "
                           + ", ".join(n for n, _, _ in LR_SETTINGS))
    return [load_results(f) for f in found]


def fvi_falls(table: pd.DataFrame) -> pd.Series:
    """Per (dataset, likelihood setting, lr, local_lr): F-VI's ``still_falling``."""
    f = table[table["config"] == "F-VI"].set_index(GROUP + SETTING)["still_falling"]
    return f.astype(float).replace([np.inf, -np.inf], np.nan)


# ---------------------------------------------------------------- what the study says
def _rows(t: pd.DataFrame, dataset: str | None = None, lr: float | None = None, local_lr: float | None = None,
          configs=None) -> pd.DataFrame:
    r = t
    if dataset is not None:
        r = r[r["dataset"] == dataset]
    if lr is not None:
        r = r[np.isclose(r["lr"], lr)]
    r = r[np.isclose(r["local_lr"], r["lr"] if local_lr is None else local_lr)]
    if configs is not None:
        r = r[r["config"].isin(configs)]
    if r.empty:
        raise KeyError(f"no rows for dataset={dataset} lr={lr} local_lr={local_lr} configs={configs}")
    return r


def _one(t, column, **where):
    r = _rows(t, **{k: v for k, v in where.items() if k != "config"}, configs=[where["config"]])
    if len(r) != 1:
        raise KeyError(f"{len(r)} rows match {where}")
    return float(r[column].iloc[0])


WIDE = ["A-VI k=16", "A-VI k=64", "A-VI k=256"]
DATASETS = ("mnist", "fashion_mnist")
LRS = (1e-3, 3e-3, 1e-2)


def _lead_grows_as_lr_falls(t) -> bool:
    for ds in DATASETS:
        for cfg in WIDE:
            gaps = [_one(t, "gap_nats", dataset=ds, lr=lr, config=cfg) for lr in LRS]
            if not (gaps[0] < gaps[1] < gaps[2] < 0):
                return False
    return True


LR_FINDINGS = [
    Claim("No F-VI run of the study reached its optimum: at every learning rate, on both datasets, "
          "F-VI's negative ELBO still fell by more than 10 nats per image per 100 epochs over its last "
          "eighth of training. Every comparison on this page holds at this budget (800 full-batch epochs) only.",
          lambda t: all(len(_rows(t, dataset=ds, lr=lr, configs=["F-VI"])) for ds in DATASETS for lr in LRS)
          and bool((t.loc[t["config"] == "F-VI", "still_falling"] > 10).all())),
    Claim("A-VI's lead over F-VI is set by the learning rate: for every width from 16 on, on both datasets, "
          "A-VI ends further ahead of F-VI at lr 0.001 than at 0.003, and at 0.003 than at 0.01 (on MNIST at "
          "k = 64 by about 1,400, 800 and 110 nats per image). A lead of A-VI at a fixed budget measures how "
          "far F-VI's per-image parameters could travel at that rate, not what the families can reach.",
          lambda t: _lead_grows_as_lr_falls(t)
          and 1300 < -_one(t, "gap_nats", dataset="mnist", lr=1e-3, config="A-VI k=64") < 1550
          and 700 < -_one(t, "gap_nats", dataset="mnist", lr=3e-3, config="A-VI k=64") < 900
          and 90 < -_one(t, "gap_nats", dataset="mnist", lr=1e-2, config="A-VI k=64") < 130),
    Claim("The speed-up to the Amortized-Bayes tolerance (train MSE < 0.07) is a property of the learning rate "
          "too: on MNIST, A-VI at k = 64 gets there about 6 times faster than F-VI at lr 0.001, about 5 times at "
          "0.003 and about 2 times at 0.01; on Fashion-MNIST F-VI does not reach it within the budget at lr 0.001 "
          "or 0.003 in any seed, so there is no speed-up to quote there.",
          lambda t: 5.5 < _one(t, "speedup", dataset="mnist", lr=1e-3, config="A-VI k=64") < 7
          and 4 < _one(t, "speedup", dataset="mnist", lr=3e-3, config="A-VI k=64") < 5.5
          and 1.5 < _one(t, "speedup", dataset="mnist", lr=1e-2, config="A-VI k=64") < 2.5
          and all(_one(t, "reached", dataset="fashion_mnist", lr=lr, config="F-VI") == 0 for lr in (1e-3, 3e-3))),
    Claim("The widest encoder's instability on Fashion-MNIST comes with the learning rate: at lr 0.01, "
          "A-VI k = 256 blew up or diverged in 2 of its 3 seeds; at lr 0.001 and 0.003 all 3 seeds trained "
          "to the end. Lowering the rate is the control that keeps it stable, at the price of a slower descent "
          "for every family.",
          lambda t: _one(t, "seeds", dataset="fashion_mnist", lr=1e-2, config="A-VI k=256") == 1
          and _one(t, "of", dataset="fashion_mnist", lr=1e-2, config="A-VI k=256") == 3
          and all(_one(t, "seeds", dataset="fashion_mnist", lr=lr, config="A-VI k=256") == 3 for lr in (1e-3, 3e-3))
          and all(_one(t, "blew_up", dataset="fashion_mnist", lr=lr, config="A-VI k=256")
                  + _one(t, "diverged", dataset="fashion_mnist", lr=lr, config="A-VI k=256") == 0 for lr in (1e-3, 3e-3))),
    Claim("Given its own learning rate for its table of q(z_n) (0.1; the decoder and the encoders keep 0.01), "
          "F-VI ends ahead of every A-VI width from 16 on, on both datasets and in every seed: on MNIST by 40 to "
          "100 nats per image, on Fashion-MNIST by 60 to 190. That is what theory demands for a fixed decoder, "
          "and it shows the A-VI lead at lr 0.01 was F-VI's optimisation shortfall, not a property of "
          "amortization. A-VI's speed-up to the tolerance falls to between 1.2 and 2.5 times there, and F-VI "
          "still falls by 5 to 20 nats per 100 epochs: even this F-VI is not at its optimum.",
          lambda t: all(_rows(t, dataset=ds, lr=1e-2, local_lr=0.1, configs=WIDE)["gap_nats_min"].gt(lo).all()
                        and _rows(t, dataset=ds, lr=1e-2, local_lr=0.1, configs=WIDE)["gap_nats_max"].lt(hi).all()
                        for ds, lo, hi in (("mnist", 40, 100), ("fashion_mnist", 60, 190)))
          and all(1.2 < _one(t, "speedup", dataset=ds, lr=1e-2, local_lr=0.1, config="A-VI k=64") < 2.5
                  for ds in DATASETS)
          and all(5 < _one(t, "still_falling", dataset=ds, lr=1e-2, local_lr=0.1, config="F-VI") < 20
                  for ds in DATASETS)),
    Claim("The two lr 0.01 settings come from separate runs: the quick profile's earlier runs, with F-VI's "
          "table at lr 0.01 too (torch's default thread count), and the study's (one thread). A-VI and constant-VI, which F-VI's table rate does not "
          "touch (in one run they are bit for bit the same with either rate), end within 5 nats per image of "
          "themselves between the two, within 2 nats from width 16 on: a thread count changes the last digits "
          "of float sums and 800 epochs amplify them. Differences of that size are run-to-run noise here, far "
          "below those above.",
          lambda t: all(abs(_one(t, "neg_elbo", dataset=ds, lr=1e-2, config=c)
                            - _one(t, "neg_elbo", dataset=ds, lr=1e-2, local_lr=0.1, config=c)) < (2 if c in WIDE else 5)
                        for ds in DATASETS for c in ["A-VI k=1", *WIDE, "constant-VI"])),
]
