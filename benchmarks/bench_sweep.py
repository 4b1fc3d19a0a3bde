"""Time per epoch of the sweep engine against the naive way of training the same models.

    python benchmarks/bench_sweep.py [--scale quick|paper] [--epochs N] [--threads T]

Variants, all measured in ONE process on the same data, interleaved epoch by epoch (so a
change of load on a shared machine hits every variant alike), after warm-up epochs:

  naive        the way of jordandeklerk/Amortized-Bayes: one model at a time, a plain PyTorch loop (sampled weights,
               torch.distributions log-densities and KLs, autograd, Adam), fp32, and train
               and test MSE evaluated every epoch (two forward passes at the posterior means)
  engine-M1    this project's engine run with one model at a time (M = 1), fp32, plus the
               same two MSE forward passes per epoch (what batching alone is worth)
  sweep-fp32   the one-pass sweep engine, every model in one step, fp32
  sweep-bf16   the same with precision='bf16' (bf16 matmuls, fp32 master weights and
               fp32 reductions of the ELBO)

Printed: seconds per epoch (median and best), speed-up over naive, achieved model GFLOP/s
(forward + backward matmuls of decoders and encoders; the naive variants also do their
evaluation passes, counted too), the machine's matmul peak measured in the same process
with the same threads (fp32 and bf16), and the peak resident memory of each variant (one
short subprocess each: ru_maxrss of the process, which includes torch and the loaded dataset,
and in brackets the peak sampled above the RSS before the variant was built). Needs the data (AMORTLIB_DATA). Not part of the tests.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

# Idle OpenMP threads sleep instead of spinning: on a machine shared with other jobs a
# spinning thread waits for a core that is busy elsewhere (2 threads ran ~6x slower than 1).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.distributions as D  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from amortlib import SweepConfig, data  # noqa: E402
from amortlib.model.decoder import SLOPE, decoder_shapes, linear_init  # noqa: E402
from amortlib.model.families import encoder_generator  # noqa: E402
from amortlib.train.fit_local import posterior_mean_recon  # noqa: E402
from amortlib.objective import NoiseSource  # noqa: E402
from amortlib.train.stack import StackedVAE  # noqa: E402
from amortlib.train.sweep import train_step  # noqa: E402

VARIANTS = ("naive", "engine-M1", "sweep-fp32", "sweep-bf16")


# ----------------------------------------------------------------------------------- FLOPs
def model_flops(cfg: SweepConfig, n: int, train: bool = True) -> float:
    """Matmul FLOPs of one full-batch epoch over n rows for every model of cfg.

    Decoder d -> H -> H -> 784: forward 2 n (dH + HH + H 784) per model; training adds the
    input-gradient and weight-gradient matmuls (x 3 in all). A-VI encoder 784 -> k -> 2d:
    the first layer's backward has no input gradient (x is data), so x 2; its head x 3."""
    d, H, Dx = cfg.z_dim, cfg.like_dim, 784
    per_row = 2 * (d * H + H * H + H * Dx)
    n_models = 0
    enc = 0.0
    for fam in cfg.families:
        if fam == "amortized":
            for k in cfg.widths:
                n_models += len(cfg.seeds)
                enc += len(cfg.seeds) * (2 * Dx * k * (2 if train else 1) + 2 * k * 2 * d * (3 if train else 1))
        else:
            n_models += len(cfg.seeds)
    return n * (n_models * per_row * (3 if train else 1) + enc)


def eval_flops(cfg: SweepConfig) -> float:
    """Two forward passes per epoch (train and test posterior means): decoders and encoders."""
    return model_flops(cfg, cfg.n_obs, train=False) + model_flops(cfg, cfg.n_test, train=False)


def matmul_peak(dtype, reps: int = 12) -> float:
    """GFLOP/s of [1000 x 784] @ [784 x 1024], best of ``reps``."""
    a = torch.randn(1000, 784).to(dtype)
    b = torch.randn(784, 1024).to(dtype)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 1000 * 784 * 1024 / best / 1e9


# ------------------------------------------------------------------------- naive baseline
class PlainModel(nn.Module):
    """One Bayesian VAE written the plain way (the style of jordandeklerk/Amortized-Bayes): sampled flat theta,
    per-layer matmuls, torch.distributions for log p(x|z,theta) and both KLs."""

    def __init__(self, cfg: SweepConfig, family: str, width, seed: int):
        super().__init__()
        self.cfg, self.family = cfg, family
        self.shapes = decoder_shapes(cfg.z_dim, cfg.like_dim)
        m = linear_init(self.shapes, torch.Generator().manual_seed(seed))
        self.m = nn.Parameter(m)
        self.log_s = nn.Parameter(torch.full_like(m, cfg.theta_log_std_init))
        d = cfg.z_dim
        if family == "factorized":
            self.q = nn.Parameter(torch.zeros(cfg.n_obs, 2 * d))
            self.register_buffer("q_test", torch.zeros(cfg.n_test, 2 * d))
        elif family == "constant":
            self.q = nn.Parameter(torch.zeros(2 * d))
        else:
            g = encoder_generator(seed, width)
            self.enc = nn.Sequential(nn.Linear(784, width), nn.LeakyReLU(SLOPE), nn.Linear(width, 2 * d))
            with torch.no_grad():
                for lin in (self.enc[0], self.enc[2]):
                    bound = 1 / math.sqrt(lin.in_features)
                    lin.weight.uniform_(-bound, bound, generator=g)
                    lin.bias.uniform_(-bound, bound, generator=g)
        self.gen = torch.Generator().manual_seed(10_007 * seed + 17)
        self.opt = torch.optim.Adam(self.parameters(), lr=cfg.lr)

    def q_params(self, x, test=False):
        d = self.cfg.z_dim
        if self.family == "factorized":
            p = self.q_test if test else self.q
        elif self.family == "constant":
            p = self.q.expand(len(x), -1)
        else:
            p = self.enc(x)
        return p[:, :d], p[:, d:]

    def decode(self, theta, z):
        parts = torch.split(theta, [math.prod(s) for s in self.shapes])
        w1, b1, w2, b2, w3, b3 = [p.reshape(s) for p, s in zip(parts, self.shapes)]
        h = F.leaky_relu(z @ w1 + b1, SLOPE)
        h = F.leaky_relu(h @ w2 + b2, SLOPE)
        return h @ w3 + b3

    def train_epoch(self, x):
        n = len(x)
        mu, ls = self.q_params(x)
        eps_t = torch.randn(self.m.shape, generator=self.gen)
        eps_z = torch.randn(mu.shape, generator=self.gen)
        theta = self.m + self.log_s.exp() * eps_t
        z = mu + ls.exp() * eps_z
        f = self.decode(theta, z)
        log_lik = D.Normal(f, self.cfg.sigma).log_prob(x).sum()
        kl_z = D.kl_divergence(D.Normal(mu, ls.exp()), D.Normal(0.0, 1.0)).sum()
        kl_t = D.kl_divergence(D.Normal(self.m, self.log_s.exp()), D.Normal(0.0, 1.0)).sum()
        loss = -(log_lik - kl_z - kl_t) / n
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    @torch.no_grad()
    def mse(self, x, test=False):
        mu, _ = self.q_params(x, test)
        return (self.decode(self.m, mu) - x).square().mean()


# ---------------------------------------------------------------------------- the variants
def single_configs(cfg):
    for fam in cfg.families:
        for w in (cfg.widths if fam == "amortized" else (None,)):
            for s in cfg.seeds:
                yield fam, w, s


class Naive:
    def __init__(self, cfg, x, xt):
        self.models = [PlainModel(cfg, f, w, s) for f, w, s in single_configs(cfg)]
        self.x, self.xt = x, xt

    def epoch(self):
        for m in self.models:
            m.train_epoch(self.x)
            m.mse(self.x).item(), m.mse(self.xt, test=True).item()


class EngineM1:
    def __init__(self, cfg, x, xt):
        self.units = []
        for f, w, s in single_configs(cfg):
            c = cfg.replace(families=(f,), widths=(w,) if w else (), seeds=(s,), precision="fp32")
            model = StackedVAE(c)
            self.units.append((c, model, model.optimizers(c.lr), NoiseSource(model.seeds, "cpu"),
                               torch.ones(1, dtype=torch.bool)))
        self.x, self.xt, self.idx = x, xt, torch.arange(len(x))

    def epoch(self):
        for c, model, opts, noise, alive in self.units:
            train_step(model, opts, self.x, self.idx, noise, alive, c)
            with torch.no_grad():
                for xs, test in ((self.x, False), (self.xt, True)):
                    if test and model.families[0].family == "factorized":
                        mu = torch.zeros(1, len(xs), c.z_dim)      # (its test rows: never fitted here)
                    else:
                        mu = model.q_z(xs, torch.arange(len(xs))).mu
                    posterior_mean_recon(model.decoder, model.likelihood, mu).sub_(xs).square().mean().item()


class Sweep:
    def __init__(self, cfg, x, xt, precision):
        self.cfg = cfg.replace(precision=precision)
        self.model = StackedVAE(self.cfg)
        self.opts = self.model.optimizers(self.cfg.lr)
        self.noise = NoiseSource(self.model.seeds, "cpu")
        self.alive = torch.ones(self.model.n_models, dtype=torch.bool)
        self.x, self.idx = x, torch.arange(len(x))

    def epoch(self):
        loss, self.alive = train_step(self.model, self.opts, self.x, self.idx, self.noise, self.alive, self.cfg)
        loss.sum().item()                       # one host read per epoch, like the sweep's logging


def make(variant, cfg, x, xt):
    return {"naive": lambda: Naive(cfg, x, xt), "engine-M1": lambda: EngineM1(cfg, x, xt),
            "sweep-fp32": lambda: Sweep(cfg, x, xt, "fp32"),
            "sweep-bf16": lambda: Sweep(cfg, x, xt, "bf16")}[variant]()


# ------------------------------------------------------------------------------ harness
def setup(args):
    torch.set_num_threads(args.threads)
    cfg = SweepConfig.from_profile(args.scale, progress=False, device="cpu")
    x = data.load(cfg.dataset, "train", cfg.n_obs, cfg.data_root)
    xt = data.load(cfg.dataset, "test", cfg.n_test, cfg.data_root)
    return cfg, x, xt


def memory_probe(args):
    """Subprocess body: build one variant, run warm-up + one epoch; print the process's peak
    RSS (ru_maxrss) and the peak RSS sampled during the epochs above the RSS before the
    variant was built (its state and working memory, without torch and the data)."""
    import threading

    import psutil
    cfg, x, xt = setup(args)
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak, done = [base], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(0.002)
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    v = make(args.probe, cfg, x, xt)
    for _ in range(2):
        v.epoch()
    done.set()
    th.join()
    print(json.dumps({"maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "delta": peak[0] - base}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=("quick", "paper"), default="quick")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per variant (after warm-up)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared 2-core machine the fastest)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--no-memory", action="store_true", help="skip the per-variant memory probes")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        return memory_probe(args)
    variants = [v for v in args.variants.split(",") if v]
    cfg, x, xt = setup(args)
    load0 = os.getloadavg()[0]
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    runs = {v: make(v, cfg, x, xt) for v in variants}
    times = {v: [] for v in variants}
    cpu = {v: [] for v in variants}
    for r in range(args.warmup + args.epochs):
        for v in variants:
            t0, c0 = time.perf_counter(), time.process_time()
            runs[v].epoch()
            if r >= args.warmup:
                times[v].append(time.perf_counter() - t0)
                cpu[v].append((time.process_time() - c0) / args.threads)
    peak32 = max(peak32, matmul_peak(torch.float32))
    peak16 = max(peak16, matmul_peak(torch.bfloat16))
    load1 = os.getloadavg()[0]
    mem = {}
    if not args.no_memory:
        for v in variants:
            cmd = [sys.executable, __file__, "--scale", args.scale, "--threads", str(args.threads),
                   "--probe", v]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            mem[v] = json.loads(out.strip().splitlines()[-1])

    train_f = model_flops(cfg, cfg.n_obs)
    M = sum(1 for _ in single_configs(cfg))
    print(f"\n## {args.scale} scale: n={cfg.n_obs}, z_dim={cfg.z_dim}, like_dim={cfg.like_dim}, "
          f"widths={list(cfg.widths)}, seeds={len(cfg.seeds)} -> {M} models, full batch")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"load average {load0:.1f} -> {load1:.1f} (other jobs share the cores)")
    print(f"matmul peak [1000x784]@[784x1024]: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")
    print(f"model FLOPs per epoch: training {train_f / 1e9:.1f} GFLOP; evaluation passes "
          f"(naive variants) {eval_flops(cfg) / 1e9:.1f} GFLOP\n")
    med = {v: statistics.median(times[v]) for v in variants}
    cmed = {v: statistics.median(cpu[v]) for v in variants}
    print("Wall: seconds per epoch as measured. CPU: process CPU seconds per epoch / threads, the "
          "time the variant had the cores for (robust to other jobs time-slicing the machine); "
          "GFLOP/s and % of peak use CPU time.\n")
    print("| variant | wall s/epoch (median, best) | CPU s/epoch | speed-up vs naive (wall, CPU) "
          "| GFLOP/s | % bf16 peak | % fp32 peak | peak RSS (+ over the process before the variant) |")
    print("|---|---|---|---|---|---|---|---|")
    for v in variants:
        flops = train_f + (eval_flops(cfg) if v in ("naive", "engine-M1") else 0)
        gf = flops / cmed[v] / 1e9
        sp = f"{med['naive'] / med[v]:.1f}x, {cmed['naive'] / cmed[v]:.1f}x" if "naive" in med else "-"
        rss = f"{mem[v]['maxrss'] / 2**30:.2f} GiB (+{mem[v]['delta'] / 2**30:.2f})" if v in mem else "-"
        print(f"| {v} | {med[v]:.3f}, {min(times[v]):.3f} | {cmed[v]:.3f} | {sp} | {gf:.0f} "
              f"| {100 * gf / peak16:.0f}% | {100 * gf / peak32:.0f}% | {rss} |")
    print(f"\n(epochs timed per variant: {args.epochs}, after {args.warmup} warm-up; wall times: "
          f"{json.dumps({v: [round(t, 3) for t in ts] for v, ts in times.items()})})")


if __name__ == "__main__":
    main()
