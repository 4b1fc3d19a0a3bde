"""The results chapter's conclusions hold on the committed results, and fail loudly on a table
that contradicts them."""
import os
from pathlib import Path

import pytest

from amortlib.metrics import ClaimError, check_claims
from amortlib.metrics.findings import FINDINGS, evidence_table
from amortlib.results import load_results

PUBLISHED = Path(__file__).resolve().parent.parent / "results" / "published" / "quick"


@pytest.fixture(scope="module")
def evidence():
    if not (PUBLISHED / "units").is_dir():
        pytest.fail(f"the committed quick results are missing: {PUBLISHED}")
    return evidence_table(load_results(PUBLISHED))


def test_findings_hold_on_the_published_results(evidence):
    text = check_claims(FINDINGS, evidence)
    assert text.count("\n- ") == len(FINDINGS) - 1


def test_a_contradicting_table_stops_the_chapter(evidence):
    bad = evidence.copy()
    rows = (bad["config"] == "constant-VI") & (bad["setting"] == "Gaussian σ=0.1")
    bad.loc[rows, "active_units"] = 5.0            # constant-VI suddenly "uses" its latent
    with pytest.raises(ClaimError, match="constant-VI stays at the mean image"):
        check_claims(FINDINGS, bad)
    bad = evidence.copy()
    bad.loc[bad["config"] == "A-VI k=64", "gap_nats"] = 10.0   # A-VI now worse than F-VI
    with pytest.raises(ClaimError, match="better ELBO than jointly trained F-VI"):
        check_claims(FINDINGS, bad)


def test_a_rerun_of_one_dataset_supports_no_sentence_about_both(evidence):
    mnist_only = evidence[evidence["dataset"] == "mnist"]
    with pytest.raises(ClaimError) as err:
        check_claims(FINDINGS, mnist_only)
    assert "on both datasets" in str(err.value) and "[not checked: no rows for fashion_mnist]" in str(err.value)
    text = check_claims(FINDINGS, mnist_only, strict=False)
    supported = text.split("Not supported")[0]
    assert "on both datasets" not in supported and "Fashion" not in supported
    assert "At σ = 0.3 on MNIST" in supported        # what the MNIST units do show is still said


def test_a_configuration_whose_every_seed_diverged_keeps_its_row():
    from amortlib.metrics.compare import study_table
    res = load_results(PUBLISHED)
    runs = res["runs"]
    dead = (runs["config"] == "A-VI k=16") & (runs["dataset"] == "mnist") & (runs["sigma"] == 0.3) \
        & (runs["likelihood"] == "gaussian")
    assert dead.sum() == 3
    res["runs"] = runs.assign(diverged=runs["diverged"] | dead)
    t = study_table(res, gap=res["gap"])
    row = t[(t["config"] == "A-VI k=16") & (t["dataset"] == "mnist") & (t["setting"] == "Gaussian σ=0.3")]
    assert len(row) == 1
    assert row[["seeds", "diverged"]].values.tolist() == [[0, 3]]
    assert row[["neg_elbo", "mse_train_rel", "gap_train"]].isna().all(axis=None)
    assert len(t) == len(study_table(load_results(PUBLISHED), gap=res["gap"]))
