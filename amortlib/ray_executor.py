"""Sweep units as Ray tasks (``amortlib sweep --executor ray``): a unit per task, run on any
node of a Ray cluster, gathered and written by the driver.

Each unit is one Ray task with the resources it needs (``num_cpus``; ``num_gpus=1`` when the
unit's device is ``cuda``, or ``auto`` on a cluster with GPUs). The task executes the
experiment notebook with papermill exactly as the local runner does, but into a fresh temporary
folder on its node, and returns the unit's files as bytes (``units/<unit>.*`` and the executed
notebook). The driver, which holds the results folder's lock as for a local sweep, writes them
with the atomic writers of ``amortlib.results``: the executed notebook first, the data files
next, the unit's JSON marker last. So nothing of a unit reaches the results folder before the
whole unit has finished, a sweep killed at any moment loses at most the units in flight, and a
rerun (with either executor) skips the finished units.

A unit with many seeds can be split into **seed shards** (``--seeds-per-task N``): one task per
N seeds, each the same notebook with ``seeds`` narrowed to its shard. Models of one seed share
nothing with other seeds (each has its own decoder, noise streams and optimiser state; the data
order is the unit's), so the shards' models are those of the whole unit. The driver merges a
unit's shards once all have finished (``merge_shards``: the tables concatenated in the local
runner's row order, the record of the first shard with every seed and the shards listed) and
writes it as one unit; until then nothing of it is written.

A task whose worker or node dies mid-unit is retried by Ray (``max_retries``) on a live node,
from the start of the unit; a unit whose notebook raises is not retried (it would raise again):
its executed notebook is kept as ``runs/<unit>.failed.ipynb`` and the sweep stops, as a local
one does. Ctrl-C cancels the tasks in flight (their workers are killed) and propagates.

Every node needs the same amortlib (and data: ``AMORTLIB_DATA`` in the environment of its
``ray start``) as the driver; see *How to run* for a SLURM cluster.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

#: Times Ray reruns a unit whose worker process or node died (not one whose notebook raised).
MAX_RETRIES = 3


def require_ray(cpus_per_unit: int = 1, address: str | None = None):
    """The ``ray`` module, after the checks that need no connection: ``cpus_per_unit``, Ray
    installed, and a ``host:port`` address that answers (else Ray would retry for minutes).
    Each failure is a one-line ``ValueError``."""
    if isinstance(cpus_per_unit, bool) or not isinstance(cpus_per_unit, int) or cpus_per_unit < 1:
        raise ValueError(f"cpus_per_unit={cpus_per_unit!r} is invalid: expected an integer >= 1")
    try:
        import ray
    except ImportError:
        raise ValueError("executor='ray' is invalid here: Ray is not installed "
                         "(pip install 'amortlib[ray]')") from None
    host, _, port = (address or "").rpartition(":")
    if host and port.isdigit() and "://" not in address:
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as err:
            raise ValueError(f"address={address!r} is invalid: no Ray head answers there ({err.strerror or err}); "
                             f"start one with `ray start --head --port={port}`") from None
    return ray


def execute_unit(notebook, params: dict, unit: str) -> dict:
    """Run on a Ray worker: execute the experiment notebook for one unit into a temporary
    folder and return its files, ``{"files": {relative path: bytes}, "node": host, ...}``, or
    ``{"failed": {...}, ...}`` when the notebook raised."""
    import papermill as pm
    import ray

    from .experiment import PROGRESS_ENV
    from .runner import _kernel_manager, execute_notebook

    t0 = time.perf_counter()
    node = dict(node=socket.gethostname(), ray_node_id=ray.get_runtime_context().get_node_id())
    with tempfile.TemporaryDirectory(prefix=f"amortlib-{unit}-") as tmp:
        tmp = Path(tmp)
        executed = tmp / "runs" / f"{unit}.ipynb"
        executed.parent.mkdir()
        old = os.environ.get(PROGRESS_ENV)
        os.environ[PROGRESS_ENV] = str(tmp / f".{unit}.progress.json")   # the kernel inherits it
        logging.getLogger("papermill").setLevel(logging.ERROR)
        try:
            with open(tmp / "kernel.log", "wb") as klog:
                execute_notebook(notebook, str(executed), klog, parameters=dict(params, output=str(tmp)),
                                 progress_bar=False, kernel_name="python3", cwd=str(tmp),
                                 kernel_manager_class=_kernel_manager(klog), shutdown_kernel="immediate")
        except pm.PapermillExecutionError as err:
            return dict(failed=dict(ename=err.ename, evalue=err.evalue, exec_count=err.exec_count),
                        notebook=executed.read_bytes() if executed.exists() else None,
                        kernel_log=(tmp / "kernel.log").read_bytes(), node=node)
        finally:
            if old is None:
                os.environ.pop(PROGRESS_ENV, None)
            else:
                os.environ[PROGRESS_ENV] = old
        files = {f"units/{p.name}": p.read_bytes() for p in sorted((tmp / "units").glob(f"{unit}.*"))}
        files[f"runs/{unit}.ipynb"] = executed.read_bytes()
        return dict(files=files, node=node, seconds=time.perf_counter() - t0)


def _cause(err) -> str:
    """What went wrong in a failed Ray task, in one line: the exception the task raised (a
    ``RayTaskError`` carries it as ``cause``; its own text starts with the worker's traceback
    and ends with the message), else the error's last 500 characters."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {' '.join(str(cause).split())[:500]}"
    return f"{type(err).__name__}: {' '.join(str(err).split())[-500:]}"


def _where(node: dict) -> str:
    return f"{node['node']} (Ray node {node['ray_node_id'][:8]})"


def write_unit(out: Path, unit: str, files: dict, node: dict) -> None:
    """Write a unit gathered from a worker: the executed notebook, the data files, then the
    JSON marker (with the node it ran on added to its ``info``), each atomically."""
    import json

    from .results import ResultsError, atomic_write_bytes, atomic_write_json
    marker = f"units/{unit}.json"
    if marker not in files:
        raise ResultsError(f"the experiment notebook finished {unit} on {_where(node)} but wrote no results")
    for rel in sorted(files, key=lambda r: (r != f"runs/{unit}.ipynb", r == marker, r)):
        if rel == marker:
            meta = json.loads(files[rel])
            meta.setdefault("info", {}).update(executor="ray", **node)
            atomic_write_json(meta, out / rel)
        else:
            atomic_write_bytes(out / rel, files[rel])
    (out / "runs" / f"{unit}.failed.ipynb").unlink(missing_ok=True)
    (out / "runs" / f"{unit}.failed.kernel.log").unlink(missing_ok=True)


def shards(seeds, per_task: int | None) -> list[tuple]:
    """``seeds`` in consecutive shards of ``per_task`` (one shard of all when None)."""
    seeds = tuple(seeds)
    if per_task is None or per_task >= len(seeds):
        return [seeds]
    return [seeds[i:i + per_task] for i in range(0, len(seeds), per_task)]


def _ordered(frames: list):
    """Shards' frames as one, in the local runner's row order: by epoch or split, then by
    configuration (in the order they first appear), then by seed."""
    import pandas as pd
    df = pd.concat(frames, ignore_index=True)
    keys = [k for k in ("epoch", "split", "config", "seed") if k in df.columns]
    cols = {}
    for k in keys:
        if df[k].dtype == object:
            order = {v: i for i, v in enumerate(dict.fromkeys(df[k]))}
            cols[k] = df[k].map(order)
        else:
            cols[k] = df[k]
    if not keys:
        return df
    idx = pd.DataFrame(cols).sort_values(keys, kind="stable").index
    return df.loc[idx].reset_index(drop=True)


def merge_shards(unit: str, parts: list[dict], seeds) -> tuple[dict, dict]:
    """One unit's files from its seed shards' (``parts``, in shard order: each ``execute_unit``'s
    result): parquet tables concatenated (``_ordered``), the reconstructions (first seed) and
    the executed notebook of the first shard (the others' as ``runs/<unit>.shard-<i>.ipynb``),
    the record of the first shard with ``config.seeds`` = every seed and ``info.shards``
    listing each shard's seeds, node and seconds. Raises ``ResultsError`` if the shards
    disagree on anything but their seeds."""
    import io
    import json

    import pandas as pd

    from .results import ResultsError
    if len(parts) == 1:
        return parts[0]["files"], parts[0]["node"]
    marker = f"units/{unit}.json"
    metas = [json.loads(p["files"][marker]) for p in parts if marker in p["files"]]
    if len(metas) != len(parts):
        raise ResultsError(f"a seed shard of {unit} finished but wrote no results")
    strip = lambda c: {k: v for k, v in c.items() if k != "seeds"}
    if any(strip(m["config"]) != strip(metas[0]["config"]) or m["tables"] != metas[0]["tables"] for m in metas):
        raise ResultsError(f"the seed shards of {unit} ran with different settings")
    files = {}
    names = sorted({r for p in parts for r in p["files"] if r.endswith(".parquet")})
    for rel in names:
        if not all(rel in p["files"] for p in parts):
            raise ResultsError(f"a seed shard of {unit} lacks {rel}")
        df = _ordered([pd.read_parquet(io.BytesIO(p["files"][rel])) for p in parts])
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        files[rel] = buf.getvalue()
    for rel, payload in parts[0]["files"].items():
        if rel not in files and rel != marker:
            files[rel] = payload                  # the reconstructions (first seed), the notebook
    for i, p in enumerate(parts[1:], start=1):
        files[f"runs/{unit}.shard-{i}.ipynb"] = p["files"][f"runs/{unit}.ipynb"]
    shard_seeds = [list(m["config"]["seeds"]) for m in metas]
    meta = metas[0]
    meta["config"]["seeds"] = list(seeds)
    info = meta.setdefault("info", {})
    info["n_models"] = sum(m["info"].get("n_models", 0) for m in metas)
    for k in ("train_seconds", "eval_seconds"):
        if all(k in m["info"] for m in metas):
            info[k] = max(m["info"][k] for m in metas)   # the shards ran side by side
    info["shards"] = [dict(seeds=sd, seconds=p.get("seconds"), **p["node"]) for sd, p in zip(shard_seeds, parts)]
    files[marker] = json.dumps(meta, indent=1, sort_keys=True, default=str).encode()
    return files, parts[0]["node"]


def _resources(cfg, cluster: dict, cpus: int) -> dict:
    gpus = cluster.get("GPU", 0)
    if cfg.device == "cuda" and not gpus:
        raise ValueError("device='cuda' is invalid on this Ray cluster: it has no GPU (use 'auto' or 'cpu')")
    return dict(num_cpus=cpus, num_gpus=1 if cfg.device != "cpu" and gpus else 0)


def run_units(todo, out: Path, progress: bool = True, log=print, address: str | None = None,
              cpus_per_unit: int = 1, seeds_per_task: int | None = None) -> list[str]:
    """Execute the units ``todo`` ([(unit, config)]) as Ray tasks on the cluster at ``address``
    (None: ``$RAY_ADDRESS``, else a new Ray instance on this machine), each unit as one task or,
    with ``seeds_per_task``, as one task per shard of that many seeds, and write each finished
    unit into ``out``; returns the units written, in the order they finished. The caller holds
    ``out``'s lock. Raises ``UnitFailed`` as the local runner does."""
    from .runner import UnitFailed, _failure, _notebook_params, _signals_deferred, experiment_notebook
    from .results import ResultsError, unit_done

    ray = require_ray(cpus_per_unit)
    out = Path(out)
    kw = dict(log_to_driver=False, logging_level=logging.WARNING)
    if address is None and not os.environ.get("RAY_ADDRESS"):
        kw.update(include_dashboard=False)
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, **kw)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ValueError(f"address={address!r} is invalid: no Ray cluster reachable there "
                         f"({' '.join(str(err).split())[:200]})") from None
    finally:   # ray.init replaces the SIGTERM handler by sys.exit: keep the caller's (the CLI's)
        if threading.current_thread() is threading.main_thread() and sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)
    pending, done = {}, []
    try:
        cluster = ray.cluster_resources()
        biggest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
        if cpus_per_unit > biggest:
            raise ValueError(f"cpus_per_unit={cpus_per_unit!r} is invalid on this Ray cluster: its largest "
                             f"node has {biggest:g} CPUs")
        task = ray.remote(execute_unit)
        notebook = experiment_notebook()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        log(f"Ray cluster: {nodes} node(s), {cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs; "
            f"{len(todo)} unit(s) sent as tasks ({cpus_per_unit} CPU each)")
        parts, seeds_of = {}, {}
        for unit, cfg in todo:
            res = _resources(cfg, cluster, cpus_per_unit)
            split = shards(cfg.seeds, seeds_per_task)
            parts[unit], seeds_of[unit] = [None] * len(split), cfg.seeds
            for i, shard in enumerate(split):
                c = cfg if len(split) == 1 else cfg.replace(seeds=shard)
                params = _notebook_params(c, out, unit, progress)
                name = f"amortlib {unit}" + (f" seeds {','.join(map(str, shard))}" if len(split) > 1 else "")
                ref = task.options(max_retries=MAX_RETRIES, name=name, **res).remote(notebook, params, unit)
                pending[ref] = (unit, i, time.monotonic())
        if seeds_per_task is not None:
            log(f"{len(pending)} task(s) of at most {seeds_per_task} seed(s) each")
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                unit, i, t0 = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except ray.exceptions.RayError as err:   # retries exhausted, or the task raised
                    raise UnitFailed(f"unit {unit} failed on the Ray cluster: {_cause(err)}") from None
                if "failed" in res:
                    raise _kept_failure(out, unit, res, _failure)
                parts[unit][i] = res
                if any(p is None for p in parts[unit]):
                    continue                      # the unit's other shards are still running
                files, node = merge_shards(unit, parts.pop(unit), seeds_of[unit])
                with _signals_deferred():         # a unit's files are written whole
                    write_unit(out, unit, files, node)
                if not unit_done(out, unit):
                    raise ResultsError(f"the experiment notebook finished {unit} but wrote no results to {out}")
                done.append(unit)
                log(f"finished {unit} on {_where(node)} in {time.monotonic() - t0:.0f} s "
                    f"({len(done)}/{len(todo)} units done)")
        return done
    finally:
        for ref in pending:             # Ctrl-C, or a failure: stop the units still in flight
            ray.cancel(ref, force=True)
        ray.shutdown()


def _kept_failure(out: Path, unit: str, res: dict, failure):
    """Keep a failed unit's executed notebook and kernel log as the local runner does; the
    error to raise."""
    from .results import atomic_write_bytes

    class _Err:                          # papermill's error, as the worker described it
        ename, evalue, exec_count = (res["failed"][k] for k in ("ename", "evalue", "exec_count"))

    kept = out / "runs" / f"{unit}.failed.ipynb"
    if res.get("notebook"):
        atomic_write_bytes(kept, res["notebook"])
    if res.get("kernel_log"):
        atomic_write_bytes(out / "runs" / f"{unit}.failed.kernel.log", res["kernel_log"])
    err = failure(_Err(), unit, kept)
    return type(err)(f"{err} [on {_where(res['node'])}]")
