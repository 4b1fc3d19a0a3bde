"""``amortlib sweep --executor ray`` on a real two-node Ray cluster on loopback: a head
(``ray start --head``) and a second node (``ray start --address``), 1 CPU each, both started
and stopped here. A 4-unit sweep gives the local executor's results (timing aside); with the
second node killed while it trains a unit, the sweep still completes, that unit rerun on the
head, nothing lost or duplicated. Waits are on observable conditions (processes, files), with
generous timeouts."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil

import pytest

from sweeps import _as_from_a_terminal, assert_clean, env, finish, frames, wait_for

BIN = Path(sys.executable).parent
# the quick profile's 4 likelihood settings on MNIST, tiny: 4 units of a few seconds of training
# (long enough to be seen training: the progress file is written every 0.5 s)
SWEEP = ["sweep", "--profile", "quick", "--dataset", "mnist", "--epochs", "300", "--widths", "2",
         "--seeds", "0", "1", "--n-obs", "100", "--n-test", "20", "--z-dim", "4", "--like-dim", "16",
         "--fit-steps", "10", "--eval-points", "5"]
UNITS = ["mnist-bernoulli", "mnist-gaussian-s0.1", "mnist-gaussian-s0.3", "mnist-gaussian-s1"]
TIMEOUT = 400
# the head notices a dead node within a few seconds, not the default ~30 s
FAST_HEALTH_CHECK = dict(RAY_health_check_initial_delay_ms="1000", RAY_health_check_period_ms="1000",
                         RAY_health_check_timeout_ms="1000", RAY_health_check_failure_threshold="3")


def _env(**extra):
    """The tests' sweep environment (one thread, the data), without the caller's Ray settings.
    Token authentication off: Ray 2.5x turns it on for `ray start` once a token file exists in
    ~/.ray (a local `ray.init()` writes one), and this private loopback cluster needs none."""
    e = {k: v for k, v in env(**extra).items() if not k.startswith("RAY_") or k in extra}
    e.setdefault("RAY_AUTH_MODE", "disabled")
    return e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(p: subprocess.Popen, grace=5.0):
    """Stop a ``ray start --block`` process and everything in its process group (raylet, GCS,
    workers): SIGTERM, then SIGKILL what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            break
        t0 = time.monotonic()
        while time.monotonic() - t0 < wait:
            p.poll()                                # reap the leader, so the group can empty
            try:
                os.killpg(p.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            continue
        break
    p.wait(timeout=10)


class Cluster:
    def __init__(self, root: Path):
        self.root, self.port = root, _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.head = self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                                         f"--dashboard-port={_free_port()}"], FAST_HEALTH_CHECK)
        self._wait_nodes(1)
        self.node2 = self._start("node2", [f"--address={self.address}"], {})
        self.head_id = self._wait_nodes(2)

    def _start(self, name, args, env):
        cmd = [str(BIN / "ray"), "start", *args, "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
               "--num-gpus=0", f"--temp-dir={self.root / name}", "--object-store-memory=80000000",
               f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}",
               "--disable-usage-stats"]
        log = open(self.root / f"{name}.log", "w")
        return subprocess.Popen(cmd, env=_env(**env), stdout=log, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    def _wait_nodes(self, n):
        """Until the cluster has ``n`` live nodes (asked with the ``ray`` CLI's Python API in a
        subprocess, so this test process never holds a Ray connection); the head's node id."""
        probe = ("import ray, json; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
                 "ns = [x for x in ray.nodes() if x['Alive']]; "
                 "print(json.dumps([len(ns)] + [x['NodeID'] for x in ns "
                 "if 'node:__internal_head__' in x['Resources']]))") % self.address

        def ready():
            try:
                r = subprocess.run([sys.executable, "-c", probe], env=_env(), capture_output=True, text=True,
                                   timeout=60)
            except subprocess.TimeoutExpired:
                return None
            if r.returncode == 0:
                got = json.loads(r.stdout.strip().splitlines()[-1])
                return got if got[0] == n else None
            return None
        return wait_for(ready, f"{n} live Ray node(s)", self.head, timeout=180)[1]

    def stop(self):
        for p in (getattr(self, "node2", None), self.head):
            if p is not None:
                _stop(p)


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))   # short: Ray's socket paths must fit 107 bytes
    c = None
    try:
        c = Cluster(root)
        yield c
    finally:
        if c is not None:
            c.stop()
        else:                                           # started part-way: stop whatever did start
            for p in psutil.process_iter(["cmdline"]):
                if p.info["cmdline"] and f"--temp-dir={root}" in " ".join(p.info["cmdline"]):
                    os.killpg(p.pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(root)])


def _sweep(out: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "amortlib"), *SWEEP, *extra, "--out", str(out)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_as_from_a_terminal)   # SIGINT at its default (see tests/sweeps.py)


def _finish(p: subprocess.Popen, timeout=TIMEOUT):
    """The sweep's stdout, once it has exited 0."""
    code, out, err = finish(p, timeout)
    assert code == 0, f"exit {code}:\n{out}\n{err}"
    return out


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The same sweep with the local executor (started at once: it runs beside the cluster's start)."""
    out = tmp_path_factory.mktemp("local")
    p = _sweep(out)
    yield lambda: (_finish(p), out)[1]
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()


def _frames(folder: Path):
    """Metrics, runs (timing aside) and gap tables of a results folder, validated; its records."""
    from amortlib.results import load_results
    m, r = frames(folder)
    res = load_results(folder)
    g = res["gap"].sort_values(["unit", "config", "seed", "split"]).reset_index(drop=True)
    return dict(metrics=m, runs=r, gap=g), res["meta"]


def _assert_same_results(ray_out: Path, local_out: Path, shard_notebooks=()):
    got, meta = _frames(ray_out)
    want, _ = _frames(local_out)
    for name in want:
        pd.testing.assert_frame_equal(got[name], want[name], obj=name)
    assert sorted(meta) == UNITS
    files = lambda out: sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
                               and not p.name.startswith(".sweep"))
    # the same files, no temp or failed leftovers (plus, for seed shards, each shard's notebook)
    assert files(ray_out) == sorted(files(local_out) + list(shard_notebooks))
    return meta


@pytest.mark.parametrize("extra,names", [
    (["--address", "127.0.0.1:6379"], "address='127.0.0.1:6379' is invalid with executor='local'"),
    (["--executor", "ray", "--cpus-per-unit", "0"], "cpus_per_unit=0 is invalid"),
    (["--executor", "ray", "--address", "127.0.0.1:{port}"], "address='127.0.0.1:{port}' is invalid: no Ray head answers"),
    (["--executor", "cluster"], "argument --executor: invalid choice"),
    (["--seeds-per-task", "1"], "seeds_per_task=1 is invalid with executor='local'"),
    (["--executor", "ray", "--seeds-per-task", "0"], "seeds_per_task=0 is invalid: expected an integer >= 1"),
])
def test_bad_executor_options_are_one_line_errors_and_write_nothing(extra, names, tmp_path, capsys):
    from amortlib.cli import main
    port = _free_port()                      # nothing listens there
    extra = [a.format(port=port) for a in extra]
    try:
        code = main(["sweep", "--profile", "test", "--out", str(tmp_path / "out"), *extra])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and names.format(port=port) in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ray_sweep_on_two_nodes_gives_the_local_results(cluster, local, tmp_path):
    out = tmp_path / "ray"
    stdout = _finish(_sweep(out, "--executor", "ray", "--address", cluster.address))
    assert "Ray cluster: 2 node(s), 2 CPUs, 0 GPUs; 4 unit(s) sent as tasks" in stdout
    for unit in UNITS:
        assert stdout.count(f"finished {unit} on ") == 1, stdout
    meta = _assert_same_results(out, local())
    assert {m["info"]["executor"] for m in meta.values()} == {"ray"}
    assert len({m["info"]["ray_node_id"] for m in meta.values()}) == 2, "both nodes should have run units"
    # and a rerun with either executor finds everything done
    again = subprocess.run([str(BIN / "amortlib"), *SWEEP, "--out", str(out)], env=_env(),
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert again.returncode == 0 and "4 of 4 units already finished" in again.stdout, again.stderr


@pytest.mark.slow
def test_seed_shards_of_a_unit_merge_into_the_local_results(cluster, local, tmp_path):
    out = tmp_path / "ray-shards"
    stdout = _finish(_sweep(out, "--executor", "ray", "--address", cluster.address, "--seeds-per-task", "1"))
    assert "8 task(s) of at most 1 seed(s) each" in stdout, stdout
    meta = _assert_same_results(out, local(), [f"runs/{u}.shard-1.ipynb" for u in UNITS])
    for unit, m in meta.items():
        assert m["config"]["seeds"] == [0, 1]
        assert [s["seeds"] for s in m["info"]["shards"]] == [[0], [1]], unit
        assert m["info"]["n_models"] == 2 * 3                        # F-VI, A-VI k=2, constant-VI per seed
    nodes = {s["ray_node_id"] for m in meta.values() for s in m["info"]["shards"]}
    assert len(nodes) == 2, "both nodes should have run shards"


def _training_kernel(node: subprocess.Popen):
    """A notebook kernel under the node's processes that is in its training loop (its progress
    file, named in its environment, says 0 < epoch < total)."""
    try:
        procs = psutil.Process(node.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for p in procs:
        try:
            if "ipykernel" not in " ".join(p.cmdline()):
                continue
            prog = p.environ().get("AMORTLIB_PROGRESS_FILE")
            st = json.loads(Path(prog).read_text()) if prog else None
        except (psutil.Error, OSError, ValueError):
            continue
        if st and 0 < st["n"] < st["total"]:
            return p
    return None


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupting_the_driver_cancels_the_units_in_flight(cluster, tmp_path, sig):
    out = tmp_path / "ray-interrupted"
    p = _sweep(out, "--executor", "ray", "--address", cluster.address)
    try:
        kernel = wait_for(lambda: _training_kernel(cluster.head) or _training_kernel(cluster.node2),
                          "a unit training", p)
        os.kill(p.pid, sig)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
    assert p.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == (f"amortlib sweep: interrupted; the finished units are kept in {out}: "
                                               f"rerun the same command to resume")
    # the cancelled task's worker is killed; its kernel notices its parent's death and exits
    wait_for(lambda: not kernel.is_running() or kernel.status() == psutil.STATUS_ZOMBIE,
             "the interrupted unit's kernel to exit", timeout=60)
    assert_clean(out)                   # whole units only, nothing of the cancelled ones
    assert len(list((out / "units").glob("*.json"))) < len(UNITS)


@pytest.mark.slow
def test_a_node_killed_mid_unit_loses_nothing(cluster, local, tmp_path):
    out = tmp_path / "ray-killed"
    p = _sweep(out, "--executor", "ray", "--address", cluster.address)
    try:
        kernel = wait_for(lambda: _training_kernel(cluster.node2), "a unit training on node 2", p)
        progress_file = kernel.environ()["AMORTLIB_PROGRESS_FILE"]    # in the unit's temp folder
        victim = next(u for u in UNITS if f"amortlib-{u}-" in progress_file)
        os.killpg(cluster.node2.pid, signal.SIGKILL)   # the node: its raylet, its workers
        cluster.node2.wait(timeout=30)
        assert not (out / "units" / f"{victim}.json").exists()
        stdout = _finish(p)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
    for unit in UNITS:
        assert stdout.count(f"finished {unit} on ") == 1, stdout
    meta = _assert_same_results(out, local())
    assert_clean(out)
    assert meta[victim]["info"]["ray_node_id"] == cluster.head_id, "the lost unit reruns on the live node"


def test_a_failed_task_is_reported_by_the_exception_it_raised():
    """The worker's traceback comes first in a RayTaskError's text; the one-line report names
    the exception the task raised instead of cutting the traceback after 500 characters."""
    import ray.exceptions

    from amortlib.ray_executor import _cause
    try:
        raise RuntimeError("Kernel didn't respond in 60 seconds")
    except RuntimeError as inner:
        err = ray.exceptions.RayTaskError("execute_unit", "Traceback ...\n" + "  frame\n" * 200, inner)
    assert _cause(err) == "RuntimeError: Kernel didn't respond in 60 seconds"
    long = ray.exceptions.RaySystemError("worker lost " + "x" * 2000 + " final words")
    assert _cause(long).startswith("RaySystemError: ") and _cause(long).endswith("final words")
