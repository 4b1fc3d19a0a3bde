"""The ``amortlib`` command: help, one-line errors with exit code 2 on bad arguments (nothing
written), ``report`` on good, diverged and corrupt results, ``data check`` on good and damaged
data folders."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from amortlib import SweepConfig
from amortlib.cli import main
from amortlib.datacheck import RAW_FILES, TV_CLASS
from test_config import BAD_IDS, BAD_INPUTS, DATA

AMORTLIB = Path(sys.executable).with_name("amortlib")


def _cli(argv, capsys):
    """(exit code, stdout, stderr) of an in-process ``amortlib`` call."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- help and bad arguments
@pytest.mark.parametrize("argv", [[], ["sweep"], ["report"], ["data"], ["data", "check"]])
def test_help_on_every_command(argv, capsys):
    code, out, _ = _cli(argv + ["--help"], capsys)
    assert code == 0 and out.startswith("usage: amortlib")
    if argv == ["sweep"]:
        for opt in ["--profile", "--dataset", "--widths", "--seeds", "--epochs", "--out", "--no-progress"]:
            assert opt in out


@pytest.mark.parametrize("case", BAD_INPUTS, ids=BAD_IDS)
def test_bad_sweep_arguments_exit_2_with_one_line_and_write_nothing(case, tmp_path, monkeypatch, capsys):
    _, argv, _, name = case
    monkeypatch.setenv("AMORTLIB_DATA", DATA)
    out_dir = tmp_path / "results"
    code, out, err = _cli(["sweep", "--profile", "test", *argv, "--out", str(out_dir)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert name in lines[0] or name.replace("_", "-") in lines[0], lines[0]
    assert lines[0].startswith("amortlib"), lines[0]
    assert not out_dir.exists() and not out


def test_sigma_with_a_bernoulli_likelihood_is_refused(tmp_path, capsys):
    code, _, err = _cli(["sweep", "--profile", "test", "--likelihood", "bernoulli", "--sigma", "0.3",
                         "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "sigma=0.3" in err and "bernoulli" in err and not (tmp_path / "r").exists()


def test_repeated_dataset_is_refused(tmp_path, capsys):
    code, _, err = _cli(["sweep", "--profile", "test", "--dataset", "mnist", "mnist",
                         "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "repeated" in err


def test_unknown_command_and_missing_subcommand(capsys):
    assert _cli(["train"], capsys)[0] == 2
    code, _, err = _cli(["data"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_installed_entry_point_exits_2_fast_on_bad_values(tmp_path):
    env = dict(os.environ, AMORTLIB_DATA=DATA)
    assert subprocess.run([str(AMORTLIB), "--help"], capture_output=True, env=env, timeout=60).returncode == 0
    for argv, name in [(["--widths", "0"], "widths"), (["--n-obs", "99999999"], "n_obs"), (["--bogus"], "bogus")]:
        p = subprocess.run([str(AMORTLIB), "sweep", "--profile", "test", *argv, "--out", str(tmp_path / "r")],
                           capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and name in p.stderr, p.stderr
        assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- report
def _fake_unit(folder: Path, dataset: str, diverge: bool):
    """A real (tiny) sweep on random images, saved as a results unit; optionally one run is
    marked diverged the way run_sweep records it."""
    from amortlib.results import save_unit
    from amortlib.train import run_sweep
    g = torch.Generator().manual_seed(0)
    x, xt = torch.rand(30, 784, generator=g), torch.rand(10, 784, generator=g)
    cfg = SweepConfig(dataset=dataset, n_obs=30, n_test=10, z_dim=2, like_dim=4, widths=(2,), seeds=(0, 1),
                      epochs=8, eval_points=3, fit_steps=4, sigma=0.5, progress=False, device="cpu",
                      profile="test")
    res = run_sweep(cfg, x, xt, calibrate_steps=0)
    if diverge:
        hit = (res.metrics.config == "A-VI k=2") & (res.metrics.seed == 1)
        last = res.metrics[hit].epoch.max()
        res.metrics = res.metrics[~hit | (res.metrics.epoch <= last)].copy()
        sel = hit & (res.metrics.epoch == last)
        res.metrics.loc[sel, ["neg_elbo", "mse_train", "mse_test"]] = float("nan")
        res.metrics.loc[sel, ["diverged"]] = True
        res.metrics.loc[sel, "epoch"] = 5
        run = (res.runs.config == "A-VI k=2") & (res.runs.seed == 1)
        res.runs.loc[run, ["neg_elbo", "mse_train", "mse_test"]] = float("nan")
        res.runs.loc[run, "diverged"] = True
        res.runs.loc[run, "final_epoch"] = 5
    save_unit(res, folder, recon=res.reconstructions(n=2))
    return res


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    _fake_unit(folder, "mnist", diverge=True)
    _fake_unit(folder, "fashion_mnist", diverge=False)
    return folder


@pytest.fixture
def results_copy(results_dir, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(results_dir, dst)
    return dst


def test_report_prints_tables_and_diverged_runs(results_dir, capsys):
    code, out, err = _cli(["report", "--results", str(results_dir)], capsys)
    assert code == 0, err
    assert "== mnist-gaussian-s0.5" in out and "== fashion_mnist-gaussian-s0.5" in out
    assert out.count("diverged") >= 2                                  # the column, per unit
    assert "1 run(s) diverged or blew up" in out and "A-VI k=2 seed 1: diverged at epoch 5" in out
    mnist_table = out.split("== mnist-gaussian-s0.5")[1]
    row = next(line for line in mnist_table.splitlines() if line.strip().startswith("A-VI k=2"))
    assert row.split()[-2:] == ["1", "0"]                               # diverged, blew up
    fashion = out.split("== fashion_mnist-gaussian-s0.5")[1].split("==")[0]
    assert "diverged or blew up" not in fashion


def test_summary_table_counts_diverged_runs(results_dir):
    from amortlib.metrics import summary_table
    from amortlib.results import load_results
    runs = load_results(results_dir)["runs"]
    t = summary_table(runs[runs.dataset == "mnist"]).set_index("config")
    assert t.loc["A-VI k=2", "diverged"] == 1 and t.loc["F-VI", "diverged"] == 0


def _truncate(path: Path):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _garble(path: Path):
    path.write_text(path.read_text()[:40] + "#garbage")


def _duplicate_rows(path: Path):
    df = pd.read_parquet(path)
    pd.concat([df, df.iloc[:2]]).to_parquet(path, index=False)


def _wrong_type(path: Path):
    df = pd.read_parquet(path)
    df["epoch"] = df["epoch"].astype(str)
    df.to_parquet(path, index=False)


def _drop_column(path: Path):
    pd.read_parquet(path).drop(columns=["mse_test"]).to_parquet(path, index=False)


@pytest.mark.parametrize("damage, suffix, says", [
    (_truncate, ".metrics.parquet", "corrupt results file"),
    (_truncate, ".runs.parquet", "corrupt results file"),
    (_garble, ".json", "corrupt results file"),
    (_duplicate_rows, ".metrics.parquet", "duplicate rows"),
    (_duplicate_rows, ".runs.parquet", "duplicate rows"),
    (_wrong_type, ".metrics.parquet", "wrong column types: epoch"),
    (_drop_column, ".runs.parquet", "missing columns mse_test"),
    (lambda p: p.unlink(), ".metrics.parquet", "missing results file"),
])
def test_report_names_a_corrupt_file_and_exits_nonzero(results_copy, capsys, damage, suffix, says):
    bad = results_copy / "units" / f"mnist-gaussian-s0.5{suffix}"
    damage(bad)
    code, out, err = _cli(["report", "--results", str(results_copy)], capsys)
    assert code == 1
    assert str(bad) in err and says in err, err
    assert "== fashion_mnist-gaussian-s0.5" in out and "== mnist-gaussian-s0.5" not in out  # not shown


def test_reading_for_plots_raises_naming_the_file(results_copy):
    from amortlib.results import ResultsError, load_results
    bad = results_copy / "units" / "fashion_mnist-gaussian-s0.5.runs.parquet"
    _truncate(bad)
    with pytest.raises(ResultsError, match=str(bad)):
        load_results(results_copy)
    assert set(load_results(results_copy, errors="skip")["meta"]) == {"mnist-gaussian-s0.5"}


def test_report_without_results(tmp_path, capsys):
    code, _, err = _cli(["report", "--results", str(tmp_path)], capsys)
    assert code == 1 and "no finished results" in err
    code, _, err = _cli(["report", "--results", str(tmp_path / "nope")], capsys)
    assert code == 1 and "nope" in err


def test_unit_record_for_another_unit_is_corrupt(results_copy, capsys):
    meta = results_copy / "units" / "mnist-gaussian-s0.5.json"
    rec = json.loads(meta.read_text())
    rec["unit"] = "fashion_mnist-gaussian-s0.5"
    meta.write_text(json.dumps(rec))
    code, _, err = _cli(["report", "--results", str(results_copy)], capsys)
    assert code == 1 and str(meta) in err


# ---------------------------------------------------------------- data check
def _copy_split(root: Path, dataset: str, split: str):
    raw = root / TV_CLASS[dataset] / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in RAW_FILES[split]:
        shutil.copy(Path(DATA) / TV_CLASS[dataset] / "raw" / f, raw / f)
    return raw


def test_data_check_on_the_data_folder(capsys):
    code, out, _ = _cli(["data", "check", "--root", DATA], capsys)
    assert code == 0, out
    assert out.count("ok   ") == 4


def test_data_check_names_missing_and_truncated_files_and_how_to_get_them(tmp_path, capsys):
    _copy_split(tmp_path, "mnist", "train")                                 # correct
    raw = _copy_split(tmp_path, "mnist", "test")
    _truncate(raw / "t10k-images-idx3-ubyte")                               # truncated
    raw = _copy_split(tmp_path, "fashion_mnist", "train")
    (raw / "train-labels-idx1-ubyte").unlink()                              # missing
    code, out, _ = _cli(["data", "check", "--root", str(tmp_path)], capsys)
    assert code == 1
    lines = out.splitlines()
    assert any(line.startswith("ok   mnist train:") for line in lines)
    trunc = [line for line in lines if "t10k-images-idx3-ubyte: truncated" in line]
    assert trunc and trunc[0].startswith("FAIL mnist test:") and "header promises" in trunc[0]
    miss = [line for line in lines if "train-labels-idx1-ubyte: missing" in line]
    assert miss and miss[0].startswith("FAIL fashion_mnist train:") and str(tmp_path) in miss[0]
    assert any("FAIL fashion_mnist test" in line for line in lines)         # not there at all
    fix = out.split("To fix:")[1]
    assert "t10k-images-idx3-ubyte.gz" in fix and "gunzip" in fix and "AMORTLIB_DATA" in fix
    assert str(tmp_path / "FashionMNIST" / "raw") in fix


def test_data_check_one_dataset_and_label_count_mismatch(tmp_path, capsys):
    raw = _copy_split(tmp_path, "mnist", "train")
    _copy_split(tmp_path, "mnist", "test")
    code, out, _ = _cli(["data", "check", "--root", str(tmp_path), "--dataset", "mnist"], capsys)
    assert code == 0 and "fashion" not in out
    labels = raw / "train-labels-idx1-ubyte"                  # a consistent file with fewer labels
    data = bytearray(labels.read_bytes())
    n = int.from_bytes(data[4:8], "big") - 1
    data[4:8] = n.to_bytes(4, "big")
    labels.write_bytes(bytes(data[: 8 + n]))
    code, out, _ = _cli(["data", "check", "--root", str(tmp_path), "--dataset", "mnist"], capsys)
    assert code == 1 and "images but" in out and f"{n} labels" in out


def test_data_check_on_a_folder_that_does_not_exist(tmp_path, capsys):
    code, out, _ = _cli(["data", "check", "--root", str(tmp_path / "nowhere")], capsys)
    assert code == 1 and "does not exist" in out and "To fix:" in out
