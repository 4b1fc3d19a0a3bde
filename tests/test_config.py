"""Parameter validation, shared by the Python API (SweepConfig, from_profile, runner.plan), the
CLI and the experiment notebook's papermill parameters: every bad value is a ValueError naming
the parameter, before anything trains. ``BAD_INPUTS`` is the table the CLI and notebook tests
reuse."""
import math
import os

import pytest

from amortlib import PROFILES, SweepConfig
from amortlib.config import DATASETS
from amortlib.datacheck import data_root, split_count

DATA = os.environ.get("AMORTLIB_DATA") or str(data_root())
MNIST_TRAIN, _ = split_count("mnist", "train", DATA)
MNIST_TEST, _ = split_count("mnist", "test", DATA)


def _need_data():
    if MNIST_TRAIN is None:
        pytest.fail(f"MNIST is missing or damaged in {DATA}: set AMORTLIB_DATA (run `amortlib data check`)")


#: (id, CLI arguments of `amortlib sweep`, the same as Python overrides, parameter named in the error)
BAD_INPUTS = [
    ("widths 0", ["--widths", "0"], dict(widths=(0,)), "widths"),
    ("widths abc", ["--widths", "abc"], dict(widths="abc"), "widths"),
    ("widths 1.5", ["--widths", "1.5"], dict(widths=(1.5,)), "widths"),
    ("seeds -1", ["--seeds", "-1"], dict(seeds=(-1,)), "seeds"),
    ("seeds repeated", ["--seeds", "1", "1"], dict(seeds=(1, 1)), "seeds"),
    ("epochs 0", ["--epochs", "0"], dict(epochs=0), "epochs"),
    ("epochs 2.5", ["--epochs", "2.5"], dict(epochs=2.5), "epochs"),
    ("lr 0", ["--lr", "0"], dict(lr=0.0), "lr"),
    ("lr -1", ["--lr", "-1"], dict(lr=-1.0), "lr"),
    ("lr nan", ["--lr", "nan"], dict(lr=float("nan")), "lr"),
    ("lr inf", ["--lr", "inf"], dict(lr=float("inf")), "lr"),
    ("lr text", ["--lr", "fast"], dict(lr="fast"), "lr"),
    ("local_lr 0", ["--local-lr", "0"], dict(local_lr=0.0), "local_lr"),
    ("local_lr text", ["--local-lr", "fast"], dict(local_lr="fast"), "local_lr"),
    ("warmup_epochs -1", ["--warmup-epochs", "-1"], dict(warmup_epochs=-1), "warmup_epochs"),
    ("warmup_epochs 2.5", ["--warmup-epochs", "2.5"], dict(warmup_epochs=2.5), "warmup_epochs"),
    ("lr_decay linear", ["--lr-decay", "linear"], dict(lr_decay="linear"), "lr_decay"),
    ("warmup_epochs beyond a decay", ["--warmup-epochs", "60", "--lr-decay", "cosine"],
     dict(warmup_epochs=60, lr_decay="cosine"), "warmup_epochs"),
    ("n_obs 0", ["--n-obs", "0"], dict(n_obs=0), "n_obs"),
    ("n_obs beyond the split", ["--n-obs", str((MNIST_TRAIN or 60000) + 1)],
     dict(n_obs=(MNIST_TRAIN or 60000) + 1), "n_obs"),
    ("n_test beyond the split", ["--n-test", str((MNIST_TEST or 10000) + 1)],
     dict(n_test=(MNIST_TEST or 10000) + 1), "n_test"),
    ("z_dim 0", ["--z-dim", "0"], dict(z_dim=0), "z_dim"),
    ("like_dim 0", ["--like-dim", "0"], dict(like_dim=0), "like_dim"),
    ("dataset cifar", ["--dataset", "cifar"], dict(dataset="cifar"), "dataset"),
    ("family unknown", ["--families", "gaussian-process"], dict(families=("gaussian-process",)), "families"),
    ("likelihood unknown", ["--likelihood", "poisson"], dict(likelihood="poisson"), "likelihood"),
    ("sigma 0", ["--sigma", "0"], dict(sigma=0.0), "sigma"),
    ("sigma -0.3", ["--sigma", "-0.3"], dict(sigma=-0.3), "sigma"),
    ("batch_size beyond n_obs", ["--batch-size", "100000"], dict(batch_size=100000), "batch_size"),
    ("eval_points 1", ["--eval-points", "1"], dict(eval_points=1), "eval_points"),
    ("precision fp16", ["--precision", "fp16"], dict(precision="fp16"), "precision"),
    ("device tpu", ["--device", "tpu"], dict(device="tpu"), "device"),
    ("unknown parameter", ["--learning-rate", "0.1"], dict(learning_rate=0.1), "learning_rate"),
]
BAD_IDS = [b[0] for b in BAD_INPUTS]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=BAD_IDS)
def test_every_bad_input_is_a_value_error_naming_the_parameter(case):
    _, _, overrides, name = case
    if "split" in case[0]:
        _need_data()
    with pytest.raises(ValueError) as err:
        SweepConfig.from_profile("test", data_root=DATA, **overrides)
    msg = str(err.value)
    assert name in msg and "\n" not in msg
    if not name.startswith("learning"):
        value = list(overrides.values())[0]
        shown = repr(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
        assert shown.strip("()").rstrip(",") in msg, msg       # the value it got
        assert "expected" in msg, msg                            # and what is allowed


@pytest.mark.parametrize("case", BAD_INPUTS, ids=BAD_IDS)
def test_runner_plan_validates_every_unit_before_anything_runs(case, tmp_path):
    from amortlib import runner
    _, _, overrides, name = case
    if "split" in case[0]:
        _need_data()
    kw = dict(overrides)
    datasets = [kw.pop("dataset")] if "dataset" in kw else ["mnist"]
    variants = None
    if "likelihood" in kw or "sigma" in kw:
        variants = [(kw.pop("likelihood", "gaussian"), kw.pop("sigma", 0.3))]
    with pytest.raises(ValueError, match=name):
        runner.plan("test", datasets, variants, data_root=DATA, **kw)


def test_direct_construction_rejects_bad_values_too():
    with pytest.raises(ValueError, match="z_dim=0"):
        SweepConfig(z_dim=0)
    with pytest.raises(ValueError, match="families=.*expected a non-empty"):
        SweepConfig(families=())
    with pytest.raises(ValueError, match="data_root=5"):
        SweepConfig(data_root=5)
    with pytest.raises(ValueError, match="progress='yes'"):
        SweepConfig(progress="yes")
    with pytest.raises(ValueError, match="theta_log_std_init"):
        SweepConfig(theta_log_std_init=float("-inf"))
    with pytest.raises(TypeError, match="learning_rate"):      # Python's own error for a dataclass
        SweepConfig(learning_rate=0.1)


def test_profiles_load_and_overrides_apply():
    for name, settings in PROFILES.items():
        cfg = SweepConfig.from_profile(name)
        assert cfg.profile == name
        for k, v in settings.items():
            assert getattr(cfg, k) == (tuple(v) if isinstance(v, (list, tuple)) else v)
    cfg = SweepConfig.from_profile("test", widths=[3, 1], seeds=[4], epochs=7)
    assert cfg.widths == (3, 1) and cfg.seeds == (4,) and cfg.epochs == 7
    assert cfg.replace(epochs=9).epochs == 9
    with pytest.raises(ValueError, match="epochs=0"):
        cfg.replace(epochs=0)


def test_from_profile_rejects_unknown_profiles_and_names():
    with pytest.raises(ValueError, match="profile='huge'.*'quick'"):
        SweepConfig.from_profile("huge")
    with pytest.raises(ValueError, match="unknown parameter.*bogus.*expected names from"):
        SweepConfig.from_profile("test", bogus=1)


def test_split_size_check_uses_the_data_on_disk():
    _need_data()
    ok = SweepConfig.from_profile("test", n_obs=MNIST_TRAIN, data_root=DATA)
    assert ok.n_obs == MNIST_TRAIN
    with pytest.raises(ValueError, match=f"n_obs={MNIST_TRAIN + 1} is invalid.*holds {MNIST_TRAIN} images"):
        SweepConfig.from_profile("test", n_obs=MNIST_TRAIN + 1, data_root=DATA)
    fashion, _ = split_count("fashion_mnist", "train", DATA)
    with pytest.raises(ValueError, match="fashion_mnist training split"):
        SweepConfig.from_profile("test", dataset="fashion_mnist", n_obs=fashion + 1, data_root=DATA)


def test_without_data_files_the_size_is_left_to_the_loader(tmp_path):
    # nothing on disk to compare with: the config is valid, the loader will download or explain
    cfg = SweepConfig.from_profile("test", n_obs=59999, data_root=str(tmp_path))
    assert cfg.n_obs == 59999


def test_all_datasets_are_known_to_the_checker():
    from amortlib.datacheck import TV_CLASS
    assert set(TV_CLASS) == set(DATASETS)


# ---------------------------------------------------------------- the notebook's parameters
def _notebook_with(params: dict):
    """The experiment notebook as ``amortlib sweep`` executes it, with papermill's own injection
    of ``params``; returns its code cells up to the validation cell."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from amortlib.runner import experiment_notebook
    nb = load_notebook_node(experiment_notebook())     # as papermill.execute_notebook reads it
    nb = parameterize_notebook(nb, params, kernel_name="python3", language="python")
    code = [c for c in nb.cells if c.cell_type == "code"]
    end = next(i for i, c in enumerate(code) if "experiment_config(" in c.source)
    return code[: end + 1]


def _exec_cells(cells):
    ns = {"__name__": "__main__"}
    for i, cell in enumerate(cells):
        try:
            exec(compile(cell.source, f"<cell {i}>", "exec"), ns)
        except Exception as err:
            return i, err, ns
    return None, None, ns


@pytest.mark.parametrize("case", BAD_INPUTS, ids=BAD_IDS)
def test_notebook_parameters_fail_in_the_validation_cell(case, tmp_path):
    """Papermill's injected parameters go through the same validation, in the cell right after
    the parameters (the real kernel runs are in test_reliability)."""
    _, _, overrides, name = case
    if "split" in case[0]:
        _need_data()
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in overrides.items()}
    params.update(output=str(tmp_path / "results"), unit="x")
    cells = _notebook_with(params)
    failed_at, err, _ = _exec_cells(cells)
    assert failed_at == len(cells) - 1, f"failed in cell {failed_at}, not the validation cell: {err!r}"
    assert isinstance(err, ValueError) and name in str(err), repr(err)
    assert not (tmp_path / "results").exists()


def test_notebook_parameters_valid_values_pass(tmp_path):
    cells = _notebook_with(dict(profile="test", dataset="fashion_mnist", widths=[2], seeds=[3], epochs=5,
                                output=str(tmp_path), unit="fashion_mnist-gaussian-s0.3"))
    failed_at, err, ns = _exec_cells(cells)
    assert failed_at is None, repr(err)
    cfg = ns["cfg"]
    assert (cfg.dataset, cfg.widths, cfg.seeds, cfg.epochs) == ("fashion_mnist", (2,), (3,), 5)
    assert ns["output"] == str(tmp_path) and ns["unit"] == "fashion_mnist-gaussian-s0.3"
