"""One small dataclass holds a whole sweep: data, model, families, training, evaluation.

The same validation runs for the Python API, the CLI and the papermill ``parameters`` cell:
every bad value fails before any training with a ``ValueError`` that names the parameter,
the value it got and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from numbers import Integral, Real

DATASETS = ("mnist", "fashion_mnist")
FAMILIES = ("factorized", "amortized", "constant")
LIKELIHOODS = ("gaussian", "bernoulli")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
LR_DECAYS = ("none", "cosine")

#: Named profiles. ``quick`` runs both datasets (8 units) on an idle 2-core CPU in about an hour; ``paper`` is the
#: scale of the Bayesian-VAE experiment of Margossian & Blei (2023) and of jordandeklerk/Amortized-Bayes
#: (10,000 images, d = 64, decoder width 256, widths 1/64/128/256, 5,000 epochs), meant for a GPU (cost
#: per unit: benchmarks/README.md). Both those codes weight the squared error by 1 (sigma^2 = 1/2);
#: ``paper`` sweeps sigma = 0.1, sigma = sqrt(1/2) (that weighting, with all constants) and Bernoulli
#: (``runner.VARIANTS``; book/how_to_run.md lists how each code differs). ``sigma``: the default when
#: only the Gaussian likelihood is asked for.
PROFILES: dict[str, dict] = {
    "quick": dict(n_obs=1000, n_test=500, z_dim=16, like_dim=64, widths=(1, 16, 64, 256),
                  seeds=(0, 1, 2, 3, 4), epochs=800, lr=1e-2, local_lr=0.1, warmup_epochs=50, sigma=0.1),
    "paper": dict(n_obs=10000, n_test=1000, z_dim=64, like_dim=256, widths=(1, 64, 128, 256),
                  seeds=(0, 1, 2, 3, 4), epochs=5000, sigma=0.1),
    # Tiny settings used by the notebook regression tests (nbval) and smoke tests.
    "test": dict(n_obs=200, n_test=100, z_dim=4, like_dim=16, widths=(1, 32),
                 seeds=(0, 1), epochs=60, eval_points=12, sigma=0.3, progress=False),
}


#: Profiles whose n_obs / n_test are capped at the images the split holds (instead of failing)
#: when not given explicitly; ``split_limits`` records it for the results.
CAPPED_TO_SPLIT = ("paper",)
_SPLITS = (("n_obs", "train", "training"), ("n_test", "test", "test"))


def _fail(name, value, allowed):
    raise ValueError(f"{name}={value!r} is invalid: expected {allowed}")


def _int(name, value, lo=None, hi=None):
    if isinstance(value, bool) or not isinstance(value, Integral):
        _fail(name, value, "an integer" + (f" >= {lo}" if lo is not None else ""))
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        _fail(name, value, f"an integer {rng}")
    return int(value)


def _real(name, value, positive=True, nonneg=False):
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        _fail(name, value, "a finite real number")
    if positive and not value > 0:
        _fail(name, value, "a number > 0")
    if nonneg and value < 0:
        _fail(name, value, "a number >= 0")
    return float(value)


def _choice(name, value, allowed):
    if value not in allowed:
        _fail(name, value, "one of " + ", ".join(repr(a) for a in allowed))
    return value


def _int_tuple(name, values, lo, allow_empty=False):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        _fail(name, values, f"a list of integers >= {lo}")
    out = tuple(values)
    if not out and not allow_empty:
        _fail(name, values, f"a non-empty list of integers >= {lo}")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, Integral) or v < lo:
            _fail(name, values, f"a list of integers >= {lo} (bad entry {v!r})")
    if len(set(out)) != len(out):
        _fail(name, values, "a list without repeated entries")
    return tuple(int(v) for v in out)


@dataclass
class SweepConfig:
    """Everything one sweep needs. Every model of a sweep sees the same data and the same
    data order; models differ by family, encoder width and seed.

    Model: z_n ~ N(0, I_d), theta ~ N(0, I), x_n | z_n, theta ~ N(f_theta(z_n), sigma^2 I)
    (or Bernoulli(sigmoid f_theta(z_n)) on binarised pixels), f_theta an MLP
    d -> like_dim -> like_dim -> 784 with LeakyReLU(0.2).
    """

    # data
    dataset: str = "mnist"
    n_obs: int = 1000             # first n_obs training images
    n_test: int = 1000            # first n_test test images
    data_root: str | None = None  # else $AMORTLIB_DATA, else a user cache folder
    # model
    z_dim: int = 64
    like_dim: int = 256
    likelihood: str = "gaussian"
    sigma: float = 1.0            # Gaussian likelihood scale (pixels in [0, 1])
    # variational families
    families: tuple = FAMILIES
    widths: tuple = (1, 16, 64, 256)   # encoder widths k of the amortized family
    depth: int = 1                # hidden layers of the encoder
    theta_log_std_init: float = -5.0   # initial log s of q(theta)
    seeds: tuple = (0, 1, 2)
    # training
    epochs: int = 1000
    lr: float = 1e-3
    local_lr: float | None = None  # Adam lr of F-VI's per-image (mu_n, log sigma_n); None: lr
    weight_decay: float = 0.0     # L2 penalty added by Adam: changes the objective; off by default
    warmup_epochs: int = 0        # every lr rises linearly over the first epochs (0: constant lr)
    lr_decay: str = "none"        # "cosine": after the warm-up every lr falls to 0 at the last epoch
    batch_size: int | None = None  # None: full batch
    n_mc: int = 1                 # Monte Carlo samples S of the expected log-likelihood
    data_seed: int = 0            # mini-batch order, shared by all models of the sweep
    precision: str = "fp32"
    device: str = "auto"
    # evaluation
    eval_points: int = 100        # about this many log-spaced epochs get metrics
    tol: float = 0.07             # absolute train-MSE tolerance of jordandeklerk/Amortized-Bayes
    fit_steps: int = 300          # F-VI test-time optimisation: max Adam steps of fit_local
    fit_lr: float = 1e-2
    progress: bool = True
    profile: str = field(default="custom", compare=False)

    def __post_init__(self):
        self.dataset = _choice("dataset", self.dataset, DATASETS)
        self.n_obs = _int("n_obs", self.n_obs, 1)
        self.n_test = _int("n_test", self.n_test, 1)
        if self.data_root is not None:
            if not isinstance(self.data_root, (str, os.PathLike)) or not str(self.data_root):
                _fail("data_root", self.data_root, "a folder path or None")
            self.data_root = os.fspath(self.data_root)
        self._check_split_sizes()
        self.z_dim = _int("z_dim", self.z_dim, 1)
        self.like_dim = _int("like_dim", self.like_dim, 1)
        self.likelihood = _choice("likelihood", self.likelihood, LIKELIHOODS)
        self.sigma = _real("sigma", self.sigma)
        if isinstance(self.families, str):
            self.families = (self.families,)
        fams = tuple(self.families)
        if not fams:
            _fail("families", self.families, "a non-empty list from " + ", ".join(FAMILIES))
        for f in fams:
            _choice("families", f, FAMILIES)
        if len(set(fams)) != len(fams):
            _fail("families", self.families, "a list without repeated entries")
        self.families = tuple(f for f in FAMILIES if f in fams)
        self.widths = _int_tuple("widths", self.widths, 1, allow_empty="amortized" not in fams)
        self.depth = _int("depth", self.depth, 1)
        self.theta_log_std_init = _real("theta_log_std_init", self.theta_log_std_init, positive=False)
        self.seeds = _int_tuple("seeds", self.seeds, 0)
        self.epochs = _int("epochs", self.epochs, 1)
        self.lr = _real("lr", self.lr)
        if self.local_lr is not None:
            if isinstance(self.local_lr, bool) or not isinstance(self.local_lr, Real) \
                    or not math.isfinite(self.local_lr) or not self.local_lr > 0:
                _fail("local_lr", self.local_lr, "a number > 0, or None (the same as lr)")
            self.local_lr = float(self.local_lr)
        self.weight_decay = _real("weight_decay", self.weight_decay, positive=False, nonneg=True)
        self.warmup_epochs = _int("warmup_epochs", self.warmup_epochs, 0)
        self.lr_decay = _choice("lr_decay", self.lr_decay, LR_DECAYS)
        if self.warmup_epochs >= self.epochs and self.lr_decay != "none":
            _fail("warmup_epochs", self.warmup_epochs, f"fewer than epochs={self.epochs} when lr_decay is used")
        if self.batch_size is not None:
            self.batch_size = _int("batch_size", self.batch_size, 1)
            if self.batch_size > self.n_obs:
                _fail("batch_size", self.batch_size, f"at most n_obs={self.n_obs} (or None)")
        self.n_mc = _int("n_mc", self.n_mc, 1)
        self.data_seed = _int("data_seed", self.data_seed, 0)
        self.precision = _choice("precision", self.precision, PRECISIONS)
        self.device = _choice("device", self.device, DEVICES)
        self.eval_points = _int("eval_points", self.eval_points, 2)
        self.tol = _real("tol", self.tol)
        self.fit_steps = _int("fit_steps", self.fit_steps, 1)
        self.fit_lr = _real("fit_lr", self.fit_lr)
        if not isinstance(self.progress, bool):
            _fail("progress", self.progress, "True or False")

    def _check_split_sizes(self):
        """n_obs / n_test beyond the images on disk, or damaged data files, fail here, before
        any training. Reads only the IDX headers; a folder without the files is left to the
        data loader (which may download them, or says what is missing)."""
        from .datacheck import TV_CLASS, data_root, inspect_split

        for name, split, what in _SPLITS:
            value = getattr(self, name)
            try:
                have, problems = inspect_split(self.dataset, split, self.data_root)
            except OSError as err:
                have, problems = None, [f"{err.filename}: unreadable ({err.strerror})"]
            damaged = [p for p in problems if not p.endswith("missing") and "missing (" not in p]
            if damaged:
                _fail("data_root", str(data_root(self.data_root)),
                      f"a folder with intact {self.dataset} {split} files, but {damaged[0]} "
                      f"(`amortlib data check` says how to fix it)")
            where = data_root(self.data_root) / TV_CLASS[self.dataset] / "raw"
            if have is not None and value > have:
                _fail(name, value, f"an integer between 1 and {have}: the {self.dataset} {what} "
                                   f"split in {where} holds {have} images")

    @classmethod
    def from_profile(cls, profile: str = "quick", **overrides) -> "SweepConfig":
        """The named profile's settings, then ``overrides`` (unknown names are an error)."""
        _choice("profile", profile, tuple(PROFILES))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}: expected names from "
                             + ", ".join(sorted(known)))
        values = {**PROFILES[profile], "profile": profile, **overrides}
        if profile in CAPPED_TO_SPLIT:
            from .datacheck import split_count
            dataset = values.get("dataset", cls.dataset)
            for name, split, _ in _SPLITS:
                if name not in overrides and dataset in DATASETS:
                    have, _ = split_count(dataset, split, values.get("data_root"))
                    if have is not None and have < values[name]:
                        values[name] = have
        return cls(**values)

    def split_limits(self) -> dict:
        """``{name: {"profile": wanted, "split": held}}`` for n_obs / n_test that are below the
        profile's value because the split holds no more images (profiles in
        ``CAPPED_TO_SPLIT``); {} otherwise. Recorded in a unit's results (``info``)."""
        if self.profile not in CAPPED_TO_SPLIT:
            return {}
        from .datacheck import split_count
        out = {}
        for name, split, _ in _SPLITS:
            want, value = PROFILES[self.profile][name], getattr(self, name)
            if value < want and split_count(self.dataset, split, self.data_root)[0] == value:
                out[name] = dict(profile=want, split=value)
        return out

    def replace(self, **changes) -> "SweepConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def describe_split_limits(limits: dict, profile: str = "paper") -> str:
    """One phrase per capped size, e.g. "n_obs 8000 (the split holds 8000 of the paper
    profile's 10000)"; "" when nothing was capped."""
    return ", ".join(f"{name} {v['split']} (the split holds {v['split']} of the {profile} profile's {v['profile']})"
                     for name, v in limits.items())
