"""The objective: the ELBO of the Bayesian VAE, family-agnostic."""
from .elbo import elbo_terms, neg_elbo
from .noise import NoiseSource

__all__ = ["NoiseSource", "elbo_terms", "neg_elbo"]
