"""``amortlib data check``: is the data folder complete and consistent?

Reads only the IDX headers (magic number, count, sizes) and compares each file's length with
what its header promises, and the image count with the label count.
"""
from __future__ import annotations

import struct
from pathlib import Path

from .data import RAW_FILES, TV_CLASS, data_root

_MAGIC = {"images": 2051, "labels": 2049}


def _inspect(path: Path, kind: str):
    """(count, problem or None) of one IDX file."""
    if not path.is_file():
        return None, "missing"
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
        return count, f"truncated or padded: {size} bytes, its header promises {expected} ({count} items)"
    return count, None


def check(root=None) -> tuple[bool, list[str]]:
    """Check both datasets and splits; returns (all good, report lines)."""
    root = data_root(root)
    lines, ok = [f"data folder: {root}"], True
    for ds, cls in TV_CLASS.items():
        for split, (img_name, lab_name) in RAW_FILES.items():
            raw = root / cls / "raw"
            n_img, p_img = _inspect(raw / img_name, "images")
            n_lab, p_lab = _inspect(raw / lab_name, "labels")
            problems = [f"{raw / img_name}: {p_img}"] * bool(p_img) + [f"{raw / lab_name}: {p_lab}"] * bool(p_lab)
            if not problems and n_img != n_lab:
                problems.append(f"{raw}: {n_img} images but {n_lab} labels")
            if problems:
                ok = False
                lines += [f"FAIL {ds} {split}: {p}" for p in problems]
            else:
                lines.append(f"ok   {ds} {split}: {n_img} images")
    if not ok:
        lines.append("To fix: set AMORTLIB_DATA to a folder laid out for torchvision "
                     "(<root>/MNIST/raw/..., <root>/FashionMNIST/raw/..., uncompressed IDX files), or run "
                     "`python -c \"import amortlib.data as d; d.load('mnist'); d.load('fashion_mnist')\"` "
                     "once with internet access to download them into the cache.")
    return ok, lines
