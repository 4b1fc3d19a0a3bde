"""Measuring the amortization gap of trained models: per-datapoint gaps with common random
numbers, F-VI refinement from the encoder's output, importance-weighted bounds on log p(x),
Cremer et al.'s decomposition, the amortization dividend (see ``core`` and ``measure``), and
many-draw final ELBOs and test log-likelihoods of every family (``evaluate``).

    from amortlib.gap import gap_table
    table = gap_table(result, n_images=200)      # result: a finished run_sweep(...)
"""
from .core import (GAP_COLUMNS, GAP_EXTRA_COLUMNS, REFINE_STEPS, IWAEResult, LocalFit,
                   elbo_samples, eval_noise, fit_q, iwae, mean_se, per_image_se)
from .evaluate import FINAL_COLUMNS, final_evaluation
from .measure import (Decomposition, GapMeasurement, decompose, encoder_q, gap_models, gap_table,
                      inference_cost, measure_gap, refinement_table, single_encoder, split_images,
                      summarise)

__all__ = ["GAP_COLUMNS", "GAP_EXTRA_COLUMNS", "REFINE_STEPS", "IWAEResult", "LocalFit",
           "elbo_samples", "eval_noise", "fit_q", "iwae", "mean_se", "per_image_se",
           "Decomposition", "GapMeasurement", "decompose", "encoder_q", "gap_models", "gap_table",
           "inference_cost", "measure_gap", "refinement_table", "single_encoder", "split_images",
           "summarise", "FINAL_COLUMNS", "final_evaluation"]
