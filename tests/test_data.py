"""Data loading from $AMORTLIB_DATA: shapes, scaling, first-n semantics, clear errors; and the
light-weight checker's view of the same folder."""
import os
import shutil
import struct

import pytest
import torch

import amortlib.data as data
from amortlib import datacheck

DATA = os.environ.get("AMORTLIB_DATA") or str(data.data_root())


@pytest.fixture(scope="module")
def n_train():
    n, _ = datacheck.split_count("mnist", "train", DATA)
    if n is None:
        pytest.fail(f"MNIST is missing or damaged in {DATA}: set AMORTLIB_DATA (see `amortlib data check`)")
    return n


def _first_images_from_the_file(k: int) -> torch.Tensor:
    """The first k images read straight from the IDX bytes, independently of torchvision."""
    path = os.path.join(DATA, "MNIST", "raw", "train-images-idx3-ubyte")
    with open(path, "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        raw = f.read(k * rows * cols)
    return torch.tensor(list(raw), dtype=torch.float32).reshape(k, rows * cols) / 255.0


def test_load_reads_amortlib_data_as_flat_floats_in_unit_interval(monkeypatch, n_train):
    monkeypatch.setenv("AMORTLIB_DATA", DATA)
    x = data.load("mnist", "train", n=50)
    assert x.shape == (50, 784) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.9
    xt = data.load("mnist", "test", n=20)
    assert xt.shape == (20, 784)
    assert data.load_labels("mnist", "train", n=50).shape == (50,)


def test_first_n_semantics(monkeypatch, n_train):
    monkeypatch.setenv("AMORTLIB_DATA", DATA)
    small, big = data.load("mnist", "train", n=7), data.load("mnist", "train", n=30)
    assert torch.equal(small, big[:7])
    assert torch.equal(small, _first_images_from_the_file(7))
    assert len(data.load("mnist", "train")) == n_train


def test_n_too_big_says_how_many_there_are(monkeypatch, n_train):
    monkeypatch.setenv("AMORTLIB_DATA", DATA)
    with pytest.raises(ValueError, match=rf"n={n_train + 1} is invalid.*holds {n_train} images"):
        data.load("mnist", "train", n=n_train + 1)
    with pytest.raises(ValueError, match="n=0"):
        data.load("mnist", "train", n=0)
    with pytest.raises(ValueError, match="dataset='cifar'"):
        data.load("cifar")


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_missing_files_fail_fast_naming_amortlib_data(monkeypatch, tmp_path, dataset):
    import torchvision.datasets as tvd
    # no network needed or used: every download attempt is refused at once
    monkeypatch.setattr(tvd.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    monkeypatch.setattr(tvd.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])
    monkeypatch.setenv("AMORTLIB_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        data.load(dataset, "train", n=5)
    msg = str(err.value)
    assert "AMORTLIB_DATA" in msg and str(tmp_path) in msg and "train-images-idx3-ubyte" in msg


def test_checker_constants_match_the_loader():
    assert datacheck.RAW_FILES == data.RAW_FILES and datacheck.TV_CLASS == data.TV_CLASS
    assert datacheck.data_root(DATA) == data.data_root(DATA)
    assert datacheck.data_root() == data.data_root()


def test_split_count_reads_headers_and_rejects_damaged_files(tmp_path, n_train):
    assert datacheck.split_count("mnist", "train", DATA)[0] == n_train
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in datacheck.RAW_FILES["train"]:
        shutil.copy(os.path.join(DATA, "MNIST", "raw", f), raw / f)
    assert datacheck.split_count("mnist", "train", tmp_path)[0] == n_train
    img = raw / "train-images-idx3-ubyte"
    with open(img, "r+b") as f:
        f.truncate(16 + 784 * 10 + 5)                        # half an image short
    assert datacheck.split_count("mnist", "train", tmp_path)[0] is None
    assert datacheck.split_count("mnist", "test", tmp_path)[0] is None   # missing
