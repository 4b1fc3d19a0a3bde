"""Run a profile's sweep: one papermill execution of the experiment notebook per unit
(dataset x likelihood setting), each kept as provenance, resumable, one writer at a time.

Crash safety: a unit's files are written atomically and its JSON marker last (see
``amortlib.results``), so a sweep killed at any moment loses at most the unit in progress; a
rerun skips the finished units. The results folder is guarded by an OS-level lock (flock) that
the kernel releases when its holder dies, so a lock left by a killed sweep is stale and taken
over. The notebook's kernel is a child process that watches its parent (ipykernel's parent
poller) and exits within about a second when the sweep dies, even by SIGKILL.

Progress: the kernel's training loop reports its epoch to a small file (``runs/.<unit>.progress.json``,
see ``amortlib.experiment.route_progress_to_file``) that the runner shows on the terminal with the
overall progress (units done, ETA); nothing of it enters the executed notebooks.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import warnings
from pathlib import Path

from filelock import FileLock, Timeout

from .config import DATASETS, LIKELIHOODS, PROFILES, SweepConfig
from .experiment import PROGRESS_ENV, read_progress, unit_name
from . import paths
from .provenance import finish_run_notebook

#: Likelihood settings each profile sweeps: the first is the book's headline setting, the rest
#: form the likelihood-scale study (does the latent get used at all?).
VARIANTS = {
    "quick": [("gaussian", 0.1), ("gaussian", 0.3), ("gaussian", 1.0), ("bernoulli", 1.0)],
    # sigma = 0.1 (sharp), sigma^2 = 1/2 (the reference's loss: squared error with weight 1,
    # i.e. 1 / (2 sigma^2) = 1), and Bernoulli
    "paper": [("gaussian", 0.1), ("gaussian", 0.5 ** 0.5), ("bernoulli", 1.0)],
    "test": [("gaussian", 0.3)],
}
EXPERIMENT = paths.experiment_notebook()   # the checkout's, or the installed package's copy
#: Its Jupytext twin, the tracked source: executed when present, so a sweep never runs a stale
#: or missing .ipynb.
EXPERIMENT_PY = EXPERIMENT.with_suffix(".py")


class SweepLocked(RuntimeError):
    """Another sweep is writing into the same results folder."""


class KernelNotStarted(RuntimeError):
    """No kernel of a unit started in ``KERNEL_START_ATTEMPTS`` tries (``execute_notebook``)."""


class UnitFailed(RuntimeError):
    """The experiment notebook of one unit raised; the message names the unit, the error and
    the executed notebook kept for inspection."""


def plan(profile: str = "quick", datasets=None, variants=None, **overrides) -> list[tuple[str, SweepConfig]]:
    """The units of a sweep, validated before anything runs: [(unit name, config)].
    ``variants``: [(likelihood, sigma)], default the profile's."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is invalid: expected one of {', '.join(PROFILES)}")
    datasets = list(DATASETS) if datasets is None else ([datasets] if isinstance(datasets, str) else list(datasets))
    if not datasets:
        raise ValueError("datasets=[] is invalid: expected one or more of " + ", ".join(DATASETS))
    if len(set(map(str, datasets))) != len(datasets):
        raise ValueError(f"datasets={datasets!r} is invalid: expected a list without repeated entries")
    variants = VARIANTS.get(profile, VARIANTS["test"]) if variants is None else list(variants)
    for v in variants:
        if not (isinstance(v, (tuple, list)) and len(v) == 2):
            raise ValueError(f"variants={variants!r} is invalid: expected (likelihood, sigma) pairs, "
                             f"likelihood one of {', '.join(LIKELIHOODS)}")
    units = []
    for ds in datasets:
        for lik, sigma in variants:
            cfg = SweepConfig.from_profile(profile, dataset=ds, likelihood=lik, sigma=sigma, **overrides)
            units.append((unit_name(cfg.dataset, cfg.likelihood, cfg.sigma), cfg))
    names = [u for u, _ in units]
    if len(set(names)) != len(names):
        raise ValueError(f"variants={variants!r} is invalid: they repeat a unit ({', '.join(names)})")
    return units


def default_out(profile: str) -> Path:
    from .results import results_root
    return results_root() / profile


def check_executor(executor: str = "local", address: str | None = None, cpus_per_unit: int = 1,
                   seeds_per_task: int | None = None) -> None:
    """The executor options of ``run``, checked before anything is written: a ``ValueError``
    naming the bad one (for Ray: installed, and a ``host:port`` address that answers)."""
    if executor not in ("local", "ray"):
        raise ValueError(f"executor={executor!r} is invalid: expected 'local' or 'ray'")
    if seeds_per_task is not None:
        if isinstance(seeds_per_task, bool) or not isinstance(seeds_per_task, int) or seeds_per_task < 1:
            raise ValueError(f"seeds_per_task={seeds_per_task!r} is invalid: expected an integer >= 1")
        if executor != "ray":
            raise ValueError(f"seeds_per_task={seeds_per_task!r} is invalid with executor='local': "
                             f"seed shards are Ray tasks (--executor ray)")
    if executor == "ray":
        from .ray_executor import require_ray
        require_ray(cpus_per_unit, address)
    elif address is not None:
        raise ValueError(f"address={address!r} is invalid with executor='local': expected no address")


def check_out(out) -> Path:
    """The results folder ``out``, checked before anything trains: a ``ValueError`` naming it
    when it is a file or cannot be written (a read-only file system, no permission)."""
    import tempfile
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is invalid: expected a results folder, found a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ValueError(f"out={str(out)!r} is invalid: the folder cannot be written "
                         f"({err.strerror or err})") from None
    return out


def lock(folder: Path) -> FileLock:
    """An exclusive, non-blocking lock on a results folder. It is an OS-level lock (flock), so
    the kernel drops it when its holder dies: a lock file left by a killed sweep is stale and
    simply taken over."""
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / ".sweep.lock"), timeout=0)


def n_models(cfg: SweepConfig) -> int:
    per_seed = sum(len(cfg.widths) if f == "amortized" else 1 for f in cfg.families)
    return per_seed * len(cfg.seeds)


def _weight(cfg: SweepConfig) -> float:
    """Rough cost of a unit, for the overall ETA: epochs x models x images."""
    return float(cfg.epochs * n_models(cfg) * cfg.n_obs)


def _fmt_s(s) -> str:
    if s is None or s != s:
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


class _Display:
    """Overall progress (units done / total, ETA) and the running unit's epochs. On a terminal:
    two tqdm bars on stderr; otherwise (logs, CI): a plain line every ``every`` seconds."""

    def __init__(self, n_units: int, skipped: int, weights: list[float], enabled: bool, log, every: float):
        self.n_units, self.done_units, self.enabled, self.log, self.every = n_units, skipped, enabled, log, every
        self.total_w, self.done_w, self.cur_w, self.frac = sum(weights) or 1.0, 0.0, 0.0, 0.0
        self.t0 = time.monotonic()
        self.tty = enabled and sys.stderr.isatty()
        self.lock = threading.Lock()
        self.unit, self.index, self.last_line, self.bar, self.overall = None, 0, 0.0, None, None
        if self.tty:
            from tqdm import tqdm
            self.overall = tqdm(total=self.total_w, smoothing=0, file=sys.stderr, position=0,
                                bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")
            self._desc()

    def _desc(self):
        if self.overall is not None:
            self.overall.set_description_str(f"sweep: {self.done_units}/{self.n_units} units done")

    def eta(self) -> float | None:
        """Seconds left, from the work done so far; None until there is enough to go by."""
        f = (self.done_w + self.cur_w * self.frac) / self.total_w
        return None if f < 0.05 else (time.monotonic() - self.t0) * (1 - f) / f

    def say(self, line: str):
        if self.overall is not None:
            from tqdm import tqdm
            tqdm.write(line, file=sys.stdout)
        else:
            self.log(line)

    def start(self, unit: str, cfg: SweepConfig, weight: float):
        with self.lock:
            self.unit, self.cur_w, self.frac = unit, weight, 0.0
            self.index = self.done_units + 1
            self.last_line = time.monotonic()
            if self.tty:
                from tqdm import tqdm
                self.bar = tqdm(total=cfg.epochs, desc=f"{unit} ({n_models(cfg)} models)", position=1,
                                leave=False, file=sys.stderr, smoothing=0.3,
                                bar_format="{desc}: epoch {n}/{total} |{bar}| {elapsed}<{remaining}{postfix}")
            elif self.enabled:
                self.log(f"[{self.index}/{self.n_units}] {unit}: starting ({n_models(cfg)} models, "
                         f"{cfg.epochs} epochs)")

    def update(self, state: dict):
        with self.lock:
            try:
                n, total = int(state["n"]), int(state["total"])
            except (KeyError, TypeError, ValueError):
                return
            self.frac = min(1.0, n / total) if total else 0.0
            if self.bar is not None:
                if isinstance(state.get("elapsed"), (int, float)):   # the unit's clock: training time
                    self.bar.start_t = self.bar._time() - state["elapsed"]
                self.bar.n = n
                self.bar.set_postfix_str(str(state.get("postfix") or ""), refresh=False)
                self.bar.refresh()
                self.overall.n = self.done_w + self.cur_w * self.frac
                self.overall.refresh()
            elif self.enabled and time.monotonic() - self.last_line >= self.every:
                self.last_line = time.monotonic()
                post = f" ({state['postfix']})" if state.get("postfix") else ""
                self.log(f"[{self.index}/{self.n_units}] {self.unit}: epoch {n}/{total}{post}; "
                         f"sweep ETA {_fmt_s(self.eta())}")

    def finish(self, unit: str, seconds: float):
        with self.lock:
            self.done_units += 1
            self.done_w += self.cur_w
            self.cur_w = self.frac = 0.0
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            if self.overall is not None:
                self.overall.n = self.done_w
                self._desc()
                self.overall.refresh()
            left = self.n_units - self.done_units
            self.say(f"finished {unit} in {seconds:.0f} s ({self.done_units}/{self.n_units} units done"
                     + (f", ETA {_fmt_s(self.eta())})" if left else ")"))

    def close(self):
        with self.lock:
            for b in (self.bar, self.overall):
                if b is not None:
                    b.close()
            self.bar = self.overall = None


def _watch(path: Path, display: _Display, stop: threading.Event, period: float = 0.25):
    last = None
    while not stop.wait(period):
        state = read_progress(path)
        if state and state != last:
            last = state
            display.update(state)


def _notebook_params(cfg: SweepConfig, out: Path, unit: str, progress: bool) -> dict:
    # the profile's values, unvalidated (a profile default may not fit this machine's data)
    base = {f.name: f.default for f in dataclasses.fields(SweepConfig)} | PROFILES[cfg.profile]
    base = {k: list(v) if isinstance(v, tuple) else v for k, v in base.items()}
    params = {k: v for k, v in cfg.to_dict().items() if v != base.get(k) or k == "dataset"}
    params.update(profile=cfg.profile, output=str(out.resolve()), unit=unit, progress=progress)
    return params


def experiment_notebook():
    """The experiment notebook to execute: read from its Jupytext ``.py`` twin when present,
    else the ``.ipynb``."""
    if EXPERIMENT_PY.is_file():
        import jupytext
        return jupytext.read(EXPERIMENT_PY)
    if EXPERIMENT.is_file():
        return str(EXPERIMENT)
    raise FileNotFoundError(2, "the experiment notebook is not installed with the package (neither its .py nor "
                            "its .ipynb exists); run sweeps from a checkout of the book's repository "
                            "(git clone, then pip install -e .)", str(EXPERIMENT_PY))


def _holder(pidfile: Path) -> dict | None:
    """The record a sweep keeps beside its lock: pid, host, start time, its kernel's pid."""
    try:
        rec = json.loads(pidfile.read_text())
        return rec if isinstance(rec, dict) else None
    except (OSError, ValueError):
        return None


def _describe(rec: dict | None) -> str:
    if not rec:
        return "pid unknown"
    return f"pid {rec.get('pid', '?')} on {rec.get('host', '?')}, started {rec.get('started', '?')}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _reap_orphan_kernel(rec: dict | None, log, wait_s: float = 5.0) -> None:
    """A sweep killed with SIGKILL leaves its notebook kernel to notice on its own (ipykernel
    polls its parent every second and exits). Make sure it is gone before this sweep writes:
    wait a little, then kill it if it is still that kernel."""
    if not rec or rec.get("host") != socket.gethostname() or not isinstance(rec.get("kernel_pid"), int):
        return
    pid = rec["kernel_pid"]
    deadline = time.monotonic() + wait_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not _alive(pid):
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            is_kernel = b"ipykernel" in f.read()
    except OSError:
        is_kernel = False
    if is_kernel:
        os.kill(pid, signal.SIGKILL)
        log(f"stopped the orphaned notebook kernel (pid {pid}) of the killed sweep")


#: Seconds a unit's kernel may take to start and answer (papermill's default is 60): on a busy
#: machine a slow start is not an error.
KERNEL_START_TIMEOUT = 600
#: Kernels started per unit when one dies before answering. A kernel binds the TCP ports that
#: jupyter_client found free a moment earlier; another process starting then (Ray starting a
#: node, say) can take one, and the kernel exits at once: "Kernel died before replying to
#: kernel_info". Nothing of the unit has run by then, so a fresh kernel is started.
KERNEL_START_ATTEMPTS = 3
_KERNEL_START_FAILURES = ("Kernel died before replying to kernel_info", "Kernel didn't respond in")


def execute_notebook(notebook, path, log_file, stopping=lambda: False, **kwargs):
    """``papermill.execute_notebook(notebook, path, **kwargs)`` with ``KERNEL_START_TIMEOUT``,
    starting another kernel (up to ``KERNEL_START_ATTEMPTS`` in all) when one failed to start,
    unless ``stopping()`` (the sweep is being interrupted: its kernel was killed on purpose).
    Each failed start is noted in ``log_file``, the kernels' log; after the last one,
    ``KernelNotStarted``."""
    import papermill as pm
    for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
        try:
            return pm.execute_notebook(copy.deepcopy(notebook) if not isinstance(notebook, str) else notebook,
                                       path, start_timeout=KERNEL_START_TIMEOUT, **kwargs)
        except RuntimeError as err:
            if stopping() or not str(err).startswith(_KERNEL_START_FAILURES):
                raise
            if attempt == KERNEL_START_ATTEMPTS:
                raise KernelNotStarted(f"no kernel started in {KERNEL_START_ATTEMPTS} attempts ({err})") from err
            log_file.write(f"\n[amortlib] kernel start {attempt} of {KERNEL_START_ATTEMPTS} failed "
                           f"({err}); starting another\n".encode())
            log_file.flush()


def _kernel_manager(log_file, on_start=None):
    """A kernel manager whose kernel writes its own stdout and stderr (its log, C-level output,
    its complaints while being shut down) to ``log_file`` rather than over the progress display.
    Cell outputs are unaffected: they go to the notebook."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw.setdefault("stdout", log_file)
            kw.setdefault("stderr", log_file)
            await AsyncKernelManager.start_kernel(self, **kw)
            pid = getattr(self.provisioner, "pid", None)
            if on_start is not None and pid:
                on_start(pid)

    return QuietKernelManager


def _failure(err, unit: str, kept: Path) -> UnitFailed:
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    cell = getattr(err, "exec_count", None)
    where = f" in cell [{cell}]" if cell else ""
    return UnitFailed(f"unit {unit} failed{where}: {ename}: {evalue} (executed notebook kept in {kept})")


class _Kernel:
    """The notebook kernel of the unit in progress, as the main thread sees it: its pid once it
    has started, and whether the sweep is stopping (a kernel that starts after that is killed
    at once)."""

    def __init__(self, record):
        self.record, self.pid, self.stopping, self.lock = record, None, False, threading.Lock()

    def started(self, pid: int):
        with self.lock:
            self.pid = pid
            if self.stopping:
                _kill_kernel(pid)
        self.record(pid)

    def stop(self):
        with self.lock:
            self.stopping = True
            if self.pid is not None:
                _kill_kernel(self.pid)


@contextlib.contextmanager
def _signals_deferred():
    """Run a block (clean-up, a rename) whole: Ctrl-C or SIGTERM arriving meanwhile is noted
    and raised as ``KeyboardInterrupt`` once the block is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    old = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if got:
            raise KeyboardInterrupt


def _kill_kernel(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _execute(notebook, tmp: Path, params: dict, klog, record, join_s: float = 120.0) -> None:
    """Execute one unit's notebook with papermill, in a worker thread.

    Why a thread: run in the main thread, nbclient installs asyncio handlers for SIGINT and
    SIGTERM that shut the kernel down instead of raising, and removes them afterwards (which
    also drops the CLI's SIGTERM handler), so whether Ctrl-C stopped the sweep depended on the
    phase it landed in. Outside the main thread nbclient installs none, and the main thread
    keeps Python's own handling: Ctrl-C or SIGTERM raise ``KeyboardInterrupt`` here, whatever
    the kernel is doing. The kernel is then killed (it may be half-way through writing a unit:
    every write is atomic and the marker goes last, so the unit is either whole or absent),
    and the interrupt propagates."""
    kernel = _Kernel(record)
    box: dict = {}
    done = threading.Event()    # not Thread.join: on Python 3.11 a Ctrl-C during join() marks a
                                # running thread as stopped (bpo-45274), so it could not be waited for

    def work():
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Passed unknown parameter")
                execute_notebook(notebook, str(tmp), klog, lambda: kernel.stopping, parameters=params,
                                 progress_bar=False, kernel_name="python3", cwd=str(EXPERIMENT.parent),
                                 kernel_manager_class=_kernel_manager(klog, kernel.started),
                                 shutdown_kernel="immediate")  # its results are on disk by then
        except BaseException as err:  # handed to the main thread
            box["error"] = err
        finally:
            done.set()

    worker = threading.Thread(target=work, name="papermill", daemon=True)
    try:
        # Thread.start() waits for the thread to begin: a Ctrl-C there would leave papermill
        # running unwatched (it then writes the unit's notebook after the clean-up). Held until
        # the thread runs, it is raised here and handled like any other.
        with _signals_deferred():
            worker.start()
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        logging.disable(logging.CRITICAL)   # not nbclient's "Kernel died..." for the kernel stopped here
        kernel.stop()
        # nbclient notices the dead kernel and returns; papermill writes its notebook last, so
        # wait for that (a repeated Ctrl-C does not cut the wait short)
        deadline = time.monotonic() + join_s
        while time.monotonic() < deadline:
            try:
                if done.wait(0.2):
                    break
            except KeyboardInterrupt:
                pass
        logging.disable(logging.NOTSET)
        raise
    if "error" in box:
        raise box["error"]


def run(units, out: Path, progress: bool = True, log=print, progress_every: float | None = None,
        executor: str = "local", address: str | None = None, cpus_per_unit: int = 1,
        seeds_per_task: int | None = None) -> list[str]:
    """Execute every unit not already finished in ``out``; returns the units run now.

    ``executor``: ``"local"`` (one unit after another in this process's kernel) or ``"ray"``
    (units as tasks on the Ray cluster at ``address``, ``cpus_per_unit`` CPUs each, a unit split
    into tasks of ``seeds_per_task`` seeds when given; see ``amortlib.ray_executor``). Raises ``SweepLocked`` when another sweep holds ``out``, ``UnitFailed`` when a unit's
    notebook raises (the finished units are kept), ``KeyboardInterrupt`` on Ctrl-C (likewise)."""
    check_executor(executor, address, cpus_per_unit, seeds_per_task)
    out = Path(out).resolve()   # papermill chdirs to the notebook folder while it executes
    if progress_every is None:
        progress_every = float(os.environ.get("AMORTLIB_PROGRESS_EVERY", 30))
    lk = lock(out)
    pidfile = out / ".sweep.pid"
    try:
        lk.acquire()
    except Timeout:
        raise SweepLocked(f"results folder {out} is locked by another sweep ({_describe(_holder(pidfile))}); "
                          f"wait for it to finish or write to another folder with --out") from None
    display = None
    try:
        import papermill as pm

        from .results import ResultsError, clean_partial_writes, discard_unfinished, unit_done

        if pidfile.exists():
            stale = _holder(pidfile)
            log(f"cleared a stale lock of {out}: the sweep ({_describe(stale)}) ended without releasing it, "
                f"probably killed; its finished units are kept, its unit in progress is redone")
            _reap_orphan_kernel(stale, log)
        me = dict(pid=os.getpid(), host=socket.gethostname(), started=time.strftime("%Y-%m-%d %H:%M:%S"))

        def record(kernel_pid=None):
            from .results import atomic_write_json
            atomic_write_json({**me, "kernel_pid": kernel_pid}, pidfile)

        record()
        runs = out / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        for stale in [*runs.glob("*.tmp.ipynb"), *runs.glob(".*.progress.json*"), *runs.glob(".*.kernel.log")]:
            stale.unlink(missing_ok=True)
        clean_partial_writes(out)
        todo = [(u, c) for u, c in units if not unit_done(out, u, c.to_dict())]
        for u, _ in todo:
            discard_unfinished(out, u)
        skipped = len(units) - len(todo)
        if skipped:
            log(f"{skipped} of {len(units)} units already finished in {out}: skipped")
        if executor == "ray" and todo:
            from .ray_executor import run_units
            return run_units(todo, out, progress, log, address, cpus_per_unit, seeds_per_task)
        notebook = experiment_notebook() if todo else None
        display = _Display(len(units), skipped, [_weight(c) for _, c in todo], progress, log, progress_every)
        done = []
        for unit, cfg in todo:
            t0 = time.perf_counter()
            tmp = runs / f"{unit}.tmp.ipynb"
            prog = runs / f".{unit}.progress.json"
            display.start(unit, cfg, _weight(cfg))
            stop = threading.Event()
            watcher = threading.Thread(target=_watch, args=(prog, display, stop), daemon=True)
            klog_path = runs / f".{unit}.kernel.log"
            klog, pm_log = None, logging.getLogger("papermill")
            old_env, pm_level = os.environ.get(PROGRESS_ENV), pm_log.level
            try:
                with _signals_deferred():   # the set-up whole (a Ctrl-C in Thread.start() is held), so
                    klog = open(klog_path, "wb")    # the clean-up below has all of it to undo
                    os.environ[PROGRESS_ENV] = str(prog)        # the kernel inherits it
                    watcher.start()
                    pm_log.setLevel(logging.ERROR)   # not "Passed unknown parameter" for each non-default setting
                _execute(notebook, tmp, _notebook_params(cfg, out, unit, progress), klog, record)
                finish_run_notebook(tmp, out, unit)   # no absolute paths; the run's provenance
                os.replace(tmp, runs / f"{unit}.ipynb")
            except pm.PapermillExecutionError as err:
                kept = runs / f"{unit}.failed.ipynb"
                if tmp.exists():
                    os.replace(tmp, kept)
                klog.close()
                if klog_path.stat().st_size:
                    os.replace(klog_path, runs / f"{unit}.failed.kernel.log")
                raise _failure(err, unit, kept) from None
            except KernelNotStarted as err:
                tmp.unlink(missing_ok=True)      # nothing of the unit ran
                klog.close()
                kept = runs / f"{unit}.failed.kernel.log"
                os.replace(klog_path, kept)
                raise UnitFailed(f"unit {unit} failed: {err}; the kernels' log kept in {kept}") from None
            except BaseException:                # interrupted, disk full, ...: the kernel is gone
                with _signals_deferred():
                    if tmp.exists() and (out / "units" / f"{unit}.json").exists():   # it finished just before
                        os.replace(tmp, runs / f"{unit}.ipynb")
                    tmp.unlink(missing_ok=True)  # the partial provenance notebook of a stopped unit
                raise
            finally:
                with _signals_deferred():        # a second Ctrl-C does not cut the clean-up half-way
                    discard_unfinished(out, unit)    # files of a unit whose marker was never written
                    if klog is not None:
                        klog.close()
                    klog_path.unlink(missing_ok=True)
                    pm_log.setLevel(pm_level)
                    stop.set()
                    if watcher.ident is not None:
                        watcher.join()
                    if old_env is None:
                        os.environ.pop(PROGRESS_ENV, None)
                    else:
                        os.environ[PROGRESS_ENV] = old_env
                    prog.unlink(missing_ok=True)
            (runs / f"{unit}.failed.ipynb").unlink(missing_ok=True)
            (runs / f"{unit}.failed.kernel.log").unlink(missing_ok=True)
            if not unit_done(out, unit):
                raise ResultsError(f"the experiment notebook finished {unit} but wrote no results to {out}")
            done.append(unit)
            display.finish(unit, time.perf_counter() - t0)
        return done
    finally:
        with _signals_deferred():
            if display is not None:
                display.close()
            pidfile.unlink(missing_ok=True)
            lk.release()
