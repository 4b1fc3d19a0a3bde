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

import pytest

from sweeps import (FIRST, SECOND, SWEEP, AMORTLIB, UNITS, assert_same_results, finish, gone, holder, start,
                    training, unit_files, wait_for)
from sweeps import env as _env
from test_config import DATA


@pytest.mark.slow
def test_a_second_sweep_into_the_same_folder_refuses_with_the_lock_message(tmp_path):
    out = tmp_path / "locked"
    p = start(out, extra=["--epochs", "20000"])             # runs far longer than this test
    try:
        first = wait_for(lambda: holder(out).get("pid"), "the first sweep to take its lock", p)
        t0 = time.monotonic()
        second = subprocess.run([AMORTLIB, *SWEEP, "--epochs", "20000", "--out", str(out)], env=_env(),
                                text=True, capture_output=True, timeout=120)
        assert p.poll() is None, "the first sweep should still be running"
        assert second.returncode == 3, second.stderr
        assert "locked by another sweep" in second.stderr and f"pid {first}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and time.monotonic() - t0 < 60
        assert not second.stdout                            # and it did nothing
    finally:
        p.send_signal(signal.SIGINT)
        code, _, stderr = finish(p, timeout=120)
    assert code == 130, stderr


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_results_of_an_uninterrupted_one(reference, tmp_path):
    out = tmp_path / "killed"
    # 1. SIGKILL while the second unit trains (after the first finished)
    t0 = time.time()
    p = start(out)
    wait_for(lambda: (out / "units" / f"{FIRST}.json").exists(), "the first unit to finish", p)
    wait_for(lambda: training(out, SECOND, t0), "the second unit to train", p)
    kernel = holder(out).get("kernel_pid")
    assert kernel and not gone(kernel)
    os.kill(p.pid, signal.SIGKILL)
    finish(p)
    assert p.returncode == -signal.SIGKILL
    # its notebook kernel notices and exits by itself (ipykernel watches its parent)
    wait_for(lambda: gone(kernel), "the orphaned kernel to exit", timeout=60)
    time.sleep(1.5)
    assert unit_files(out, SECOND) == [], "a killed sweep's kernel must not keep writing"
    assert not list((out / "units").glob(".*.tmp"))
    assert (out / ".sweep.pid").exists()                   # the stale lock record of the killed sweep

    # 2. rerun: clears the stale lock, skips the finished unit; interrupt it (Ctrl-C) mid-unit too
    t1 = time.time()
    p = start(out)
    wait_for(lambda: training(out, SECOND, t1), "the rerun to train the second unit", p)
    kernel = holder(out).get("kernel_pid")
    p.send_signal(signal.SIGINT)
    code, stdout, stderr = finish(p, timeout=120)
    assert code == 130, stderr
    assert "cleared a stale lock" in stdout and "1 of 2 units already finished" in stdout
    assert "interrupted" in stderr and "rerun the same command to resume" in stderr
    assert not (out / ".sweep.pid").exists()               # released on the way out
    wait_for(lambda: gone(kernel), "the interrupted sweep's kernel to exit", timeout=60)
    assert unit_files(out, SECOND) == []

    # 3. rerun to the end
    code, stdout, stderr = finish(start(out))
    assert code == 0, stderr
    assert "stale lock" not in stdout and "1 of 2 units already finished" in stdout
    assert f"finished {SECOND} in" in stdout and f"finished {FIRST} in" not in stdout

    ref, _, _ = reference.result()
    assert_same_results(out, ref)
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


def test_a_kernel_that_dies_at_start_is_replaced(tmp_path, monkeypatch):
    """A kernel that exits before answering (another process took one of its ports) costs a
    fresh kernel, not the unit; any other error, or an interrupted sweep, is not retried."""
    import io

    import papermill as pm

    from amortlib import runner
    calls = []

    def flaky(nb, out_path, **kw):
        calls.append(kw["start_timeout"])
        if len(calls) < 3:
            raise RuntimeError("Kernel died before replying to kernel_info")
        return "executed"
    monkeypatch.setattr(pm, "execute_notebook", flaky)
    log = io.BytesIO()
    assert runner.execute_notebook("nb.ipynb", "out.ipynb", log) == "executed"
    assert calls == [runner.KERNEL_START_TIMEOUT] * 3
    assert log.getvalue().decode().count("failed (Kernel died before replying to kernel_info); starting another") == 2

    for error, stopping in [("Kernel died before replying to kernel_info", True), ("CUDA error", False)]:
        calls.clear()

        def failing(nb, out_path, **kw):
            calls.append(1)
            raise RuntimeError(error)
        monkeypatch.setattr(pm, "execute_notebook", failing)
        with pytest.raises(RuntimeError, match=error) as raised:
            runner.execute_notebook("nb.ipynb", "out.ipynb", io.BytesIO(), stopping=lambda: stopping)
        assert len(calls) == 1 and not isinstance(raised.value, runner.KernelNotStarted)


def test_a_unit_whose_kernel_never_starts_is_one_line_with_its_log_kept(tmp_path, monkeypatch, capsys):
    import papermill as pm

    from amortlib.cli import main
    from amortlib.runner import KERNEL_START_ATTEMPTS
    calls = []

    def dead(nb, out_path, **kw):
        Path(out_path).write_text("{}")                  # papermill writes the notebook before the kernel starts
        calls.append(1)
        raise RuntimeError("Kernel died before replying to kernel_info")
    monkeypatch.setattr(pm, "execute_notebook", dead)
    out = tmp_path / "r"
    code = main(["sweep", "--profile", "test", "--dataset", "mnist", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and len(calls) == KERNEL_START_ATTEMPTS
    assert f"unit {FIRST} failed: no kernel started in {KERNEL_START_ATTEMPTS} attempts" in err
    kept = out / "runs" / f"{FIRST}.failed.kernel.log"
    assert str(kept) in err and "starting another" in kept.read_text()
    assert not list((out / "runs").glob("*.tmp.ipynb")) and not list((out / "runs").glob(".*"))
    assert not (out / "units").exists() or not list((out / "units").iterdir())


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
