"""Fault injection on real processes: a sweep killed (SIGKILL, SIGINT) mid-unit resumes to the
same results as an uninterrupted one; two sweeps into one folder cannot both write; bad notebook
parameters fail in the validation cell of a real kernel; atomic writes leave old or new, never
half. Every sweep here is tiny (test profile, 2 units of a few seconds each)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
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


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMORTLIB_")}
    # one thread: less contention on small machines, and the same arithmetic in every process
    env.update(AMORTLIB_DATA=DATA, OMP_NUM_THREADS="1", AMORTLIB_PROGRESS_EVERY="1", PYTHONUNBUFFERED="1")
    return env


def _start(out: Path, extra=()) -> subprocess.Popen:
    return subprocess.Popen([AMORTLIB, *SWEEP, *extra, "--out", str(out)], env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _finish(p: subprocess.Popen, timeout=TIMEOUT):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"sweep still running after {timeout} s:\n{out}\n{err}")
    return p.returncode, out, err


def _wait_for(cond, what, p=None, timeout=TIMEOUT):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = cond()
        if v:
            return v
        if p is not None and p.poll() is not None:
            out, err = p.communicate()
            pytest.fail(f"sweep ended (exit {p.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _training(out: Path, unit: str, since: float):
    """The unit's progress record once its kernel is training (written after ``since``)."""
    prog = out / "runs" / f".{unit}.progress.json"
    try:
        if prog.stat().st_mtime < since:
            return None
        st = json.loads(prog.read_text())
    except (OSError, ValueError):
        return None
    return st if 0 <= st["n"] < st["total"] else None     # in the training loop, not done


def _holder(out: Path) -> dict:
    try:
        return json.loads((out / ".sweep.pid").read_text())
    except (OSError, ValueError):
        return {}


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _frames(folder: Path):
    from amortlib.results import load_results
    res = load_results(folder)                  # validates: schema, no duplicate keys
    key_m = ["dataset", "likelihood", "sigma", "config", "seed", "epoch"]
    key_r = ["dataset", "likelihood", "sigma", "config", "seed"]
    m = res["metrics"].drop(columns=TIMING, errors="ignore").sort_values(key_m).reset_index(drop=True)
    r = res["runs"].drop(columns=TIMING, errors="ignore").sort_values(key_r).reset_index(drop=True)
    return m, r


def _unit_files(out: Path, unit: str):
    return sorted(p.name for p in (out / "units").glob(f"{unit}.*"))


class _Background:
    """An uninterrupted sweep running in the background while other tests run."""

    def __init__(self, out: Path):
        self.out, self.p, self._result = out, _start(out), None

    def result(self):
        if self._result is None:
            self._result = _finish(self.p)
        code, stdout, stderr = self._result
        assert code == 0, stderr
        return self.out, stdout, stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    ref = _Background(tmp_path_factory.mktemp("reference"))
    yield ref
    if ref.p.poll() is None:
        os.killpg(ref.p.pid, signal.SIGKILL)
        ref.p.communicate()


@pytest.mark.slow
def test_a_second_sweep_into_the_same_folder_refuses_with_the_lock_message(reference):
    out, p = reference.out, reference.p
    holder = _wait_for(lambda: _holder(out).get("pid"), "the first sweep to take its lock", p)
    assert p.poll() is None
    t0 = time.monotonic()
    second = subprocess.run([AMORTLIB, *SWEEP, "--out", str(out)], env=_env(), text=True,
                            capture_output=True, timeout=120)
    assert p.poll() is None, "the first sweep should still be running"
    assert second.returncode == 3, second.stderr
    assert "locked by another sweep" in second.stderr and f"pid {holder}" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and time.monotonic() - t0 < 60
    assert not second.stdout                                # and it did nothing


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_results_of_an_uninterrupted_one(reference, tmp_path):
    out = tmp_path / "killed"
    # 1. SIGKILL while the second unit trains (after the first finished)
    t0 = time.time()
    p = _start(out)
    _wait_for(lambda: (out / "units" / f"{FIRST}.json").exists(), "the first unit to finish", p)
    _wait_for(lambda: _training(out, SECOND, t0), "the second unit to train", p)
    kernel = _holder(out).get("kernel_pid")
    assert kernel and not _gone(kernel)
    os.kill(p.pid, signal.SIGKILL)
    _finish(p)
    assert p.returncode == -signal.SIGKILL
    # its notebook kernel notices and exits by itself (ipykernel watches its parent)
    _wait_for(lambda: _gone(kernel), "the orphaned kernel to exit", timeout=10)
    time.sleep(1.5)
    assert _unit_files(out, SECOND) == [], "a killed sweep's kernel must not keep writing"
    assert not list((out / "units").glob(".*.tmp"))
    assert (out / ".sweep.pid").exists()                   # the stale lock record of the killed sweep

    # 2. rerun: clears the stale lock, skips the finished unit; interrupt it (Ctrl-C) mid-unit too
    t1 = time.time()
    p = _start(out)
    _wait_for(lambda: _training(out, SECOND, t1), "the rerun to train the second unit", p)
    kernel = _holder(out).get("kernel_pid")
    p.send_signal(signal.SIGINT)
    code, stdout, stderr = _finish(p, timeout=60)
    assert code == 130, stderr
    assert "cleared a stale lock" in stdout and "1 of 2 units already finished" in stdout
    assert "interrupted" in stderr and "rerun the same command to resume" in stderr
    assert not (out / ".sweep.pid").exists()               # released on the way out
    _wait_for(lambda: _gone(kernel), "the interrupted sweep's kernel to exit", timeout=15)
    assert _unit_files(out, SECOND) == []

    # 3. rerun to the end
    code, stdout, stderr = _finish(_start(out))
    assert code == 0, stderr
    assert "stale lock" not in stdout and "1 of 2 units already finished" in stdout
    assert f"finished {SECOND} in" in stdout and f"finished {FIRST} in" not in stdout

    ref, _, _ = reference.result()
    m, r = _frames(out)
    m_ref, r_ref = _frames(ref)
    assert len(m) == len(m_ref) and m.groupby(["config", "seed", "dataset"]).size().nunique() == 1
    pd.testing.assert_frame_equal(m, m_ref)
    pd.testing.assert_frame_equal(r, r_ref)
    assert not list((out / "runs").glob("*.tmp.ipynb")) and not list((out / "runs").glob(".*"))


@pytest.mark.slow
def test_sweep_shows_progress_and_keeps_clean_provenance_notebooks(reference):
    out, stdout, stderr = reference.result()
    assert f"finished {FIRST} in" in stdout and f"finished {SECOND} in" in stdout
    assert "skipped" not in stdout                          # undisturbed by the refused one
    assert f"[1/2] {FIRST}: starting" in stdout and f"[2/2] {SECOND}: starting" in stdout
    assert f"[1/2] {FIRST}: epoch " in stdout or f"[2/2] {SECOND}: epoch " in stdout, stdout
    assert f"finished {FIRST} in" in stdout and "(1/2 units done, ETA" in stdout
    assert "Passed unknown parameter" not in stderr and "IPKernelApp" not in stderr, stderr
    for unit in UNITS:
        nb = json.loads((out / "runs" / f"{unit}.ipynb").read_text())
        outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
        assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
        assert not any("\r" in "".join(o.get("text", "")) for o in outputs)
        assert not any(o.get("output_type") == "error" for o in outputs)
    assert not list((out / "runs").glob(".*")) and not list((out / "units").glob(".*"))


@pytest.mark.slow
@pytest.mark.parametrize("params, says", [
    (dict(widths="abc"), "widths='abc' is invalid"),
    (dict(n_obs=10 ** 6), "n_obs=1000000 is invalid"),
])
def test_papermill_with_bad_parameters_fails_in_the_validation_cell(tmp_path, monkeypatch, params, says):
    import papermill as pm

    from amortlib.runner import EXPERIMENT, experiment_notebook
    out_nb, results = tmp_path / "out.ipynb", tmp_path / "results"
    monkeypatch.setenv("AMORTLIB_DATA", DATA)             # the kernel inherits it
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(experiment_notebook(), str(out_nb), kernel_name="python3", progress_bar=False,
                            parameters=dict(params, output=str(results), unit="x"),
                            cwd=str(EXPERIMENT.parent))
    assert err.value.ename == "ValueError" and says in err.value.evalue
    nb = json.loads(out_nb.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    failed = [i for i, c in enumerate(code) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    validation = next(i for i, c in enumerate(code) if "experiment_config(" in "".join(c["source"]))
    assert failed == [validation]
    assert all(c.get("execution_count") is None for c in code[validation + 1:])   # nothing trained
    assert not results.exists()


def test_a_failing_unit_is_reported_with_its_notebook_kept(tmp_path, monkeypatch, capsys):
    """The runner's side of a unit whose notebook raises (papermill stubbed: no kernel)."""
    import papermill as pm

    from amortlib import runner
    from amortlib.cli import main

    def failing(nb, out_path, **kw):
        Path(out_path).write_text("{}")                  # papermill's partial output notebook
        err = pm.PapermillExecutionError(cell_index=3, exec_count=4, source="run_sweep(cfg)",
                                         ename="RuntimeError", evalue="out of memory", traceback=[])
        raise err
    monkeypatch.setattr(pm, "execute_notebook", failing)
    out = tmp_path / "r"
    code = main(["sweep", "--profile", "test", "--dataset", "mnist", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert f"unit {FIRST} failed in cell [4]: RuntimeError: out of memory" in err
    assert str(out / "runs" / f"{FIRST}.failed.ipynb") in err and (out / "runs" / f"{FIRST}.failed.ipynb").exists()
    assert not (out / ".sweep.pid").exists() and not list((out / "runs").glob(".*"))
    lk = runner.lock(out)
    lk.acquire(timeout=0)                                # released
    lk.release()


# ---------------------------------------------------------------- atomic writes (in process)
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from amortlib.results import atomic_write_bytes
    target = tmp_path / "units" / "a.json"
    atomic_write_bytes(target, b"old")

    def boom(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_written_files_get_the_umask_permissions_not_the_temporary_0600(tmp_path):
    from amortlib.results import atomic_write_bytes
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_leftover_temporaries_are_cleaned_and_never_read(tmp_path):
    from amortlib.results import clean_partial_writes, unit_done
    units = tmp_path / "units"
    units.mkdir()
    (units / ".mnist-gaussian-s0.3.json.abc.tmp").write_text("{half")
    assert not unit_done(tmp_path, "mnist-gaussian-s0.3")
    assert [p.name for p in clean_partial_writes(tmp_path)] == [".mnist-gaussian-s0.3.json.abc.tmp"]
    assert not list(units.iterdir())


def test_lock_is_exclusive_and_released_by_the_os_when_its_holder_dies(tmp_path):
    from filelock import Timeout

    from amortlib.runner import lock
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from amortlib.runner import lock; "
        f"lk = lock(Path({str(tmp_path)!r})); lk.acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Timeout):
            lock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    lk = lock(tmp_path)
    lk.acquire()                                  # the dead holder's lock file is stale: taken over
    assert lk.is_locked
    lk.release()
