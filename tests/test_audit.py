"""F-VI at its optimum and final numbers a reader can trust (amortlib.train.audit,
amortlib.gap.evaluate, SweepConfig.local_lr): the new option leaves default runs bit-identical
and moves only F-VI; the plateau and gradient certificates and the refinement gain read what
they should on the exact linear-Gaussian anchor (where the optimum is known); the warm start
begins at the A-VI solution and the final evaluation reproduces closed-form ELBOs and log p(x)."""
import pandas as pd
import pytest
import torch

from amortlib import SweepConfig, data
from amortlib.gap import encoder_q
from amortlib.gap.evaluate import FINAL_COLUMNS, final_evaluation
from amortlib.model import DiagGaussian
from amortlib.theory.ppca import PPCA, anchor_model, float64
from amortlib.train import run_sweep
from amortlib.train.audit import (AUDIT_COLUMNS, fvi_audit, local_gradient, losses_plateau, plateau,
                                  refinement_gain, warm_start_fvi)

N_SE = 3.0


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(**over):
    cfg = dict(n_obs=120, n_test=60, z_dim=3, like_dim=16, widths=(8,), seeds=(0,), epochs=30,
               lr=1e-2, sigma=0.3, eval_points=3, progress=False, device="cpu")
    return SweepConfig(**{**cfg, **over})


@pytest.fixture(scope="module")
def images():
    return data.load("mnist", "train", 120), data.load("mnist", "test", 60)


# --------------------------------------------------------------------------- local_lr
def test_local_lr_default_is_bit_identical_and_moves_only_fvi(images):
    x, xt = images
    base = run_sweep(_tiny(), x, xt, calibrate_steps=0).metrics
    same = run_sweep(_tiny(local_lr=1e-2), x, xt, calibrate_steps=0).metrics
    fast = run_sweep(_tiny(local_lr=5e-2), x, xt, calibrate_steps=0).metrics
    cols = ["neg_elbo", "mse_train", "mse_test"]
    pd.testing.assert_frame_equal(base[cols], same[cols])            # local_lr = lr is the default
    fvi = base.family == "factorized"
    pd.testing.assert_frame_equal(base.loc[~fvi, cols], fast.loc[~fvi, cols])   # others untouched
    assert (base.loc[fvi, "neg_elbo"].values != fast.loc[fvi, "neg_elbo"].values).any()


def test_local_lr_sets_the_table_optimizer_only():
    from amortlib.train import StackedVAE
    model = StackedVAE(_tiny(local_lr=0.3))
    dense, table = model.optimizers(1e-2, 0.0, 0.3)
    assert dense.param_groups[0]["lr"] == 1e-2 and table.param_groups[0]["lr"] == 0.3
    assert model.optimizers(1e-2)[1].param_groups[0]["lr"] == 1e-2


# --------------------------------------------------------------------------- plateau
def test_plateau_reads_the_drop_over_the_last_stretch():
    epochs = list(range(1, 101))
    rows = [dict(config="F-VI", seed=0, epoch=e, neg_elbo=1000.0 - 2 * e, diverged=False) for e in epochs]
    rows += [dict(config="A-VI k=8", seed=0, epoch=e, neg_elbo=10.0, diverged=False) for e in epochs]
    p = plateau(pd.DataFrame(rows), frac=0.2).set_index("config")
    assert p.loc["F-VI", "epoch_from"] == 80 and p.loc["F-VI", "epoch_to"] == 100
    assert p.loc["F-VI", "drop"] == pytest.approx(40.0)
    assert p.loc["F-VI", "drop_per_100_epochs"] == pytest.approx(200.0)
    assert p.loc["A-VI k=8", "drop"] == 0.0
    lp = losses_plateau([float(v) for v in range(100, 0, -1)], 0.5)      # falls 1 nat an epoch
    assert (lp["epoch_from"], lp["drop"], lp["drop_per_100_epochs"]) == (50, 50.0, 100.0)
    with pytest.raises(ValueError, match="frac"):
        plateau(pd.DataFrame(rows), frac=1.5)


# --------------------------------------------------------------------------- the anchor
@pytest.fixture(scope="module")
def anchor(images):
    """A small exact model: PPCA (d = 4) of 120 MNIST images, rotated; its ideal encoder and a
    wrong one, as a float64 StackedVAE with an exactly linear decoder."""
    x, xt = images
    ppca = PPCA.fit(x, 4).rotated(1)
    A, c, ls = ppca.ideal_encoder()
    with float64():
        result = anchor_model(ppca, [(A, c, ls), (0.8 * A, 0.8 * c, ls + 0.3)], len(x))
    result.x_test = xt.double()
    return ppca, x.double(), xt.double(), result


def test_local_gradient_is_zero_at_the_optimum_and_the_true_gradient_elsewhere(anchor):
    ppca, x, _, result = anchor
    opt = ppca.mean_field_optimum(x)
    mu = opt["mu"] + 0.1 * torch.randn(opt["mu"].shape, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.float64)
    ls = opt["log_sigma"] + 0.3
    q = DiagGaussian(torch.stack([opt["mu"], mu]), torch.stack([opt["log_sigma"], ls]))
    with float64():
        g = local_gradient(result.model, x, q, n_draws=64)
    # the exact per-image gradient of the closed-form ELBO at the perturbed q
    mu_, ls_ = mu.clone().requires_grad_(True), ls.clone().requires_grad_(True)
    gm, gl = torch.autograd.grad(ppca.elbo(x, mu_, ls_).sum(), (mu_, ls_))
    exact = float((gm.square().sum(1) + gl.square().sum(1)).mean().sqrt())
    assert g.grad_rms[0] < 0.5 * g.noise_rms[0], g               # ~0 at q*, below the noise
    assert abs(g.grad_rms[1] - exact) < 0.05 * exact, (g, exact)  # the noise taken out
    assert exact > 5 * g.noise_rms[1], (g, exact)                 # it has teeth


def test_refinement_gain_is_the_closed_form_gap(anchor):
    ppca, x, _, result = anchor
    opt = ppca.mean_field_optimum(x)
    A, c, ls = ppca.ideal_encoder()
    closed_wrong = float((opt["elbo"] - ppca.elbo(x, 0.8 * (x @ A + c), ls + 0.3)).mean())
    with float64():
        r = refinement_gain(result.model, x, fit_options=dict(lr=0.02, n_mc=8), n_eval=64,
                            seed=0).set_index("seed")
    assert -0.05 - N_SE * r.gain_se[0] < r.gain[0] < N_SE * r.gain_se[0], r     # ideal: nothing
    assert closed_wrong > 5
    assert abs(r.gain[1] - closed_wrong) < 0.05 + N_SE * r.gain_se[1], (r, closed_wrong)


def test_final_evaluation_reproduces_the_closed_forms(anchor):
    ppca, x, xt, result = anchor
    with float64():
        fe = final_evaluation(result, x_train=x, n_draws=100, iwae_k=1000, n_theta=1)
    assert list(fe.columns) == FINAL_COLUMNS and len(fe) == 2
    ideal = fe.iloc[0]
    star_train = float(ppca.mean_field_optimum(x)["elbo"].mean())
    star_test = float(ppca.mean_field_optimum(xt)["elbo"].mean())
    assert abs(ideal.elbo_train + ideal.kl_theta_per_image - star_train) < N_SE * ideal.elbo_train_se
    assert abs(ideal.elbo_test - star_test) < N_SE * ideal.elbo_test_se       # the ideal encoder
    lp = float(ppca.log_evidence(xt).mean())                                 # generalises exactly
    assert ideal.test_loglik < lp + N_SE * ideal.test_loglik_se               # a lower bound,
    assert ideal.test_loglik > ideal.elbo_test                                # above the ELBO
    assert lp - ideal.test_loglik < 0.05, (lp, ideal.test_loglik)          # and close to it
    assert fe.iloc[1].elbo_test < ideal.elbo_test - 1                         # the wrong encoder


# --------------------------------------------------------------------------- real models
@pytest.fixture(scope="module")
def trained(images):
    x, xt = images
    cfg = _tiny(families=("factorized", "amortized"), epochs=60)
    return run_sweep(cfg, x, xt, calibrate_steps=0), x


@pytest.fixture(scope="module")
def trained2(images):
    """Two seeds and two widths, for the batched warm start and the audit."""
    x, xt = images
    cfg = _tiny(families=("factorized", "amortized"), widths=(2, 8), seeds=(0, 1), epochs=60)
    return run_sweep(cfg, x, xt, calibrate_steps=0), x


def test_warm_start_begins_at_the_avi_solution(trained):
    result, x = trained
    seen = {}

    def grab(epoch, model):
        seen["m"] = model.decoder.m.detach().clone()
        seen["table"] = model.families[0].table.detach().clone()

    w = warm_start_fvi(result, "A-VI k=8", 0, x_train=x, epochs=1, lr=1e-9, local_lr=1e-9,
                       callback=grab)
    pos = [i for i, s in enumerate(result.model.specs) if s.label == "A-VI k=8"][0]
    torch.testing.assert_close(seen["m"][0], result.model.decoder.m[pos].detach(), rtol=0, atol=1e-6)
    q = encoder_q(result.model, result.model.likelihood.prepare(x), [pos])
    rows = seen["table"].view(len(x), 1, 2, -1)
    torch.testing.assert_close(rows[:, 0, 0], q.mu[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(rows[:, 0, 1], q.log_sigma[0], rtol=0, atol=1e-6)
    assert w["config"].families == ("factorized",) and len(w["losses"]) == 1
    with pytest.raises(ValueError, match="config="):
        warm_start_fvi(result, "F-VI", 0, x_train=x)


def test_warm_started_fvi_ends_at_least_as_good_as_avi(trained):
    """The referee's check on a tiny sweep: many-draw train ELBOs with standard errors."""
    from amortlib.train import SweepResult
    result, x = trained
    w = warm_start_fvi(result, "A-VI k=8", 0, x_train=x, epochs=60)
    warm = SweepResult(w["config"], pd.DataFrame(), pd.DataFrame(), w["model"], x_test=result.x_test)
    a = final_evaluation(result, x_train=x, n_draws=20, iwae_k=0).set_index("config")
    b = final_evaluation(warm, x_train=x, n_draws=20, iwae_k=0).iloc[0]
    avi = a.loc["A-VI k=8"]
    assert b.elbo_train > avi.elbo_train - N_SE * (avi.elbo_train_se ** 2 + b.elbo_train_se ** 2) ** 0.5
    assert a.loc["F-VI"].fvi_test_steps > 0 and a.loc["A-VI k=8"].fvi_test_steps == 0


def test_warm_starts_of_several_seeds_train_side_by_side_as_each_alone(trained2):
    """One warm start per (config, seed) pair in one stack: each gets the numbers it gets alone."""
    result, x = trained2
    both = warm_start_fvi(result, ["A-VI k=8", "A-VI k=2"], [1, 0], x_train=x, epochs=5)
    assert both["sources"] == [("A-VI k=2", 0), ("A-VI k=8", 1)]     # in the stack's seed order
    for j, (config, seed) in enumerate(both["sources"]):
        alone = warm_start_fvi(result, config, seed, x_train=x, epochs=5)
        assert [row[j] for row in both["losses"]] == pytest.approx(alone["losses"], rel=1e-6)
        assert both["start"][j] == pytest.approx(alone["start"], rel=1e-6)
    with pytest.raises(ValueError, match="distinct seeds"):
        warm_start_fvi(result, ["A-VI k=8", "A-VI k=2"], [0, 0], x_train=x)


def test_fvi_audit_reads_each_seed_against_its_best_encoder(trained2):
    result, x = trained2
    a = fvi_audit(result, x_train=x, n_images=60, n_draws=20, epochs=40)
    assert list(a.columns) == AUDIT_COLUMNS and sorted(a["seed"]) == [0, 1]
    runs = result.runs
    for row in a.itertuples():
        avi = runs[(runs["seed"] == row.seed) & (runs["family"] == "amortized")]
        assert row.source == avi.sort_values("neg_elbo")["config"].iloc[0]
        # the paired differences are the differences of the ELBOs (same draws, same images)
        assert row.shortfall == pytest.approx(row.elbo_warm - row.elbo_fvi, abs=1e-6)
        assert row.warm_vs_source == pytest.approx(row.elbo_warm - row.elbo_source, abs=1e-6)
        assert row.shortfall_se > 0 and row.refine_gain_se > 0 and row.warm_epochs == 40
        # the referee's check: F-VI from an A-VI solution ends at least as good as that solution
        assert row.warm_vs_source > -N_SE * row.warm_vs_source_se
    # a run that is dead is not audited: mark seed 1's F-VI diverged
    runs = result.runs.copy()
    runs.loc[(runs["seed"] == 1) & (runs["family"] == "factorized"), "diverged"] = True
    from amortlib.train import SweepResult
    dead = SweepResult(result.cfg, result.metrics, runs, result.model, x_test=result.x_test)
    assert list(fvi_audit(dead, x_train=x, n_images=30, n_draws=4, epochs=2)["seed"]) == [0]
