"""The learning-rate study's table (amortlib.metrics.sensitivity) on the published lr 0.01 results,
read as one setting and as a second, relabelled one."""
import copy
from pathlib import Path

import numpy as np
import pytest

from amortlib.metrics.sensitivity import LR_SETTINGS, fvi_falls, load_lr_study, lr_table
from amortlib.results import ResultsError, load_results
from amortlib.train.audit import plateau

#: The quick profile's runs at lr 0.01 everywhere (published as the quick results until F-VI's
#: table got its own rate), kept as the study's lr 0.01 setting.
QUICK = Path(__file__).resolve().parents[1] / "results" / "published" / "lr_study" / "lr_0_01"


@pytest.fixture(scope="module")
def quick():
    return load_results(QUICK)


def _relabel(res, lr, local_lr=None):
    out = copy.deepcopy(res)
    for m in out["meta"].values():
        m["config"]["lr"], m["config"]["local_lr"] = lr, local_lr
    return out


def test_one_row_per_setting_and_configuration_with_fvi_as_the_paired_reference(quick):
    t = lr_table([quick, _relabel(quick, 0.003, 0.1)])
    assert set(zip(t["lr"], t["local_lr"])) == {(0.01, 0.01), (0.003, 0.1)}
    keys = ["dataset", "likelihood", "sigma", "lr", "local_lr", "config"]
    assert not t.duplicated(keys).any()
    n_units, n_configs = len(quick["meta"]), quick["runs"]["config"].nunique()
    assert len(t) == 2 * n_units * n_configs
    fvi = t[t["config"] == "F-VI"]
    assert np.allclose(fvi["gap_nats"], 0) and np.allclose(fvi["speedup"].dropna(), 1)
    # the same numbers under both labels
    a, b = (t[t["lr"] == lr].drop(columns=["lr", "local_lr"]).reset_index(drop=True) for lr in (0.01, 0.003))
    assert a.equals(b)


def test_gap_and_still_falling_are_those_of_the_runs(quick):
    t = lr_table([quick]).set_index(["dataset", "sigma", "config"])
    runs = quick["runs"][(quick["runs"]["likelihood"] == "gaussian") & (quick["runs"]["sigma"] == 0.1)
                         & (quick["runs"]["dataset"] == "mnist")].set_index(["config", "seed"])
    gap = (runs.loc["A-VI k=64", "neg_elbo"] - runs.loc["F-VI", "neg_elbo"]).mean()
    assert t.loc[("mnist", 0.1, "A-VI k=64"), "gap_nats"] == pytest.approx(gap)
    m = quick["metrics"]
    m = m[(m["dataset"] == "mnist") & (m["likelihood"] == "gaussian") & (m["sigma"] == 0.1)]
    p = plateau(m)
    assert t.loc[("mnist", 0.1, "F-VI"), "still_falling"] == pytest.approx(
        p[p["config"] == "F-VI"]["drop_per_100_epochs"].mean())
    assert fvi_falls(lr_table([quick])).loc[("mnist", "gaussian", 0.1, 0.01, 0.01)] > 0
    # a configuration whose seeds blew up counts them, and its means rest on the live ones only
    k256 = t.loc[("fashion_mnist", 0.1, "A-VI k=256")]
    assert k256["seeds"] + k256["blew_up"] >= k256["of"] and k256["seeds"] < k256["of"]


def test_a_folder_that_mixes_learning_rates_or_no_study_is_refused(quick, tmp_path):
    mixed = copy.deepcopy(quick)
    first = next(iter(mixed["meta"].values()))
    first["config"]["lr"] = 0.5
    with pytest.raises(ValueError, match="mix learning rates"):
        lr_table([mixed])
    with pytest.raises(ValueError, match=r"results=\[\] is invalid"):
        lr_table([])
    with pytest.raises(ResultsError, match="no learning-rate study"):
        load_lr_study(tmp_path)
    assert [n for n, _, _ in LR_SETTINGS][2] == "lr_0_01"
    assert len(load_lr_study(tmp_path, base=QUICK)) == 1


def test_the_published_study_bears_out_every_sentence_the_chapter_prints():
    from amortlib.metrics import check_claims
    from amortlib.metrics.sensitivity import LR_FINDINGS
    t = lr_table(load_lr_study(QUICK.parent))
    assert set(zip(t["lr"], t["local_lr"])) == {(0.001, 0.001), (0.003, 0.003), (0.01, 0.01), (0.01, 0.1)}
    text = check_claims(LR_FINDINGS, t)              # strict: raises naming any false sentence
    assert text.count("\n- ") == len(LR_FINDINGS) - 1
    # and a table whose F-VI had converged would contradict the first sentence
    flat = t.assign(still_falling=t["still_falling"].where(t["config"] != "F-VI", 0.0))
    with pytest.raises(AssertionError, match="No F-VI run of the study reached its optimum"):
        check_claims(LR_FINDINGS, flat)


def test_last_stretch_of_the_curves_and_the_lr_figure(quick):
    from amortlib.plots import results as rplots
    full = rplots.curves(quick, "mnist", "neg_elbo")
    tail = rplots.curves(quick, "mnist", "neg_elbo", last=0.5)
    assert full.layout.xaxis.type == "log" and tail.layout.xaxis.type == "linear"
    assert "the last 50% of training" in tail.layout.title.text
    xs = [x for tr in tail.data if tr.mode == "lines" and tr.name != "mean image" for x in tr.x]
    epochs = quick["metrics"]["epoch"].max()
    assert min(xs) >= epochs / 2 and max(xs) == epochs
    # the y range holds F-VI's and the best configuration's last values
    m = quick["metrics"]
    end = m[(m["dataset"] == "mnist") & (m["unit"] == "mnist-gaussian-s0.1") & (m["epoch"] == epochs)]
    lo, hi = tail.layout.yaxis.range
    for cfg in ("F-VI", "A-VI k=64"):
        v = end[end["config"] == cfg]["neg_elbo"]
        assert lo <= v.min() and v.max() <= hi, cfg
    with pytest.raises(ValueError, match=r"last=0 is invalid"):
        rplots.curves(quick, "mnist", "neg_elbo", last=0)
    fig = rplots.lr_figure(lr_table([quick, _relabel(quick, 0.003), _relabel(quick, 0.01, 0.1)]), "mnist", sigma=0.1)
    assert fig.layout.xaxis.type == "log"
    assert any(tr.name == "F-VI, table lr 0.1" for tr in fig.data)
    with pytest.raises(ValueError, match="dataset='cifar'"):
        rplots.lr_figure(lr_table([quick]), "cifar")
