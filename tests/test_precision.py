"""precision='bf16' (bf16 matmuls, fp32 master weights and fp32 reductions of the ELBO) must not
move the science: same sweep in fp32 and in bf16, on MNIST, several seeds."""
import warnings

import pandas as pd
import pytest
import torch

from amortlib import SweepConfig, data
from amortlib.objective import neg_elbo
from amortlib.objective import NoiseSource
from amortlib.train import run_sweep

SEEDS = (0, 1, 2, 3, 4)
COLS = ["neg_elbo", "mse_train", "mse_test"]


@pytest.fixture(scope="module")
def runs():
    x, xt = data.load("mnist", "train", 300), data.load("mnist", "test", 100)
    # quick-like (lr 1e-2, sigma 0.1: the sharpest likelihood, where rounding shows most), small
    cfg = SweepConfig(n_obs=300, n_test=100, z_dim=8, like_dim=32, widths=(1, 32), seeds=SEEDS,
                      epochs=200, eval_points=3, fit_steps=20, sigma=0.1, lr=1e-2, progress=False,
                      device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # small ops: 1 thread is fastest, and immune to OpenMP
    try:                            # threads spinning for a core that other jobs hold
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = {p: run_sweep(cfg.replace(precision=p), x, xt, calibrate_steps=0)
                   for p in ("fp32", "bf16")}
        yield out, x
    finally:
        torch.set_num_threads(threads)


def test_bf16_ends_within_the_seed_spread_of_fp32(runs):
    out, _ = runs
    final = {p: r.runs.set_index(["config", "seed"])[COLS] for p, r in out.items()}
    for col in COLS:
        a, b = final["fp32"][col].unstack(), final["bf16"][col].unstack()
        diff = (b.mean(axis=1) - a.mean(axis=1)).abs()
        spread = a.std(axis=1)                      # seed-to-seed standard deviation, fp32
        bad = diff[diff > spread]
        assert bad.empty, pd.DataFrame({"|mean bf16 - mean fp32|": diff, "fp32 seed sd": spread}).to_string()
    assert not out["bf16"].runs["diverged"].any()


@pytest.mark.parametrize("path", ["cpu", "gpu"])
def test_bf16_estimate_of_the_elbo_is_unbiased(runs, path):
    """Same trained models, same noise: the bf16 estimate of -ELBO equals the fp32 one on
    average, on the CPU's kernels and on the GPU's path (forced, see amortlib.model.paths).
    (Guards the x_lo correction of ``decoder_sse``: with x rounded to bf16 inside the
    residual the estimate was 0.4-1.5 nats too high here.)"""
    from amortlib.model import paths
    out, x = runs
    model = out["fp32"].model
    noise = NoiseSource(model.seeds, "cpu", offset=5)
    idx = torch.arange(len(x))
    diffs = []
    with torch.no_grad(), paths.force(path):
        for _ in range(20):
            ez, et = noise.draw_streams(1, len(x), model.cfg.z_dim, model.decoder.n_params)
            args = (model.decoder, model.likelihood, len(x), ez, et)
            l32 = neg_elbo(x, model.q_z_parts(x, idx), *args, noise_index=model.seed_index)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                l16 = neg_elbo(x, model.q_z_parts(x, idx), *args, noise_index=model.seed_index)
            diffs.append(l16 - l32)
    mean = pd.Series(torch.stack(diffs).mean(0).tolist(), index=[s.label for s in model.specs])
    per_config = mean.groupby(level=0).mean()
    assert (per_config.abs() < 0.3).all(), per_config.to_string()


# ---- the fast paths are exact in float64 (so fp32 is plain fp32 arithmetic, reordered) ----

def test_chunked_decoder_kernel_matches_autograd():
    from amortlib.model import BayesianDecoder, decode
    from amortlib.model.decoder import decoder_sse
    g = torch.Generator().manual_seed(0)
    dec = BayesianDecoder([0, 1, 2], 5, 7, 11)
    th = (dec.m.detach().double() + 0.1 * torch.randn(3, dec.n_params, generator=g,
                                                      dtype=torch.float64)).requires_grad_()
    z = torch.randn(3, 13, 5, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.rand(13, 11, generator=g, dtype=torch.float64)
    w = torch.randn(3, generator=g, dtype=torch.float64)
    ref = (decode(dec.unflatten(th), z) - x).square().sum((1, 2))
    g_ref = torch.autograd.grad((ref * w).sum(), (th, z))
    for rows in (4, 5, 100):                                 # several chunks, uneven, one
        out = decoder_sse(th, z, x, (5, 7, 11), rows=rows)
        torch.testing.assert_close(out, ref)
        for a, b in zip(torch.autograd.grad((out * w).sum(), (th, z)), g_ref):
            torch.testing.assert_close(a, b)
    gz, = torch.autograd.grad((decoder_sse(th.detach(), z, x, (5, 7, 11), rows=4) * w).sum(), z)
    torch.testing.assert_close(gz, g_ref[1])                 # q(theta) frozen: dz only
    with torch.no_grad():
        torch.testing.assert_close(decoder_sse(th, z, x, (5, 7, 11), rows=4), ref)


@pytest.mark.parametrize("S", [1, 2])
def test_reparam_kl_matches_the_plain_formulas(S):
    import amortlib.model.gaussian as gauss
    from amortlib.model import kl_std_normal, paths
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    mu = [r(3, 5, 4).requires_grad_(), r(2, 1, 4).requires_grad_()]
    ls = [(0.3 * r(3, 5, 4)).requires_grad_(), (0.3 * r(2, 1, 4)).requires_grad_()]
    eps, idx = r(2, S, 5, 4), torch.tensor([0, 1, 0, 1, 1])
    wx, wk = r(5, S, 5, 4), r(5)
    pieces = lambda: ([mu[0], mu[1].expand(-1, 5, -1)], [ls[0], ls[1].expand(-1, 5, -1)])
    m, s = (torch.cat(p) for p in pieces())
    x_ref = m[:, None] + s.exp()[:, None] * eps[idx]
    kl_ref = kl_std_normal(m, s).sum(-1)
    g_ref = torch.autograd.grad((x_ref * wx).sum() + (kl_ref * wk).sum(), mu + ls)
    for path in ("cpu", "gpu"):                 # the CPU loop, and the GPU's batched ops
        with paths.force(path):
            x, kl = gauss.reparam_kl(*pieces(), eps, idx)
        torch.testing.assert_close(x, x_ref)
        torch.testing.assert_close(kl, kl_ref)
        for a, b in zip(torch.autograd.grad((x * wx).sum() + (kl * wk).sum(), mu + ls), g_ref):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("full", [True, False])
def test_row_adam_is_sparse_adam(full):
    from amortlib.train.stack import RowAdam
    a = torch.nn.Parameter(torch.randn(50, 6, generator=torch.Generator().manual_seed(2)))
    b = torch.nn.Parameter(a.detach().clone())
    opt_a, opt_b = RowAdam([a], lr=1e-2), torch.optim.SparseAdam([b], lr=1e-2)
    for t in range(20):
        gen = torch.Generator().manual_seed(t)
        idx = torch.randperm(50, generator=gen)[: 50 if full else 20]
        w = torch.randn(len(idx), 6, generator=gen)
        for p in (a, b):
            p.grad = None
            (torch.nn.functional.embedding(idx, p, sparse=True) * w).sum().backward()
        opt_a.step()
        opt_b.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert not torch.equal(a, torch.randn(50, 6, generator=torch.Generator().manual_seed(2)))
