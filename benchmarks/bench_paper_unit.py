"""What one unit of the paper profile costs: a shortened paper-scale unit, measured piece by
piece, then extrapolated to the profile's 5,000 epochs x 5 seeds and to the whole profile.

    python benchmarks/bench_paper_unit.py [--dataset mnist] [--seeds 5] [--epochs 4]
        [--precision fp32 bf16] [--threads 1] [--device auto] [--gap-steps 50]

The unit is the paper profile's (n = 10,000 images, or all the split holds; d = 64, decoder
width 256, A-VI widths 1/64/128/256, F-VI, constant-VI) with ``--seeds`` seeds. Measured:

  train  seconds per full-batch epoch of the one-pass sweep (every model), median of the
         epochs after the first that are not followed by a checkpoint (run_sweep's callback)
  check  one intermediate checkpoint: the warm-started F-VI test fit (fit_steps // 20 = 15
         Adam steps on the test images) and the train / test MSE passes
  final  the last checkpoint: the F-VI test fit's fit_steps = 300 steps and the MSE passes
  calib  ``calibrate``: each configuration trained alone for 3 steps after a warm-up
  gap    the experiment notebook's gap table (200 images per split), run with its F-VI fits
         stopped at --gap-steps / 5 and at --gap-steps steps: the difference gives the
         seconds per fit step, the rest its fixed part (the evaluations); a converged fit
         takes about 400 steps (the quick profile, see gap_table), at most 3000 (max_steps)

Seconds are CPU seconds per thread on a CPU (the process's CPU time / threads: what the run
takes on cores of its own, robust to a shared machine's load), wall seconds on a GPU.

Extrapolated unit = 5000 x train + (C - 1) x check + final + calib + gap, C the number of
checkpoints (len(eval_epochs(5000, 100))). With fewer than 5 seeds the per-model parts (all
but calib) are scaled by 5 / seeds: every op of a step is per model, so its cost is linear in
the number of models. The training of a unit on fewer images (Fashion-MNIST: 8,000) is scaled
by n. Not counted: the notebook kernel's start and the data load (seconds). Needs the data
(AMORTLIB_DATA); a script, not a test. Keep it short on a shared machine: a few minutes.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # see bench_sweep.py

import torch  # noqa: E402

from amortlib import SweepConfig, data  # noqa: E402
from amortlib.gap import gap_table  # noqa: E402
from amortlib.metrics import eval_epochs, mse  # noqa: E402
from amortlib.runner import VARIANTS, plan  # noqa: E402
from amortlib.train.fit_local import posterior_mean_recon  # noqa: E402
from amortlib.train.sweep import (_fit_test_fvi, _sync, _test_means, _train_means, calibrate,  # noqa: E402
                                  resolve_device, run_sweep)

PAPER = SweepConfig.from_profile("paper")
GAP_TYPICAL, GAP_MAX = 400, 3000        # F-VI fit steps per split of the gap table


def _clock(device):
    """Seconds so far: on CPU, this process's CPU time per thread (the time it actually had
    the cores: robust to other jobs time-slicing a shared machine); on a GPU, wall time."""
    _sync(device)
    return time.perf_counter() if device.type == "cuda" else time.process_time() / torch.get_num_threads()


def _timed(f, device):
    t0 = _clock(device)
    out = f()
    return _clock(device) - t0, out


def _checkpoint(model, x, xt, cfg, steps, device):
    """One checkpoint of run_sweep: F-VI test fit of ``steps`` steps and the two MSE passes."""
    def work():
        fvi = _fit_test_fvi(model, xt, None, steps, cfg, cfg.epochs)
        with torch.no_grad():
            mse(x, posterior_mean_recon(model.decoder, model.likelihood, _train_means(model, x).mu))
            mse(xt, posterior_mean_recon(model.decoder, model.likelihood, _test_means(model, xt, fvi)))
    return _timed(work, device)[0]


def measure(args, precision: str) -> dict:
    # fit_steps=20 in the run itself (its own last checkpoint, not timed); the checkpoints are
    # timed below with the profile's fit_steps
    cfg = SweepConfig.from_profile("paper", dataset=args.dataset, seeds=tuple(range(args.seeds)),
                                   epochs=args.epochs, eval_points=2, precision=precision,
                                   device=args.device, progress=False, fit_steps=20)
    device = resolve_device(cfg.device)
    x = data.load(cfg.dataset, "train", cfg.n_obs, cfg.data_root)
    xt = data.load(cfg.dataset, "test", cfg.n_test, cfg.data_root)
    ends = {}
    stamp = lambda epoch, model: ends.__setitem__(epoch, _clock(device))
    result = run_sweep(cfg, x, xt, calibrate_steps=0, callback=stamp)
    checkpoints = set(eval_epochs(cfg.epochs, cfg.eval_points))
    clean = [ends[e] - ends[e - 1] for e in range(2, cfg.epochs + 1) if e - 1 not in checkpoints]
    model, xp, xtp = result.model, result.model.likelihood.prepare(x.to(device)), result.x_test
    out = dict(models=model.n_models, n_obs=cfg.n_obs, train=statistics.median(clean), clean_epochs=len(clean),
               check=_checkpoint(model, xp, xtp, cfg, max(1, PAPER.fit_steps // 20), device),
               final=_checkpoint(model, xp, xtp, cfg, PAPER.fit_steps, device),
               calib=_timed(lambda: calibrate(cfg, xp, device, 3), device)[0])
    # the gap table at two step limits: the difference is the cost of its fit steps alone
    runs = []
    for limit in (args.gap_steps // 5, args.gap_steps):
        t, table = _timed(lambda: gap_table(result, n_images=200, max_steps=limit), device)
        runs.append((t, int(table.groupby("split")["fit_steps"].max().sum())))   # both splits' fits
    (t_a, s_a), (t_b, s_b) = runs
    step = (t_b - t_a) / (s_b - s_a)
    out.update(gap_step=step, gap_fixed=t_a - step * s_a, gap_steps=s_b)
    return out


def extrapolate(m: dict, seeds: int, n_obs: int) -> dict:
    per_model = PAPER.seeds.__len__() / seeds
    C = len(eval_epochs(PAPER.epochs, PAPER.eval_points))
    train = PAPER.epochs * m["train"] * per_model * n_obs / m["n_obs"]
    evals = ((C - 1) * m["check"] + m["final"]) * per_model
    gap = [(m["gap_fixed"] + 2 * s * m["gap_step"]) * per_model for s in (GAP_TYPICAL, GAP_MAX)]
    return dict(train=train, evals=evals, calib=m["calib"], gap=gap[0],
                total=train + evals + m["calib"] + gap[0], total_max=train + evals + m["calib"] + gap[1])


def _h(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist", choices=("mnist", "fashion_mnist"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=4, help=">= 3: timed epochs are 3..E")
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--gap-steps", type=int, default=50, dest="gap_steps")
    args = ap.parse_args(argv)
    if args.epochs < 3:
        ap.error("--epochs must be >= 3")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    C = len(eval_epochs(PAPER.epochs, PAPER.eval_points))
    units = plan("paper")
    print(f"paper-scale unit on {args.dataset}, {args.seeds} seed(s), {device} ({name}), {args.threads} thread(s), "
          f"torch {torch.__version__}; the profile: {len(units)} units ({len(VARIANTS['paper'])} likelihood "
          f"settings x 2 datasets), {PAPER.epochs} epochs, {len(PAPER.seeds)} seeds, {C} checkpoints")
    for precision in args.precision:
        t0 = time.perf_counter()
        m = measure(args, precision)
        print(f"\n[{precision}] measured in {time.perf_counter() - t0:.0f} s of wall time: {m['models']} models, "
              f"n = {m['n_obs']}")
        print(f"  train  {m['train']:.3f} s/epoch (median of {m['clean_epochs']})")
        print(f"  check  {m['check']:.2f} s   final {m['final']:.2f} s   calib {m['calib']:.2f} s   "
              f"gap {m['gap_step'] * 1e3:.0f} ms/step + {m['gap_fixed']:.1f} s (up to {m['gap_steps']} steps)")
        total = 0.0
        for unit, cfg in units:
            e = extrapolate(m, args.seeds, cfg.n_obs)
            total += e["total"]
            print(f"  {unit:34s} train {_h(e['train'])}, checkpoints {_h(e['evals'])}, calib {_h(e['calib'])}, "
                  f"gap {_h(e['gap'])}: {_h(e['total'])} (gap fits at their max: {_h(e['total_max'])})")
        print(f"  whole profile, one unit after another: {_h(total)}")


if __name__ == "__main__":
    main()
