"""The paper profile: the reference's scale and likelihood settings, with n_obs / n_test capped at
what the data split holds (and said so in the results), while an explicit value beyond the
split stays an error."""
import pytest
import torch

from amortlib import PROFILES, SweepConfig, runner
from amortlib.cli import main
from amortlib.config import describe_split_limits
from amortlib.datacheck import split_count
from test_config import DATA


def _held(dataset, split):
    n, _ = split_count(dataset, split, DATA)
    assert n is not None, f"{dataset} {split} missing in {DATA}"
    return n


def test_paper_profile_is_the_references_scale_over_three_likelihoods():
    p = PROFILES["paper"]
    assert (p["n_obs"], p["z_dim"], p["like_dim"], p["widths"], len(p["seeds"]), p["epochs"]) == \
        (10000, 64, 256, (1, 64, 128, 256), 5, 5000)
    units = dict(runner.plan("paper", data_root=DATA))
    assert sorted(units) == sorted(f"{ds}-{lik}" for ds in ("mnist", "fashion_mnist")
                                   for lik in ("gaussian-s0.1", "gaussian-s0.707107", "bernoulli"))
    sig = units["mnist-gaussian-s0.707107"].sigma
    assert 1 / (2 * sig ** 2) == pytest.approx(1.0, abs=1e-15)     # the reference's squared-error weight


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_paper_profile_caps_at_the_split_and_records_it(dataset):
    cfg = SweepConfig.from_profile("paper", dataset=dataset, data_root=DATA)
    held = _held(dataset, "train")
    assert cfg.n_obs == min(10000, held)
    assert cfg.n_test == min(1000, _held(dataset, "test"))
    want = {"n_obs": {"profile": 10000, "split": held}} if held < 10000 else {}
    assert cfg.split_limits() == want
    if want:            # this project's Fashion-MNIST split: 8000 training images
        assert describe_split_limits(want) == f"n_obs {held} (the split holds {held} of the paper profile's 10000)"
    # the same config as the notebook rebuilds it (n_obs passed explicitly) keeps the record
    assert SweepConfig.from_profile("paper", dataset=dataset, n_obs=cfg.n_obs, data_root=DATA).split_limits() == want


def test_an_explicit_n_obs_beyond_the_split_is_still_an_error(capsys):
    held = _held("fashion_mnist", "train")
    with pytest.raises(ValueError, match=f"n_obs={held + 1} is invalid: expected an integer between 1 and {held}"):
        SweepConfig.from_profile("paper", dataset="fashion_mnist", n_obs=held + 1, data_root=DATA)
    code = main(["sweep", "--profile", "paper", "--dataset", "fashion_mnist", "--n-obs", str(held + 1),
                 "--data-root", DATA])
    assert code == 2 and f"n_obs={held + 1} is invalid" in capsys.readouterr().err
    with pytest.raises(ValueError, match="n_obs=20000 is invalid"):       # other profiles: never capped
        SweepConfig.from_profile("quick", dataset="fashion_mnist", n_obs=20000, data_root=DATA)


def test_the_sweep_says_it_and_the_report_header_shows_it(tmp_path, capsys):
    """A paper-profile unit shrunk in everything but n_obs (2 epochs of a tiny model on the
    whole split), saved as the notebook saves it: the cap is in its info and in `amortlib report`."""
    from amortlib.cli import _say_split_limits
    from amortlib.results import save_unit
    from amortlib.train import run_sweep
    held = _held("fashion_mnist", "train")
    units = runner.plan("paper", ["fashion_mnist"], [("gaussian", 0.1)], data_root=DATA, epochs=2, widths=(2,),
                        seeds=(0,), n_test=20, z_dim=2, like_dim=4, fit_steps=2, eval_points=2, progress=False,
                        device="cpu")
    _say_split_limits(units)
    said = capsys.readouterr().out
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_sweep(units[0][1], calibrate_steps=0)
    finally:
        torch.set_num_threads(threads)
    save_unit(result, tmp_path, units[0][0])
    assert main(["report", "--results", str(tmp_path)]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("== "))
    if held < 10000:
        note = f"n_obs {held} (the split holds {held} of the paper profile's 10000)"
        assert said == f"fashion_mnist: {note}\n"
        assert result.info["split_limits"] == {"n_obs": {"profile": 10000, "split": held}}
        assert note in header, header
    else:
        assert said == "" and result.info["split_limits"] == {} and "split holds" not in header
