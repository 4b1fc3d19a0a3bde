"""MNIST and Fashion-MNIST through ``torchvision.datasets``, flattened to [n, 784] in [0, 1].

Root folder: the ``root`` argument, else ``$AMORTLIB_DATA``, else ``~/.cache/amortlib/data``.
Online, torchvision downloads what is missing; offline, a missing file is one clear error
that names ``AMORTLIB_DATA`` and the files needed.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..config import DATASETS

#: torchvision class name and the raw files it reads, per dataset.
RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
TV_CLASS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
_CACHE: dict = {}


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding ``MNIST/raw`` and ``FashionMNIST/raw``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("AMORTLIB_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "amortlib" / "data"


def _raw_paths(root: Path, dataset: str, split: str) -> list[Path]:
    raw = root / TV_CLASS[dataset] / "raw"
    return [raw / f for f in RAW_FILES[split]]


def _missing_message(root: Path, dataset: str, split: str, missing: list[Path], err) -> str:
    names = ", ".join(str(p) for p in missing) or "(files unreadable)"
    return (f"cannot load {dataset} {split} images from {root}: missing {names}. "
            f"Set AMORTLIB_DATA (or pass data_root) to a folder laid out for torchvision.datasets."
            f"{TV_CLASS[dataset]} (<root>/{TV_CLASS[dataset]}/raw/{RAW_FILES[split][0]} and "
            f"{RAW_FILES[split][1]}), or run once with internet access to download them. "
            f"(cause: {type(err).__name__}: {err})")


def load_split(dataset: str, split: str = "train", root=None) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of one split as float32 [n, 784] in [0, 1] and their int64 labels [n]."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r} is invalid: expected one of {', '.join(DATASETS)}")
    if split not in RAW_FILES:
        raise ValueError(f"split={split!r} is invalid: expected 'train' or 'test'")
    root = data_root(root)
    key = (str(root.resolve()), dataset, split)
    if key not in _CACHE:
        import torch  # heavy imports only when images are loaded (datacheck reads this module too)
        import torchvision.datasets as tvd

        cls = getattr(tvd, TV_CLASS[dataset])
        missing = [p for p in _raw_paths(root, dataset, split) if not p.is_file()]
        try:
            ds = cls(root=str(root), train=(split == "train"), download=bool(missing))
        except Exception as err:  # offline download, truncated file, ...
            raise FileNotFoundError(_missing_message(root, dataset, split, missing, err)) from None
        x = ds.data.reshape(len(ds.data), -1).to(torch.float32) / 255.0
        _CACHE[key] = (x, ds.targets.to(torch.int64))
    return _CACHE[key]


def load(dataset: str, split: str = "train", n: int | None = None, root=None) -> torch.Tensor:
    """The first ``n`` images of a split (all if None) as float32 [n, 784] in [0, 1]."""
    x, _ = load_split(dataset, split, root)
    if n is None:
        return x
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} is invalid: expected an integer >= 1")
    if n > len(x):
        raise ValueError(f"n={n} is invalid: the {dataset} {split} split at {data_root(root)} "
                         f"holds {len(x)} images")
    return x[:n]


def load_labels(dataset: str, split: str = "train", n: int | None = None, root=None) -> torch.Tensor:
    _, y = load_split(dataset, split, root)
    return y if n is None else y[:n]
