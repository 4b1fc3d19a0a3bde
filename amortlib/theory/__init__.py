"""Small, exact examples of amortized vs factorized variational inference (CPU, float64).

- ``normal_normal``: a Gaussian hierarchical model whose exact posterior, mean-field optimum
  and log evidence are closed form; the ideal inference function is linear in x_n.
- ``nonlinear``: a nonlinear likelihood whose ideal inference function is nonlinear, so the
  amortization gap shrinks as the encoder widens.
- ``saw``: a zig-zag time series whose latent z_n is informed by x_n and x_{n+1}; an encoder
  that sees x_n alone cannot close the gap at any width, one that sees (x_n, x_{n+1}) can.
- ``fit``: the shared fitting code (F-VI, A-VI, constant-VI, closed-form ELBOs, Adam + L-BFGS).
"""
