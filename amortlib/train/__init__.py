"""Training: the stacked model, the one-pass sweep engine, test-time fitting of q(z), and the
checks of a finished sweep's optima (``audit``)."""
from .fit_local import LocalFit, fit_local, posterior_mean_recon
from .stack import StackedVAE
from .sweep import SweepResult, calibrate, resolve_device, run_sweep, train_step
from .audit import certificate, fvi_audit, local_gradient, plateau, refinement_gain, warm_start_fvi

__all__ = ["LocalFit", "fit_local", "posterior_mean_recon", "StackedVAE",
           "SweepResult", "calibrate", "resolve_device", "run_sweep", "train_step",
           "certificate", "fvi_audit", "local_gradient", "plateau", "refinement_gain", "warm_start_fvi"]
