"""The gap-against-N table (amortlib.metrics.datasize) on the published results."""
import copy
from pathlib import Path

import pytest

from amortlib.metrics.datasize import GAP_N_FINDINGS, gap_by_n, load_gap_study
from amortlib.results import load_results

PUBLISHED = Path(__file__).resolve().parents[1] / "results" / "published"


@pytest.fixture(scope="module")
def quick():
    return load_results(PUBLISHED / "lr_study" / "lr_0_01")   # both datasets at sigma 0.1, N = 1000


def test_gap_by_n_is_the_seed_mean_of_each_models_gap_live_runs_only(quick):
    t = gap_by_n([quick])
    assert set(t["n_obs"]) == {1000} and set(t["split"]) == {"train", "test"}
    g = quick["gap"]
    one = g[(g["unit"] == "mnist-gaussian-s0.1") & (g["config"] == "A-VI k=64") & (g["split"] == "test")]
    row = t[(t["dataset"] == "mnist") & (t["sigma"] == 0.1) & (t["config"] == "A-VI k=64") & (t["split"] == "test")]
    assert len(row) == 1 and row["gap"].iloc[0] == pytest.approx(one["gap_mean"].mean())
    assert row["gap_min"].iloc[0] == pytest.approx(one["gap_mean"].min()) and row["seeds"].iloc[0] == 3
    # Fashion-MNIST k = 256 at sigma 0.1: two of three seeds blew up, their gaps are left out
    k256 = t[(t["dataset"] == "fashion_mnist") & (t["sigma"] == 0.1) & (t["config"] == "A-VI k=256")]
    assert set(k256["seeds"]) == {1}
    # F-VI has no inference function, hence no gap row
    assert "F-VI" not in set(t["config"])


def test_bad_inputs_are_named(quick, tmp_path):
    with pytest.raises(ValueError, match=r"results=\[\] is invalid"):
        gap_by_n([])
    no_gap = copy.copy(quick)
    no_gap["gap"] = None
    with pytest.raises(ValueError, match="hold no gap tables"):
        gap_by_n([no_gap])


def test_the_published_study_bears_out_every_sentence_the_chapter_prints():
    from amortlib.metrics import check_claims
    t = gap_by_n(load_gap_study(PUBLISHED / "gap_vs_n"))
    assert sorted(set(t[t["dataset"] == "mnist"]["n_obs"])) == [300, 1000, 3000]
    text = check_claims(GAP_N_FINDINGS, t)
    assert text.count("\n- ") == len(GAP_N_FINDINGS) - 1
    # a table whose training gap fell with N would contradict the first sentence
    fell = t.assign(gap=t["gap"].where(~((t["n_obs"] == 3000) & (t["split"] == "train")), 1.0),
                    gap_min=t["gap_min"].where(~((t["n_obs"] == 3000) & (t["split"] == "train")), 1.0))
    with pytest.raises(AssertionError, match="On training images the gap grows with N"):
        check_claims(GAP_N_FINDINGS, fell)
