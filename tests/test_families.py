"""Each family's shapes and gradients through the shared interface."""
import torch

from amortlib import SweepConfig
from amortlib.model import Amortized, Constant, Factorized
from amortlib.objective import NoiseSource
from amortlib.train import StackedVAE
from amortlib.objective import neg_elbo


def test_family_shapes():
    x, idx = torch.rand(7, 784), torch.arange(3, 10)
    for fam, M in [(Factorized([0, 1], 20, 4), 2), (Amortized([1, 8], [0, 1, 2], 4), 6),
                   (Constant([5], 4), 1)]:
        q = fam(x, idx)
        assert q.mu.shape == (M, 7, 4) and q.log_sigma.shape == (M, 7, 4)
        assert len(fam.specs) == M


def test_amortized_depth_and_width_parameters():
    enc = Amortized([3], [0], 2, x_dim=10, depth=3)
    q = enc(torch.rand(4, 10))
    assert q.mu.shape == (1, 4, 2)
    assert len(enc.groups[0].w_hidden) == 2
    assert enc.groups[0].w_in.shape == (10, 1, 3)


def test_gradients_reach_every_family_and_factorized_only_touches_batch_rows():
    cfg = SweepConfig(n_obs=12, z_dim=3, like_dim=5, widths=(2,), seeds=(0,), progress=False)
    model = StackedVAE(cfg, x_dim=6)
    x = torch.rand(12, 6)
    idx = torch.tensor([0, 5, 7])
    eps_z, eps_t = NoiseSource(model.seeds, "cpu").draw(model.seed_index, 1, 3, 3, model.decoder.n_params)
    loss = neg_elbo(x[idx], model.q_z(x[idx], idx), model.decoder, model.likelihood, 12, eps_z, eps_t)
    assert loss.shape == (3,)
    loss.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    table_grad = model.families[0].table.grad.coalesce()
    assert sorted(table_grad.indices()[0].tolist()) == [0, 5, 7]
    assert model.families[1].groups[0].w_in.grad.abs().sum() > 0
    assert model.families[2].params_.grad.abs().sum() > 0
    assert model.decoder.log_s.grad.abs().sum() > 0


def test_minibatch_step_moves_only_batch_rows_of_factorized():
    from amortlib.train.sweep import train_step
    cfg = SweepConfig(n_obs=10, z_dim=2, like_dim=4, families=("factorized",), widths=(), seeds=(0,),
                      batch_size=3, progress=False)
    model = StackedVAE(cfg, x_dim=5)
    opts = model.optimizers(0.1)
    x = torch.rand(10, 5)
    before = model.families[0].table.detach().clone()
    alive = torch.ones(1, dtype=torch.bool)
    noise = NoiseSource(model.seeds, "cpu")
    for idx in [torch.tensor([1, 2, 3]), torch.tensor([1, 2, 3])]:
        train_step(model, opts, x, idx, noise, alive, cfg)
    moved = (model.families[0].table.detach() != before).any(1)
    assert moved.tolist() == [i in (1, 2, 3) for i in range(10)]
