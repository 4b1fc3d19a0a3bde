"""The book's one number formatter."""
import math

import numpy as np
import pandas as pd

from amortlib.plots.format import text_table
from amortlib.plots.format import sig3
from amortlib.theory import fit, vi1d


def test_one_formatter_serves_every_table():
    assert fit.sig3 is vi1d.sig3 is sig3


def test_sig3_prints_three_figures_and_names_what_is_not_a_number():
    assert [sig3(v) for v in (12.3456, -0.0012345, 123456.0, 2.5e-5)] == ["12.3", "-0.00123", "1.23e+05", "2.5e-05"]
    assert [sig3(v) for v in (None, float("nan"), np.nan, pd.NA)] == ["-"] * 4
    assert [sig3(v) for v in (0.0, -0.0, 0)] == ["0", "0", "0"]                 # exact zeros stay 0
    assert [sig3(v) for v in (3e-8, -3e-8)] == ["<1e-06", "<1e-06"]             # optimisation noise
    assert sig3(3e-8, floor=0) == "3e-08" and sig3(3e-4, floor=1e-3) == "<1e-03"
    assert [sig3(v) for v in (1234, np.int64(7), True, np.bool_(False), "k=16")] == ["1234", "7", "True", "False", "k=16"]
    assert sig3(math.inf) == "inf"


def test_text_table_formats_floats_and_leaves_the_rest():
    t = text_table(pd.DataFrame({"config": ["F-VI", "A-VI k=1"], "gap": [0.0, 12.3456], "n": [200, 200],
                                 "se": [np.nan, 2e-9]}))
    lines = t.splitlines()
    assert lines[1].split() == ["F-VI", "0", "200", "-"]
    assert lines[2].split() == ["A-VI", "k=1", "12.3", "200", "<1e-06"]
