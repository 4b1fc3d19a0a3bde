"""Training: the stacked model, the one-pass sweep engine, and test-time fitting of q(z)."""
from .fit_local import LocalFit, fit_local, posterior_mean_recon
from .stack import NoiseSource, StackedVAE
from .sweep import SweepResult, calibrate, resolve_device, run_sweep, train_step

__all__ = ["LocalFit", "fit_local", "posterior_mean_recon", "NoiseSource", "StackedVAE",
           "SweepResult", "calibrate", "resolve_device", "run_sweep", "train_step"]
