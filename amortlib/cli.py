"""The ``amortlib`` command: ``sweep``, ``report``, ``data check``.

Exit codes: 0 success; 1 a failure (a unit's notebook raised, corrupt results, incomplete data,
a full disk or another I/O error); 2 bad arguments (one line naming the parameter, the value and
what it accepts, an unusable --out and damaged data files included; nothing is written); 3 the
results folder is locked by another sweep; 130 interrupted (Ctrl-C, SIGTERM, at any moment: the
finished units are kept, rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .config import DATASETS, DEVICES, FAMILIES, LIKELIHOODS, LR_DECAYS, PRECISIONS, PROFILES

EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED, EXIT_INTERRUPTED = 1, 2, 3, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line, exit code 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _build() -> argparse.ArgumentParser:
    p = _Parser(prog="amortlib", description="Amortized vs factorized VI on a Bayesian VAE.",
                epilog="Exit codes: 0 ok, 1 failed, 2 bad arguments, 3 results folder locked, 130 interrupted.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="{sweep,report,data}")

    s = sub.add_parser(
        "sweep", help="run a profile's sweep (resumable)",
        description="Train F-VI, A-VI at each width and constant-VI for every seed, one papermill run of the "
                    "experiment notebook (notebooks/04_experiment) per dataset and likelihood setting (a unit), "
                    "kept under <out>/runs/ as provenance. Each finished "
                    "unit is written atomically; a rerun skips finished units, so an interrupted sweep resumes "
                    "where it stopped. Options left out take the profile's value.",
        epilog="Example: amortlib sweep --profile quick --dataset mnist --widths 1 16 --seeds 0 1")
    s.add_argument("--profile", default="quick", choices=sorted(PROFILES),
                   help="quick: both datasets on a CPU in minutes; paper: Margossian & Blei's scale, for a GPU; "
                        "test: tiny (default: quick)")
    s.add_argument("--dataset", nargs="+", choices=DATASETS, help="default: both")
    s.add_argument("--widths", nargs="+", type=int, metavar="K", help="encoder widths of A-VI")
    s.add_argument("--seeds", nargs="+", type=int, metavar="S")
    s.add_argument("--families", nargs="+", choices=FAMILIES, help="default: all three")
    s.add_argument("--epochs", type=int)
    s.add_argument("--n-obs", type=int, dest="n_obs", metavar="N", help="training images (the first N)")
    s.add_argument("--n-test", type=int, dest="n_test", metavar="N", help="test images (the first N)")
    s.add_argument("--z-dim", type=int, dest="z_dim", metavar="D", help="latent dimension")
    s.add_argument("--like-dim", type=int, dest="like_dim", metavar="H", help="decoder hidden width")
    s.add_argument("--lr", type=float, help="Adam learning rate")
    s.add_argument("--local-lr", type=float, dest="local_lr", metavar="LR",
                   help="Adam learning rate of F-VI's per-image q(z_n) (default: --lr)")
    s.add_argument("--warmup-epochs", type=int, dest="warmup_epochs", metavar="E",
                   help="every learning rate rises linearly over the first E epochs (default 0: none)")
    s.add_argument("--lr-decay", choices=LR_DECAYS, dest="lr_decay",
                   help="cosine: after the warm-up every learning rate falls to 0 at the last epoch (default none)")
    s.add_argument("--batch-size", type=int, dest="batch_size", metavar="B", help="default: full batch")
    s.add_argument("--likelihood", choices=LIKELIHOODS,
                   help="sweep only this likelihood (default: the profile's likelihood settings)")
    s.add_argument("--sigma", type=float, help="scale of the Gaussian likelihood (implies --likelihood gaussian)")
    s.add_argument("--eval-points", type=int, dest="eval_points", metavar="P",
                   help="about this many log-spaced epochs get metrics")
    s.add_argument("--fit-steps", type=int, dest="fit_steps", metavar="T",
                   help="Adam steps of F-VI's test-time fit")
    s.add_argument("--precision", choices=PRECISIONS)
    s.add_argument("--device", choices=DEVICES)
    s.add_argument("--data-root", dest="data_root", metavar="DIR", help="default: $AMORTLIB_DATA or the user cache")
    s.add_argument("--out", type=Path, metavar="DIR", help="results folder (default: results/<profile>)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars (finished units are still listed)")
    s.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: one unit after another on this machine (default); ray: every unit as a task "
                        "on a Ray cluster (pip install 'amortlib[ray]')")
    s.add_argument("--address", metavar="ADDR",
                   help="Ray cluster to use with --executor ray, e.g. 10.0.0.1:6379 or auto "
                        "(default: $RAY_ADDRESS, else a new Ray instance on this machine)")
    s.add_argument("--cpus-per-unit", type=int, dest="cpus_per_unit", default=1, metavar="N",
                   help="CPUs Ray reserves for each unit (--executor ray; default 1)")
    s.add_argument("--seeds-per-task", type=int, dest="seeds_per_task", metavar="N",
                   help="split each unit into Ray tasks of N seeds, merged into one unit on the driver "
                        "(--executor ray; default: one task a unit)")

    r = sub.add_parser("report", help="print summary tables of existing results",
                       description="Per unit, the mean and standard deviation over seeds of the final metrics of "
                                   "each configuration over its live seeds, and every run that diverged or blew up, "
                                   "with its epoch. Corrupt results files are named "
                                   "and left out (exit code 1).")
    r.add_argument("--results", type=Path, metavar="DIR",
                   help="results folder (default: $AMORTLIB_RESULTS, else the newest under results/)")

    d = sub.add_parser("data", help="data utilities", description="Data utilities.")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=_Parser, metavar="{check}")
    c = dsub.add_parser("check", help="verify the data folder",
                        description="Check that the MNIST and Fashion-MNIST files are present and consistent "
                                    "(header counts, file sizes, images vs labels); say what is missing and how "
                                    "to get it. Exit code 1 when something is wrong.")
    c.add_argument("--root", type=Path, metavar="DIR", help="default: $AMORTLIB_DATA or ~/.cache/amortlib/data")
    c.add_argument("--dataset", nargs="+", choices=DATASETS, help="default: both")
    return p


def _one_line(err) -> str:
    return " ".join(str(err).split())


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    """Every outcome is an exit code and, on failure, one line on stderr (no traceback)."""
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _sigterm) if main_thread else None   # SIGTERM stops like Ctrl-C
    try:
        args = _build().parse_args(argv)
        try:
            if args.command == "sweep":
                return _sweep(args)
            if args.command == "report":
                return _report(args)
            return _data_check(args)
        except ValueError as err:  # bad parameter values, or a ResultsError (a ValueError too)
            print(f"amortlib {args.command}: error: {_one_line(err)}", file=sys.stderr)
            results = sys.modules.get("amortlib.results")  # not imported: not a ResultsError
            return EXIT_FAILED if results and isinstance(err, results.ResultsError) else EXIT_USAGE
        except OSError as err:     # disk full, a folder that cannot be written, a missing file
            print(f"amortlib {args.command}: error: {_os_error(err)}", file=sys.stderr)
            return EXIT_FAILED
    except KeyboardInterrupt:
        print("amortlib: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old)


def _os_error(err: OSError) -> str:
    """One line for an OSError: what failed, on which file."""
    if err.filename is not None and err.strerror:
        return f"{err.strerror}: {err.filename}"
    return _one_line(err)


def _variants(args):
    lik, sigma = args.likelihood, args.sigma
    if sigma is not None and lik is None:
        lik = "gaussian"
    if sigma is not None and lik != "gaussian":
        raise ValueError(f"sigma={sigma!r} is invalid with --likelihood {lik}: expected no --sigma "
                         f"(it is the scale of the Gaussian likelihood)")
    if lik is None:
        return None
    if lik == "gaussian" and sigma is None:
        sigma = PROFILES[args.profile].get("sigma", 1.0)
    return [(lik, 1.0 if sigma is None else sigma)]


def _sweep(args) -> int:
    from . import runner
    names = ["widths", "seeds", "families", "epochs", "n_obs", "n_test", "z_dim", "like_dim", "lr",
             "local_lr", "warmup_epochs", "lr_decay", "batch_size", "eval_points", "fit_steps", "precision", "device", "data_root"]
    overrides = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    units = runner.plan(args.profile, args.dataset, _variants(args), **overrides)  # validates everything
    runner.check_executor(args.executor, args.address, args.cpus_per_unit, args.seeds_per_task)
    out = runner.check_out(args.out or runner.default_out(args.profile))  # usable folder, or exit 2
    _say_split_limits(units)
    try:
        runner.run(units, out, progress=not args.no_progress, executor=args.executor, address=args.address,
                   cpus_per_unit=args.cpus_per_unit, seeds_per_task=args.seeds_per_task)
        print(f"results in {out}")
        return _report(argparse.Namespace(results=out))   # inside: Ctrl-C here is the sweep's too
    except runner.SweepLocked as err:
        print(f"amortlib sweep: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_LOCKED
    except runner.UnitFailed as err:
        print(f"amortlib sweep: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"amortlib sweep: interrupted; the finished units are kept in {out}: rerun the same command "
              f"to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except FileNotFoundError as err:    # e.g. the experiment notebook, outside a checkout
        print(f"amortlib sweep: error: {_os_error(err)}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as err:
        print(f"amortlib sweep: error: {_os_error(err)}; the finished units are kept in {out}: free the "
              f"space or fix the folder, then rerun the same command to resume", file=sys.stderr)
        return EXIT_FAILED


def _say_split_limits(units) -> None:
    """One line per dataset whose split holds fewer images than the profile asks for."""
    from .config import describe_split_limits
    seen = set()
    for _, cfg in units:
        limits = cfg.split_limits()
        if limits and cfg.dataset not in seen:
            seen.add(cfg.dataset)
            print(f"{cfg.dataset}: {describe_split_limits(limits, cfg.profile)}")


def _report(args) -> int:
    import pandas as pd

    from .config import describe_split_limits
    from .metrics import BLOWUP_FACTOR, summary_table
    from .results import load_results, newest_results

    folder = args.results or newest_results()
    if not Path(folder).is_dir():
        print(f"amortlib report: error: no results folder {folder}", file=sys.stderr)
        return EXIT_FAILED
    res = load_results(folder, errors="skip")
    runs = res["runs"]
    cols = ["config", "seeds", "neg_elbo_mean", "neg_elbo_std", "mse_train_mean", "mse_test_mean",
            "epochs_to_tol_mean", "seconds_to_tol_mean", "diverged", "blew_up"]
    print(f"results: {res['folder']}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        for unit, g in runs.groupby("unit", sort=True):
            meta = res["meta"][unit]
            info, cfg = meta["info"], meta["config"]
            limits = describe_split_limits(info.get("split_limits") or {}, cfg.get("profile", "?"))
            print(f"\n== {unit}  ({cfg.get('profile', '?')} profile, {info.get('device_name', '?')}, "
                  f"{info.get('precision', '?')}, {cfg.get('epochs', '?')} epochs, "
                  f"mean-image MSE train {info.get('mean_image_mse_train', float('nan')):.4f}"
                  + (f"; {limits}" if limits else "") + ")")
            table = summary_table(g)
            print(table[[c for c in cols if c in table]].to_string(index=False))
            div = g[g["diverged"].astype(bool) | g["blew_up"].astype(bool)]
            if len(div):
                print(f"   {len(div)} run(s) diverged or blew up, left out of the means above:")
                for _, r in div.sort_values(["config", "seed"]).iterrows():
                    what = []
                    if r["blew_up"]:
                        what.append(f"blew up at epoch {int(r['blew_up_epoch'])} (its negative ELBO ran off "
                                    f"to over {BLOWUP_FACTOR:g} times its scale)")
                    if r["diverged"]:
                        what.append(f"diverged at epoch {r['final_epoch']} (loss became NaN or infinite)")
                    print(f"   - {r['config']} seed {r['seed']}: {'; '.join(what)}")
    if res["problems"]:
        for p in res["problems"]:
            print(f"amortlib report: error: {_one_line(p)} (left out)", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _data_check(args) -> int:
    from .datacheck import check
    ok, lines = check(args.root, args.dataset)
    for line in lines:
        print(line)
    return 0 if ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
