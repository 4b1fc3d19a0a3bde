"""The one-pass sweep engine: equal to training each model alone, deterministic, and robust to a
diverging model."""
import math

import pandas as pd
import pytest
import torch

from amortlib import SweepConfig
from amortlib.train import run_sweep

VALUE_COLS = ["neg_elbo", "mse_train", "mse_test"]


def _data(n=60, n_test=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 784, generator=g), torch.rand(n_test, 784, generator=g)


def _cfg(**kw):
    base = dict(n_obs=60, n_test=20, z_dim=3, like_dim=8, widths=(1, 6), seeds=(0, 1), epochs=25,
                eval_points=6, fit_steps=12, sigma=0.5, progress=False, device="cpu")
    return SweepConfig(**{**base, **kw})


def _values(metrics):
    return metrics.set_index(["config", "seed", "epoch"])[VALUE_COLS].sort_index()


@pytest.mark.parametrize("batch_size", [None, 25])
def test_sweep_equals_training_each_model_alone(batch_size):
    x, xt = _data()
    cfg = _cfg(batch_size=batch_size)
    joint = _values(run_sweep(cfg, x, xt, calibrate_steps=0).metrics)
    alone = []
    for fam in cfg.families:
        for w in (cfg.widths if fam == "amortized" else (None,)):
            for s in cfg.seeds:
                c = cfg.replace(families=(fam,), widths=(w,) if w else (), seeds=(s,))
                alone.append(run_sweep(c, x, xt, calibrate_steps=0).metrics)
    alone = _values(pd.concat(alone))
    assert len(joint) == len(alone) == 4 * 2 * len(joint.index.get_level_values("epoch").unique())
    pd.testing.assert_frame_equal(joint, alone, rtol=1e-5, atol=0)


def test_same_config_and_seed_give_identical_numbers():
    x, xt = _data()
    a = run_sweep(_cfg(), x, xt, calibrate_steps=0).metrics
    b = run_sweep(_cfg(), x, xt, calibrate_steps=0).metrics
    pd.testing.assert_frame_equal(a[VALUE_COLS], b[VALUE_COLS], rtol=0, atol=0)
    c = run_sweep(_cfg(seeds=(5, 1)), x, xt, calibrate_steps=0).metrics
    assert not a[a.seed == 0][VALUE_COLS].reset_index(drop=True).equals(
        c[c.seed == 5][VALUE_COLS].reset_index(drop=True))


def test_a_diverging_model_is_marked_and_the_others_finish_unchanged():
    x, xt = _data()
    cfg = _cfg()
    clean = run_sweep(cfg, x, xt, calibrate_steps=0)
    victim = [i for i, s in enumerate(clean.model.specs) if s.label == "A-VI k=6" and s.seed == 1][0]

    def poison(epoch, model):
        if epoch == 10:
            with torch.no_grad():
                model.decoder.m[victim, :5] = float("inf")

    hit = run_sweep(cfg, x, xt, calibrate_steps=0, callback=poison)
    m = hit.metrics
    bad = m[(m.config == "A-VI k=6") & (m.seed == 1)]
    assert bad["diverged"].iloc[-1] and not bad["diverged"].iloc[:-1].any()
    assert bad["epoch"].iloc[-1] == 11            # the first step after the poison
    assert math.isnan(bad["neg_elbo"].iloc[-1])
    run = hit.runs[(hit.runs.config == "A-VI k=6") & (hit.runs.seed == 1)].iloc[0]
    assert run["diverged"] and run["diverged_epoch"] == 11
    others = lambda df: _values(df[~((df.config == "A-VI k=6") & (df.seed == 1))])
    pd.testing.assert_frame_equal(others(m), others(clean.metrics), rtol=0, atol=0)


def test_metrics_frame_is_tidy():
    x, xt = _data()
    res = run_sweep(_cfg(), x, xt, calibrate_steps=1)
    m = res.metrics
    for col in ["dataset", "family", "width", "seed", "epoch", "neg_elbo", "mse_train", "mse_test",
                "wall_s", "diverged"]:
        assert col in m
    assert not m.duplicated(["config", "seed", "epoch"]).any()
    assert m.groupby(["config", "seed"]).size().nunique() == 1
    assert (m.wall_s > 0).all() and m.epoch.max() == 25 and m.epoch.min() == 1
    assert set(res.runs.config) == {"F-VI", "A-VI k=1", "A-VI k=6", "constant-VI"}
    assert {"epochs_to_tol", "seconds_to_tol", "active_units", "kl_z"} <= set(res.runs)


def test_warmup_raises_every_learning_rate_linearly_then_holds_it():
    from amortlib.train import StackedVAE
    from amortlib.train.sweep import warmup
    cfg = SweepConfig(n_obs=20, n_test=10, z_dim=2, like_dim=4, widths=(3,), seeds=(0,), epochs=8,
                      lr=0.01, local_lr=0.1, warmup_epochs=4, progress=False, device="cpu")
    model = StackedVAE(cfg)
    opts = model.optimizers(cfg.lr, local_lr=cfg.local_lr)
    base, seen = None, []
    for epoch in range(1, 8):
        base = warmup(opts, epoch, cfg, base)
        seen.append([g["lr"] for o in opts for g in o.param_groups])
    assert seen[0] == pytest.approx([0.0025, 0.025]) and seen[2] == pytest.approx([0.0075, 0.075])
    assert all(s == pytest.approx([0.01, 0.1]) for s in seen[3:])
    none = cfg.replace(warmup_epochs=0)
    opts = model.optimizers(none.lr, local_lr=none.local_lr)
    warmup(opts, 1, none)
    assert [g["lr"] for o in opts for g in o.param_groups] == [0.01, 0.1]


def test_cosine_decay_follows_the_warmup_down_to_zero_at_the_last_epoch():
    from amortlib.train.sweep import lr_scale
    cfg = SweepConfig(n_obs=20, n_test=10, epochs=12, warmup_epochs=4, lr_decay="cosine",
                      progress=False, device="cpu")
    s = [lr_scale(e, cfg) for e in range(1, 13)]
    assert s[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert s[4] == pytest.approx((1 + math.cos(math.pi / 8)) / 2) and s[7] == pytest.approx(0.5)
    assert s[-1] == pytest.approx(0.0) and all(a > b for a, b in zip(s[3:], s[4:]))
    assert [lr_scale(e, cfg.replace(lr_decay="none")) for e in (4, 5, 12)] == [1.0, 1.0, 1.0]
