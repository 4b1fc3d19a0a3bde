"""amortlib: amortized vs factorized variational inference on a Bayesian VAE.

Layout: ``data`` (MNIST, Fashion-MNIST), ``model`` (decoder with q(theta), likelihoods, the three
variational families of q(z)), ``objective`` (the ELBO), ``train`` (the one-pass sweep engine,
``fit_local``), ``metrics``, ``config`` (one dataclass for a sweep).
"""
from .config import PROFILES, SweepConfig

__version__ = "0.1.0"
__all__ = ["SweepConfig", "PROFILES", "__version__"]
