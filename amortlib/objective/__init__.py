"""The objective: the ELBO of the Bayesian VAE, family-agnostic."""
from .elbo import elbo_terms, neg_elbo

__all__ = ["elbo_terms", "neg_elbo"]
