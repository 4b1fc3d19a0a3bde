"""F-VI's local optimiser at the quick scale: which setting brings F-VI near its optimum?

MNIST, Gaussian sigma = 0.1, 1,000 images, d = 16, decoder width 64, full batch, lr 0.01 (the
``quick`` profile), one seed, F-VI alone, for each candidate:

  lr             the published setting: Adam lr 0.01 for the decoder and the F-VI table
  local_lr X     ``SweepConfig.local_lr``: the table's own Adam learning rate
  inner K        K extra Adam steps on the table alone (decoder frozen) after every joint step

and, as the referee's reference, A-VI k=64 and F-VI warm-started from it (``warm_start_fvi``).
Per run it prints: the last epoch's one-draw negative ELBO and its drop over the last 100
epochs, the train ELBO with 100 draws of (z, theta) and its standard error
(``gap.final_evaluation``), the refinement gain (``train.refinement_gain``: nats per image a
frozen-decoder fit of q(z_n) still finds), the local-gradient certificate and the wall time.
Wall times on a shared machine vary by 2x between identical runs; the candidates that change
only a learning rate cost the same per epoch.

    OMP_NUM_THREADS=1 python benchmarks/fvi_local_optimiser.py [--epochs 800]
"""
from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from amortlib import SweepConfig, data
from amortlib.gap import final_evaluation
from amortlib.objective import NoiseSource
from amortlib.train import (StackedVAE, SweepResult, local_gradient, refinement_gain,
                            run_sweep, train_step, warm_start_fvi)

CANDIDATES = [("lr 0.01", None, 0), ("local_lr 0.03", 0.03, 0), ("local_lr 0.1", 0.1, 0),
              ("local_lr 0.3", 0.3, 0), ("inner 3", None, 3)]


def train_fvi(cfg, x, inner: int):
    """F-VI alone, full batch; ``inner`` extra table-only steps per epoch."""
    model = StackedVAE(cfg)
    opts = model.optimizers(cfg.lr, cfg.weight_decay, cfg.local_lr)
    noise = NoiseSource(model.seeds, x.device)
    alive = torch.ones(1, dtype=torch.bool)
    idx = torch.arange(cfg.n_obs)
    losses = []
    for _ in range(cfg.epochs):
        loss, alive = train_step(model, opts, x, idx, noise, alive, cfg)
        model.decoder.requires_grad_(False)
        for _ in range(inner):
            train_step(model, opts[1:], x, idx, noise, alive, cfg)
        model.decoder.requires_grad_(True)
        losses.append(float(loss[0]))
    return model, losses


def row(name, model, cfg, losses, wall, x, xt):
    res = SweepResult(cfg, pd.DataFrame(), pd.DataFrame(), model, x_test=xt)
    fe = final_evaluation(res, x_train=x, n_draws=100, iwae_k=0).iloc[0]
    out = dict(run=name, loss_last_epoch=losses[-1] if losses else float("nan"),
               drop_last_100=losses[-101] - losses[-1] if len(losses) > 100 else float("nan"),
               elbo_train=fe.elbo_train, elbo_train_se=fe.elbo_train_se, wall_s=wall)
    if model.specs[0].family == "factorized":
        xp = model.likelihood.prepare(x)
        g = refinement_gain(model, xp).iloc[0]
        c = local_gradient(model, xp).iloc[0]
        out.update(refine_gain=g.gain, refine_gain_se=g.gain_se, grad_rms=c.grad_rms,
                   noise_rms=c.noise_rms)
    print(out, flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=800)
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = dict(families=("factorized",), seeds=(0,), widths=(), progress=False, device="cpu",
                epochs=args.epochs)
    x, xt = data.load("mnist", "train", 1000), data.load("mnist", "test", 500)
    rows = []
    for name, local_lr, inner in CANDIDATES:
        cfg = SweepConfig.from_profile("quick", local_lr=local_lr, **base)
        t0 = time.perf_counter()
        model, losses = train_fvi(cfg, x, inner)
        rows.append(row(name, model, cfg, losses, time.perf_counter() - t0, x, xt))
    cfg = SweepConfig.from_profile("quick", families=("amortized",), widths=(64,), seeds=(0,),
                                   progress=False, device="cpu", epochs=args.epochs, eval_points=4)
    t0 = time.perf_counter()
    avi = run_sweep(cfg, x, xt, calibrate_steps=0)
    rows.append(row("A-VI k=64", avi.model, cfg, [], time.perf_counter() - t0, x, xt))
    for local_lr in (None, 0.1):
        t0 = time.perf_counter()
        w = warm_start_fvi(avi, "A-VI k=64", 0, x_train=x, local_lr=local_lr)
        rows.append(row(f"F-VI warm from A-VI k=64 (local_lr {local_lr or 'lr'})", w["model"],
                        w["config"], w["losses"], time.perf_counter() - t0, x, xt))
    print(pd.DataFrame(rows).round(2).to_string(index=False))


if __name__ == "__main__":
    main()
