"""``amortlib data check``: is the data folder complete and consistent?

Reads only the IDX headers (magic number, count, sizes), compares each file's length with what
its header promises, and the image count with the label count. Light on purpose (no torch):
``SweepConfig`` uses :func:`split_count` to reject ``n_obs`` beyond the split before training.
The layout constants mirror ``amortlib.data`` (a test keeps them equal).
"""
from __future__ import annotations

import struct
from pathlib import Path

from .data import RAW_FILES, TV_CLASS, data_root

#: Where the official gzipped files are published (torchvision downloads from these).
SOURCES = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
#: Official sizes (the full sets); a smaller consistent file is fine, just smaller.
OFFICIAL = {"train": 60000, "test": 10000}
_MAGIC = {"images": 2051, "labels": 2049}


def _inspect(path: Path, kind: str):
    """(count, problem or None) of one IDX file."""
    if not path.is_file():
        gz = path.with_name(path.name + ".gz")
        return None, ("missing (found its .gz: uncompress it with gunzip)" if gz.is_file() else "missing")
    size = path.stat().st_size
    header = 16 if kind == "images" else 8
    if size < header:
        return None, f"truncated: {size} bytes, shorter than its {header}-byte header"
    with open(path, "rb") as f:
        head = f.read(header)
    magic, count = struct.unpack(">II", head[:8])
    if magic != _MAGIC[kind]:
        return None, f"not an IDX {kind} file (magic {magic}, expected {_MAGIC[kind]})"
    per = 1
    if kind == "images":
        rows, cols = struct.unpack(">II", head[8:16])
        per = rows * cols
        if (rows, cols) != (28, 28):
            return None, f"images are {rows}x{cols}, expected 28x28"
    expected = header + count * per
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        return count, f"{what}: {size} bytes, its header promises {expected} ({count} {kind})"
    return count, None


def inspect_split(dataset: str, split: str, root=None) -> tuple[int | None, list[str]]:
    """(image count, problems) of one dataset split; the count is None unless it is usable."""
    raw = data_root(root) / TV_CLASS[dataset] / "raw"
    img_name, lab_name = RAW_FILES[split]
    n_img, p_img = _inspect(raw / img_name, "images")
    n_lab, p_lab = _inspect(raw / lab_name, "labels")
    problems = [f"{raw / n}: {p}" for n, p in [(img_name, p_img), (lab_name, p_lab)] if p]
    if not problems and n_img != n_lab:
        problems.append(f"{raw}: {n_img} images but {n_lab} labels")
    return (None if problems else n_img), problems


def split_count(dataset: str, split: str, root=None) -> tuple[int | None, Path]:
    """Images in one split according to its (consistent) files, or None when they are missing
    or damaged; and the raw folder looked at."""
    raw = data_root(root) / TV_CLASS[dataset] / "raw"
    try:
        n, _ = inspect_split(dataset, split, root)
    except OSError:
        n = None
    return n, raw


def how_to_fix(root: Path, dataset: str, split: str) -> str:
    raw = root / TV_CLASS[dataset] / "raw"
    files = " ".join(f"{f}.gz" for f in RAW_FILES[split])
    return (f"get {files} from {SOURCES[dataset]} and gunzip them into {raw}/")


def check(root=None, datasets=None) -> tuple[bool, list[str]]:
    """Check the datasets' splits; returns (all good, report lines)."""
    root = data_root(root)
    datasets = list(TV_CLASS) if datasets is None else list(datasets)
    lines, ok, fixes = [f"data folder: {root}"], True, []
    if not root.is_dir():
        lines.append(f"FAIL {root} does not exist")
    for ds in datasets:
        for split in RAW_FILES:
            n, problems = inspect_split(ds, split, root)
            if problems:
                ok = False
                lines += [f"FAIL {ds} {split}: {p}" for p in problems]
                fixes.append(how_to_fix(root, ds, split))
            else:
                note = f" (the official set has {OFFICIAL[split]})" if n < OFFICIAL[split] else ""
                lines.append(f"ok   {ds} {split}: {n} images{note}")
    if not ok:
        lines.append("To fix:")
        lines += [f"  - {f}" for f in fixes]
        lines.append(f"  - or point AMORTLIB_DATA (or --root) at a folder that has them, laid out for "
                     f"torchvision: <root>/MNIST/raw/, <root>/FashionMNIST/raw/ with the uncompressed IDX files")
        calls = "; ".join(f"d.load({ds!r}, {sp!r}, root={str(root)!r})" for ds in datasets for sp in RAW_FILES)
        lines.append(f"  - or, with internet access, let torchvision download them into the folder: "
                     f"python -c \"import amortlib.data as d; {calls}\"")
    return ok, lines
