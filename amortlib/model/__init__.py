"""The Bayesian VAE: decoder with q(theta), observation models, and the variational families of q(z)."""
from .decoder import BayesianDecoder, decode, decoder_shapes
from .families import Amortized, Constant, Factorized, ModelSpec, make_families
from .gaussian import DiagGaussian, kl_std_normal
from .likelihood import BernoulliLikelihood, GaussianLikelihood, make_likelihood

__all__ = ["BayesianDecoder", "decode", "decoder_shapes", "Amortized", "Constant", "Factorized",
           "ModelSpec", "make_families", "DiagGaussian", "kl_std_normal", "BernoulliLikelihood",
           "GaussianLikelihood", "make_likelihood"]
