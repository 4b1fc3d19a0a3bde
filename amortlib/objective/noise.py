"""The one source of Monte Carlo noise: standard normals from one generator per model seed.

Every model with a given seed sees the same eps for theta and z (common random numbers across
families and widths), in the same order whether it runs alone or beside others. Each use draws
from its own stream (``offset``), so training, test-time fits, evaluation and bounds never
share numbers.
"""
from __future__ import annotations

import torch


class NoiseSource:
    """Standard-normal noise, one generator per seed, so every model with a given seed sees the
    same eps for theta and z (common random numbers across families), in the same order whether
    it is trained alone or in a sweep."""

    def __init__(self, seeds, device, offset: int = 0):
        self.gens = []
        for s in seeds:
            g = torch.Generator(device=device)
            g.manual_seed(10_007 * int(s) + 17 + offset)
            self.gens.append(g)
        self.device = device

    def draw(self, seed_index: torch.Tensor, n_mc: int, batch: int, z_dim: int, n_params: int):
        """eps_z [M, S, B, d], eps_theta [M, S, P] (M = len(seed_index))."""
        ez, et = self.draw_streams(n_mc, batch, z_dim, n_params)
        return ez[seed_index], et[seed_index]

    def draw_streams(self, n_mc: int, batch: int, z_dim: int, n_params: int):
        """The same numbers as ``draw``, one row per seed: eps_z [U, S, B, d], eps_theta
        [U, S, P]; model m's noise is row seed_index[m] (pass ``noise_index`` to the ELBO),
        so models sharing a seed share the memory instead of copies."""
        ez = torch.empty(len(self.gens), n_mc, batch, z_dim, device=self.device)
        et = torch.empty(len(self.gens), n_mc, n_params, device=self.device)
        for u, g in enumerate(self.gens):
            torch.randn(n_mc, n_params, generator=g, device=self.device, out=et[u])
            torch.randn(n_mc, batch, z_dim, generator=g, device=self.device, out=ez[u])
        return ez, et

    def normal(self, *shape) -> torch.Tensor:
        """[M, *shape], the m-th block from the m-th generator."""
        return torch.stack([torch.randn(*shape, generator=g, device=self.device) for g in self.gens])
