"""Where one training step of the sweep spends its time: torch.profiler over ``train_step``.

    python benchmarks/profile_step.py [--scale quick|paper] [--precision fp32|bf16] [--rows 25]

Prints the step's CPU time (median of a few steps, outside the profiler) and the profiler's
table of the ops with the most self time, grouped by op and input shapes. Only the public
``train_step`` API is used, so the same script profiles an older checkout of the engine
(``PYTHONPATH=<old checkout> python benchmarks/profile_step.py``): the before/after of
benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from amortlib import SweepConfig, data  # noqa: E402
from amortlib.objective import NoiseSource  # noqa: E402
from amortlib.train.stack import StackedVAE  # noqa: E402
from amortlib.train.sweep import train_step  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=("quick", "paper"), default="paper")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rows", type=int, default=25)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = SweepConfig.from_profile(args.scale, precision=args.precision, progress=False, device="cpu")
    x = data.load(cfg.dataset, "train", cfg.n_obs, cfg.data_root)
    model = StackedVAE(cfg)
    opts = model.optimizers(cfg.lr)
    noise = NoiseSource(model.seeds, "cpu")
    alive = torch.ones(model.n_models, dtype=torch.bool)
    idx = torch.arange(cfg.n_obs)
    train_step(model, opts, x, idx, noise, alive, cfg)           # warm-up
    cpu = []
    for _ in range(args.steps):
        c0 = time.process_time()
        train_step(model, opts, x, idx, noise, alive, cfg)
        cpu.append((time.process_time() - c0) / args.threads)
    print(f"{args.scale} {args.precision}: {model.n_models} models, one full-batch step: "
          f"{statistics.median(cpu):.3f} CPU s (median of {args.steps}), {args.threads} thread(s)")
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        train_step(model, opts, x, idx, noise, alive, cfg)
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=34,
        max_shapes_column_width=70))


if __name__ == "__main__":
    main()
