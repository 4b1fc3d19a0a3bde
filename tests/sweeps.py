"""Helpers of the tests that run real ``amortlib sweep`` processes (reliability, faults): the
tiny sweep they all run, starting and finishing it, waiting on what it writes, and reading
its results without the timing columns."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_config import DATA

AMORTLIB = str(Path(sys.executable).with_name("amortlib"))
UNITS = ["fashion_mnist-gaussian-s0.3", "mnist-gaussian-s0.3"]
FIRST, SECOND = "mnist-gaussian-s0.3", "fashion_mnist-gaussian-s0.3"     # the order a sweep runs them
# 200 epochs of 6 tiny models: a few seconds of training per unit, long enough to be killed in
SWEEP = ["sweep", "--profile", "test", "--dataset", "mnist", "fashion_mnist", "--epochs", "200",
         "--widths", "2", "--seeds", "0", "1", "--n-obs", "100", "--n-test", "20", "--fit-steps", "10",
         "--eval-points", "5"]
TIMING = ["wall_s", "sweep_wall_s", "seconds_to_tol"]
TIMEOUT = 240


def env(**extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith("AMORTLIB_")}
    # one thread: less contention on small machines, and the same arithmetic in every process
    e.update(AMORTLIB_DATA=DATA, OMP_NUM_THREADS="1", AMORTLIB_PROGRESS_EVERY="1", PYTHONUNBUFFERED="1")
    e.update(extra)
    return e


def _as_from_a_terminal():
    """In the child: SIGINT at its default, as for a command typed at a terminal. A test run
    from a background job (``cmd &`` in a script, some CI runners) inherits SIGINT *ignored*,
    and Python then installs no KeyboardInterrupt handler: the sweep would rightly ignore the
    test's Ctrl-C, as any background job does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(out: Path, extra=()) -> subprocess.Popen:
    return subprocess.Popen([AMORTLIB, *SWEEP, *extra, "--out", str(out)], env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_as_from_a_terminal)


def run(args, timeout=TIMEOUT) -> subprocess.CompletedProcess:
    """``amortlib ARGS`` to the end."""
    return subprocess.run([AMORTLIB, *args], env=env(), text=True, capture_output=True, timeout=timeout)


def finish(p: subprocess.Popen, timeout=TIMEOUT):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"sweep still running after {timeout} s:\n{out}\n{err}")
    return p.returncode, out, err


def wait_for(cond, what, p=None, timeout=TIMEOUT):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = cond()
        if v:
            return v
        if p is not None and p.poll() is not None:
            v = cond()                          # it may have got there just before ending
            if v:
                return v
            out, err = p.communicate()
            pytest.fail(f"sweep ended (exit {p.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def progress(out: Path, unit: str, since: float):
    """The unit's progress record (epoch ``n`` of ``total``), once written after ``since``."""
    prog = out / "runs" / f".{unit}.progress.json"
    try:
        if prog.stat().st_mtime < since:
            return None
        return json.loads(prog.read_text())
    except (OSError, ValueError):
        return None


def training(out: Path, unit: str, since: float):
    """The unit's progress record once its kernel is in the training loop, not done."""
    st = progress(out, unit, since)
    return st if st and 0 <= st["n"] < st["total"] else None


def holder(out: Path) -> dict:
    try:
        return json.loads((out / ".sweep.pid").read_text())
    except (OSError, ValueError):
        return {}


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def frames(folder: Path):
    """(metrics, runs) of a results folder, validated, sorted, timing columns dropped."""
    from amortlib.results import load_results
    res = load_results(folder)                  # validates: schema, no duplicate keys
    key_m = ["dataset", "likelihood", "sigma", "config", "seed", "epoch"]
    key_r = ["dataset", "likelihood", "sigma", "config", "seed"]
    m = res["metrics"].drop(columns=TIMING, errors="ignore").sort_values(key_m).reset_index(drop=True)
    r = res["runs"].drop(columns=TIMING, errors="ignore").sort_values(key_r).reset_index(drop=True)
    return m, r


def assert_same_results(folder: Path, ref: Path):
    import pandas as pd
    m, r = frames(folder)
    m_ref, r_ref = frames(ref)
    assert len(m) == len(m_ref) and m.groupby(["config", "seed", "dataset"]).size().nunique() == 1
    pd.testing.assert_frame_equal(m, m_ref)
    pd.testing.assert_frame_equal(r, r_ref)


def unit_files(out: Path, unit: str):
    return sorted(p.name for p in (out / "units").glob(f"{unit}.*"))


def finished_units(out: Path) -> list[str]:
    return sorted(p.name[: -len(".json")] for p in (out / "units").glob("*.json"))


def assert_clean(out: Path, ignore=()):
    """What an ended sweep leaves: whole units only (each readable, none duplicated), no
    temporaries, no progress or kernel-log side files, the lock record released."""
    from amortlib.results import read_unit
    for unit in finished_units(out):
        read_unit(out, unit)
    units = out / "units"
    if units.is_dir():
        assert not list(units.glob(".*")), sorted(p.name for p in units.iterdir())
        done = finished_units(out)
        stray = [p.name for p in units.iterdir() 
                 if p.name not in ignore and not any(p.name.startswith(u + ".") for u in done)]
        assert not stray, f"files of an unfinished unit: {stray}"
    runs = out / "runs"
    if runs.is_dir():
        assert not list(runs.glob("*.tmp.ipynb")) and not list(runs.glob(".*")), sorted(p.name for p in runs.iterdir())
    assert not (out / ".sweep.pid").exists()
    if finished_units(out):
        frames(out)                              # no duplicate rows across units


class Background:
    """An uninterrupted sweep running in the background while other tests run."""

    def __init__(self, out: Path):
        self.out, self.p, self._result = out, start(out), None

    def result(self):
        if self._result is None:
            self._result = finish(self.p)
        code, stdout, stderr = self._result
        assert code == 0, stderr
        return self.out, stdout, stderr

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.communicate()
