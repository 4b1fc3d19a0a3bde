"""Faults and bad input on real ``amortlib sweep`` processes, each checked for: a one-line
message, the documented exit code, no partial or duplicate rows, and a rerun that ends equal to
the uninterrupted reference sweep (timing columns aside).

Interrupts land at random points of a unit: the points are drawn (seeded) from the phases a
unit goes through (the lock just taken, the kernel starting, training at a random epoch, the
unit's files being written, between units), each reached by waiting on what the sweep writes,
plus a random extra delay; nothing depends on how fast the machine is."""
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sweeps import (FIRST, SECOND, SWEEP, UNITS, assert_clean, assert_same_results, finish, finished_units, holder,
                    progress, run, start, wait_for)
from test_config import DATA

INTERRUPTED = "interrupted; the finished units are kept in"


def _phase_reached(out: Path, phase: str, since: float, epoch: int):
    """Whether a sweep started at ``since`` has reached ``phase`` of the unit it is running."""
    unit = SECOND if FIRST in finished_units(out) else FIRST
    rec = holder(out)
    if phase == "locked":
        return bool(rec.get("pid"))
    if phase == "kernel":
        return bool(rec.get("kernel_pid"))
    if phase == "training":
        st = progress(out, unit, since)
        return bool(st) and st["n"] >= epoch
    if phase == "writing":      # a data file of the unit is there, its marker (written last) may not be
        return (out / "units" / f"{unit}.metrics.parquet").exists()
    raise ValueError(phase)


def _schedule(rng: random.Random, n: int):
    """``n`` interrupt points: (phase, epoch for 'training', extra delay in seconds)."""
    phases = ["locked", "kernel", "training", "training", "training", "writing"]
    return [(ph, rng.randint(0, 199), rng.uniform(0, 0.3 if ph != "kernel" else 1.5))
            for ph in (rng.choice(phases) for _ in range(n))]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupts_at_random_points_stop_with_130_and_resume_to_the_same_results(reference, tmp_path, sig):
    rng = random.Random(int(sig))
    out, seen = tmp_path / "r", []
    deadline = time.monotonic() + 1800       # a guard against a runaway loop, not a timing check
    for phase, epoch, delay in _schedule(rng, 10):
        assert time.monotonic() < deadline, f"interrupt points took over 1800 s: {seen}"
        t0 = time.time()
        p = start(out)
        wait_for(lambda: _phase_reached(out, phase, t0, epoch), f"phase {phase}", p)
        time.sleep(delay)
        if p.poll() is None:
            p.send_signal(sig)
            t_sig = time.monotonic()
            code, stdout, stderr = finish(p, timeout=120)
            print(f"{phase} epoch {epoch} +{delay:.2f}s: exit {code} {time.monotonic() - t_sig:.1f}s after the signal")
        else:
            code, stdout, stderr = finish(p)
            print(f"{phase} epoch {epoch} +{delay:.2f}s: the sweep ended (exit {code}) before the signal")
        if code != 130 and "results in" in stdout and finished_units(out) == sorted(UNITS):
            # the sweep had finished its work before the signal (a process ending after that
            # point may die of the signal itself): a valid end
            assert code in (0, -sig), stderr
            seen.append((phase, "finished"))
        else:
            lines = stderr.strip().splitlines()
            assert code == 130, f"{phase} +{delay:.2f}s: exit {code}\n{stderr}"
            assert len(lines) == 1 and INTERRUPTED in lines[0] and "rerun the same command to resume" in lines[0], stderr
            seen.append((phase, len(finished_units(out))))
        assert_clean(out)
        if finished_units(out) == sorted(UNITS):
            # every unit is whole (the signal, if any, came while the last one's files were
            # written or after): check the results, then start over for the next point
            assert_same_results(out, reference.result()[0])
            shutil.rmtree(out)
    print("interrupt points (phase, units finished after it):", seen)
    # the schedule is seeded; only a point in the last unit's writing may see the sweep end
    assert sum(1 for _, r in seen if r != "finished") >= 8, seen
    code, stdout, stderr = finish(start(out))
    assert code == 0, stderr
    ref, _, _ = reference.result()
    assert_same_results(out, ref)
    assert_clean(out)


# ---------------------------------------------------------------- bad folders, bad files
def _one_line(res: subprocess.CompletedProcess, code: int, *says: str):
    lines = res.stderr.strip().splitlines()
    assert res.returncode == code, f"exit {res.returncode}, expected {code}:\n{res.stderr}"
    assert len(lines) == 1, res.stderr
    for s in says:
        assert s in lines[0], lines[0]
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout


def _copy_unit(src: Path, dst: Path, unit: str):
    (dst / "units").mkdir(parents=True, exist_ok=True)
    for f in (src / "units").glob(f"{unit}.*"):
        shutil.copy(f, dst / "units" / f.name)


def _mount_tmpfs(path: Path, size: str, ro: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    return res.returncode == 0, res.stderr.strip()


def _can_mount() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "not root: cannot mount a small tmpfs"
    probe = Path(f"/tmp/amortlib-mount-probe-{os.getpid()}")
    ok, why = _mount_tmpfs(probe, "64k")
    if ok:
        subprocess.run(["umount", str(probe)], check=True)
    probe.rmdir()
    return ok, why or "mount failed"


@pytest.mark.slow
def test_bad_folders_and_damaged_unit_files_get_one_line_and_resume_to_the_same_results(reference, tmp_path):
    ref, _, _ = reference.result()
    out = tmp_path / "r"
    out.mkdir()
    table = []

    # --out is an existing file: exit 2, nothing written
    f = tmp_path / "a-file"
    f.write_text("x")
    res = run([*SWEEP, "--out", str(f)])
    _one_line(res, 2, f"out='{f}' is invalid", "found a file")
    assert f.read_text() == "x"
    table.append(("--out an existing file", res.returncode, res.stderr.strip()))

    # a read-only results folder: exit 2, nothing written
    if os.geteuid() == 0:
        ro = tmp_path / "ro"
        ok, why = _mount_tmpfs(ro, "1m", ro=True)
        if not ok:
            pytest.fail(f"mounting a read-only tmpfs as root failed: {why}")
        try:
            res = run([*SWEEP, "--out", str(ro)])
        finally:
            subprocess.run(["umount", str(ro)], check=True)
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        res = run([*SWEEP, "--out", str(ro)])
        ro.chmod(0o755)
    _one_line(res, 2, f"out='{ro}' is invalid", "cannot be written")
    assert not list(ro.iterdir())
    table.append(("results folder read-only", res.returncode, res.stderr.strip()))

    # a finished unit from another configuration: exit 1 naming it and the differing setting
    _copy_unit(ref, out, FIRST)
    meta_path = out / "units" / f"{FIRST}.json"
    import json
    meta = json.loads(meta_path.read_text())
    meta["config"]["epochs"] = 100
    meta_path.write_text(json.dumps(meta))
    before = sorted(p.name for p in (out / "units").iterdir())
    res = run([*SWEEP, "--out", str(out)])
    _one_line(res, 1, str(meta_path), "produced with other settings", "epochs: 100 there, 200 now")
    assert sorted(p.name for p in (out / "units").iterdir()) == before
    table.append(("a unit of another configuration", res.returncode, res.stderr.strip()))
    for p in (out / "units").glob(f"{FIRST}.*"):        # as the message says: delete that unit
        p.unlink()

    # truncated and garbage parquet in a finished unit: exit 1 naming the file, for sweep and report
    for damage, mutate in [("truncated parquet", lambda b: b[: len(b) // 2]),
                           ("garbage parquet", lambda b: bytes(random.Random(0).randrange(256) for _ in b))]:
        _copy_unit(ref, out, FIRST)
        bad = out / "units" / f"{FIRST}.metrics.parquet"
        bad.write_bytes(mutate(bad.read_bytes()))
        res = run([*SWEEP, "--out", str(out)])
        _one_line(res, 1, f"corrupt results file {bad}")
        assert not (out / "units" / f"{SECOND}.json").exists()            # refused before training
        rep = run(["report", "--results", str(out)])
        assert rep.returncode == 1 and f"corrupt results file {bad}" in rep.stderr
        table.append((damage, res.returncode, res.stderr.strip()))
        for p in (out / "units").glob(f"{FIRST}.*"):
            p.unlink()

    # a data file with a corrupt header: exit 2 naming the file; `data check` says what is wrong
    data = tmp_path / "data"
    shutil.copytree(DATA, data, ignore=shutil.ignore_patterns("*.gz"))
    img = data / "MNIST" / "raw" / "train-images-idx3-ubyte"
    raw = bytearray(img.read_bytes())
    raw[:4] = b"\x00\x00\x00\x00"
    img.write_bytes(bytes(raw))
    res = run([*SWEEP, "--out", str(out), "--data-root", str(data)])
    _one_line(res, 2, f"data_root='{data}' is invalid", f"{img}: not an IDX images file")
    assert not (out / "units").exists() or not list((out / "units").iterdir())
    chk = run(["data", "check", "--root", str(data)])
    assert chk.returncode == 1 and str(img) in chk.stdout and "not an IDX images file" in chk.stdout
    table.append(("a data file with a corrupt header", res.returncode, res.stderr.strip()))

    # after each fault was fixed as its message says, the rerun ends equal to the reference
    res = run([*SWEEP, "--out", str(out)])
    assert res.returncode == 0, res.stderr
    assert_same_results(out, ref)
    assert_clean(out)
    print("\n".join(f"{what}: exit {code}: {msg}" for what, code, msg in table))


@pytest.mark.slow
def test_disk_full_while_a_unit_is_written_fails_in_one_line_and_resumes(reference, tmp_path):
    ok, why = _can_mount()
    if not ok:
        pytest.skip(f"disk-full test needs a small tmpfs: {why}")
    ref, _, _ = reference.result()
    sizes = sorted(p.stat().st_size for p in (ref / "units").glob(f"{FIRST}.*"))
    out = tmp_path / "full"
    units = out / "units"
    mounted, why = _mount_tmpfs(units, "1m")        # the unit files alone go to a small disk
    assert mounted, why
    try:
        # leave room for the unit's first file or so, not for all of them: it fails while
        # its files are written, after training
        filler = units / "filler"
        with open(filler, "wb") as fh:
            fh.write(b"\0" * (2**20 - 16 * 1024))
        free = shutil.disk_usage(units).free
        assert 0 < free < sum(sizes), (free, sizes)
        res = run([*SWEEP, "--out", str(out)])
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 1, res.stderr
        assert len(lines) == 1 and "No space left on device" in lines[0] and FIRST in lines[0], res.stderr
        assert "Traceback" not in res.stderr
        assert finished_units(out) == []
        assert sorted(p.name for p in units.iterdir()) == ["filler"]      # nothing of the failed unit
        assert_clean(out, ignore=("filler",))
        print(f"disk full: exit {res.returncode}: {lines[0]}")
        filler.unlink()                                  # space again: the rerun resumes
        res = run([*SWEEP, "--out", str(out)])
        assert res.returncode == 0, res.stderr
        assert_same_results(out, ref)
        assert_clean(out)
    finally:
        subprocess.run(["umount", "-l", str(units)], check=False)
