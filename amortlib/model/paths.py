"""Which code path the training kernels take: the CPU's or the GPU's.

Three places in the model pick their algorithm by the device of their tensors:

- ``GaussianLikelihood.log_prob_sum``: on CPU the chunked kernel ``decoder_sse`` (decoder,
  residual and every gradient in one cache-resident pass); on a GPU the batched autograd path
  (``decode_hidden`` + the fused ``_AffineSquaredError`` last layer: a few large kernels).
- ``reparam_kl``: on CPU a per-model loop that reads each model's noise row in place; on a
  GPU one gathered ``eps[index]`` and a handful of batched ops.
- ``Amortized.forward``: on CPU the fused all-encoders function ``_EncodersFn``; on a GPU the
  per-width ``_EncoderGroup`` modules through autograd.

Both paths compute the same numbers (float64: to rounding; tests/test_paths.py). So that a
machine without a GPU can test the GPU's path, it can be forced, for tests and benchmarks only:

    from amortlib.model import paths
    with paths.force("gpu"):        # CPU tensors now take the GPU's path
        ...

or for a whole process, ``AMORTLIB_FORCE_PATH=gpu`` (or ``cpu``) in the environment, read
once at import. ``force("cpu")`` on a GPU runs the CPU kernels on CUDA tensors (slowly).
"""
from __future__ import annotations

import contextlib
import os

import torch

PATHS = ("cpu", "gpu")
ENV = "AMORTLIB_FORCE_PATH"


def _from_env() -> str | None:
    value = os.environ.get(ENV) or None
    if value is not None and value not in PATHS:
        raise ValueError(f"{ENV}={value!r} is invalid: expected 'cpu', 'gpu' or unset")
    return value


_forced: str | None = _from_env()


def gpu_path(device: torch.device | str) -> bool:
    """Whether tensors on ``device`` take the GPU's path: a non-CPU device, unless forced."""
    if _forced is not None:
        return _forced == "gpu"
    return torch.device(device).type != "cpu"


def forced() -> str | None:
    """The path forced now ('cpu' or 'gpu'), or None: each device takes its own."""
    return _forced


@contextlib.contextmanager
def force(path: str | None):
    """Within the block, every device takes ``path`` ('cpu' or 'gpu'; None: its own)."""
    global _forced
    if path is not None and path not in PATHS:
        raise ValueError(f"path={path!r} is invalid: expected 'cpu', 'gpu' or None")
    old, _forced = _forced, path
    try:
        yield
    finally:
        _forced = old
