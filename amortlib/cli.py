"""The ``amortlib`` command: ``sweep``, ``report``, ``data check``.

Bad arguments exit with code 2 and one line naming the parameter and what it accepts.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import DATASETS, LIKELIHOODS, PRECISIONS, PROFILES


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _build() -> argparse.ArgumentParser:
    p = _Parser(prog="amortlib", description="Amortized vs factorized VI on a Bayesian VAE.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("sweep", help="run a profile's sweep (resumable)",
                       description="Train F-VI, A-VI at each width and constant-VI for every seed, "
                                   "one papermill run of notebooks/04_experiment.ipynb per dataset and "
                                   "likelihood setting; finished units are skipped on a rerun.")
    s.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    s.add_argument("--dataset", nargs="+", choices=DATASETS, help="default: both")
    s.add_argument("--widths", nargs="+", type=int, metavar="K", help="encoder widths of A-VI")
    s.add_argument("--seeds", nargs="+", type=int, metavar="S")
    s.add_argument("--epochs", type=int)
    s.add_argument("--n-obs", type=int, dest="n_obs")
    s.add_argument("--n-test", type=int, dest="n_test")
    s.add_argument("--z-dim", type=int, dest="z_dim")
    s.add_argument("--like-dim", type=int, dest="like_dim")
    s.add_argument("--lr", type=float)
    s.add_argument("--likelihood", choices=LIKELIHOODS,
                   help="sweep only this likelihood (default: the profile's settings)")
    s.add_argument("--sigma", type=float, help="with --likelihood gaussian: its scale")
    s.add_argument("--precision", choices=PRECISIONS)
    s.add_argument("--device", choices=("auto", "cpu", "cuda"))
    s.add_argument("--out", type=Path, help="results folder (default results/<profile>)")
    s.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("report", help="print summary tables of existing results")
    r.add_argument("--results", type=Path, help="results folder (default: the newest)")

    d = sub.add_parser("data", help="data utilities")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    c = dsub.add_parser("check", help="verify the data folder")
    c.add_argument("--root", type=Path, help="default: $AMORTLIB_DATA or the user cache")
    return p


def main(argv=None) -> int:
    args = _build().parse_args(argv)
    try:
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "report":
            return _report(args)
        return _data_check(args)
    except ValueError as err:  # bad parameter values (and ResultsError, a ValueError subclass)
        from .results import ResultsError
        print(f"amortlib {args.command}: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, ResultsError) else 2


def _sweep(args) -> int:
    from . import runner
    overrides = {k: getattr(args, k) for k in ["widths", "seeds", "epochs", "n_obs", "n_test", "z_dim",
                                               "like_dim", "lr", "precision", "device"]
                 if getattr(args, k) is not None}
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    if args.sigma is not None and args.likelihood != "gaussian":
        raise ValueError(f"sigma={args.sigma!r} is invalid without --likelihood gaussian")
    variants = None
    if args.likelihood:
        variants = [(args.likelihood, args.sigma if args.sigma is not None else 1.0)]
    units = runner.plan(args.profile, args.dataset, variants, **overrides)
    out = args.out or runner.default_out(args.profile)
    try:
        runner.run(units, out, progress=not args.no_progress)
    except runner.SweepLocked as err:
        print(f"amortlib sweep: error: {err}", file=sys.stderr)
        return 3
    print(f"results in {out}")
    return _report(argparse.Namespace(results=out))


def _report(args) -> int:
    import pandas as pd
    from .metrics import summary_table
    from .results import load_results, newest_results

    folder = args.results or newest_results()
    res = load_results(folder)
    runs = res["runs"]
    cols = ["config", "neg_elbo_mean", "neg_elbo_std", "mse_train_mean", "mse_test_mean",
            "epochs_to_tol_mean", "seconds_to_tol_mean", "diverged"]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        for unit, g in runs.groupby("unit", sort=True):
            meta = res["meta"][unit]
            info = meta["info"]
            print(f"\n== {unit}  ({meta['config']['profile']} profile, {info.get('device_name', '?')}, "
                  f"{info.get('precision', '?')}, {meta['config']['epochs']} epochs, "
                  f"mean-image MSE train {info.get('mean_image_mse_train', float('nan')):.4f})")
            print(summary_table(g)[cols].to_string(index=False))
    return 0


def _data_check(args) -> int:
    from .datacheck import check
    ok, lines = check(args.root)
    for line in lines:
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
