"""What the models with one scalar observation x_n per latent z_n share: the number of local
latents and the inputs an inference function may see, and the precision of all theory code."""
from __future__ import annotations

import torch

#: The theory examples compute in float64 (exact answers to compare against).
DTYPE = torch.float64


class ScalarData:
    """Mixin for models whose data dict holds x [N]."""

    def n_local(self, data: dict) -> int:
        return int(data["x"].shape[0])

    def inputs(self, data: dict, domain: str = "x") -> torch.Tensor:
        """Encoder inputs [N, d]: x_n, or (x_n, x_{n+1}) with a cyclic neighbour (for independent
        or exchangeable data the neighbour carries no information about z_n)."""
        x = data["x"]
        if domain == "x":
            return x[:, None]
        if domain == "x,x_next":
            return torch.stack([x, torch.roll(x, -1)], dim=1)
        raise ValueError(f"inputs={domain!r} is invalid: expected 'x' or 'x,x_next'")
