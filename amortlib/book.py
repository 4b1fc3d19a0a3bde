"""Build the book so that it renders fully offline.

    python -m amortlib.book assets   # fetch/copy MathJax, require.js, the widget manager, plotly.js
    python -m amortlib.book build    # assets, then `jupyter-book build` with warnings as errors

``assets`` installs the npm packages pinned by ``book/vendor/package.json`` and
``package-lock.json`` (``npm ci`` into the ignored ``book/vendor/node_modules``) and copies the
files the pages load into the ignored ``book/_static/vendor/``:

- ``mathjax/``: MathJax 3 ``tex-chtml.js`` with its fonts and lazily loaded extensions,
- ``requirejs/require.js``, ``html-manager/setup.js`` (written here) and
  ``html-manager/embed-amd.js`` (+ its icon fonts): what myst-nb loads to render saved
  ipywidgets state (``nb_ipywidgets_js`` in ``_config.yml``),
- ``plotly/plotly.min.js`` from the *installed* plotly package, so the JS always matches the
  Python side that wrote the figures (``amortlib.plots``).

A stamp records what was copied (lockfile and plotly.js hashes); when it matches and every file
is present, ``assets`` does nothing. ``_config.yml`` points Sphinx at these copies, so the built
pages request nothing from the network.

This module is also a Sphinx extension (``sphinx.extra_extensions`` in ``_config.yml``): it checks
that the assets are there before a build, and tells myst-nb to skip the
``application/vnd.plotly.v1+json`` part of a figure's output silently (the book renders its
``text/html`` part; by default myst-nb warns about every mime type it has no renderer for, and the
build treats warnings as errors).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .paths import BOOK_ROOT_ENV, book_root, checkout, prepare_book_copy

#: The book built: the source checkout, else a copy of the installed package's book files in
#: ``./amortlib-book`` (see ``amortlib.paths``).
ROOT = book_root()
NPM_DIR = ROOT / "book" / "vendor"
NODE_MODULES = NPM_DIR / "node_modules"
STATIC_VENDOR = ROOT / "book" / "_static" / "vendor"
STAMP = STATIC_VENDOR / ".stamp.json"
BUILD_DIR = ROOT / "_build"
HTML_DIR = BUILD_DIR / "html"
PLOTLY_MIME = "application/vnd.plotly.v1+json"

# (source under node_modules, destination under book/_static/vendor); directories copy whole.
NPM_FILES: tuple[tuple[str, str], ...] = (
    ("mathjax/es5/tex-chtml.js", "mathjax/tex-chtml.js"),
    ("mathjax/es5/input", "mathjax/input"),    # TeX extensions, loaded on demand (autoload)
    ("mathjax/es5/output", "mathjax/output"),  # CHTML fonts (woff-v2)
    ("mathjax/es5/ui", "mathjax/ui"),          # the right-click menu, loaded lazily
    ("mathjax/es5/a11y", "mathjax/a11y"),      # accessibility extensions the menu can enable
    ("mathjax/es5/sre", "mathjax/sre"),        # speech rule engine, same
    ("mathjax/es5/adaptors", "mathjax/adaptors"),
    ("mathjax/LICENSE", "mathjax/LICENSE"),
    ("requirejs/require.js", "requirejs/require.js"),
    ("requirejs/README.md", "requirejs/README.md"),
    ("@jupyter-widgets/html-manager/dist/embed-amd.js", "html-manager/embed-amd.js"),
    ("@jupyter-widgets/html-manager/dist/embed.js.LICENSE.txt", "html-manager/LICENSE.txt"),
)
# Loaded between require.js and embed-amd.js on pages with widgets (written by ``assets``):
# - embed-amd.js loads its webpack assets (Font Awesome fonts) from beside the URL require.js
#   gives its module "@jupyter-widgets/html-manager/dist/libembed-amd", by default a path
#   relative to the page: map that module path to this script's own directory;
# - the widgets typeset their labels with MathJax 2's ``MathJax.Hub.Queue``, and the book loads
#   MathJax 3: give MathJax 3 that one call.
FONT_SUFFIXES = (".woff2", ".woff", ".ttf", ".eot", ".svg")
WIDGETS_SETUP_JS = """\
// Written by `python -m amortlib.book assets`; loaded after require.js, before embed-amd.js.
(function () {
  // The widget manager's modules (and so its fonts) live in this script's directory.
  var here = document.currentScript.src.replace(/[?#].*$/, "").replace(/\\/[^\\/]*$/, "");
  require.config({paths: {"@jupyter-widgets/html-manager/dist": here}});

  // ipywidgets calls MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]) (MathJax 2).
  function queue() {
    var mj = window.MathJax, elements = [];
    for (var i = 0; i < arguments.length; i++) {
      var a = arguments[i];
      if (Array.isArray(a) && a[0] === "Typeset" && a[2]) { elements.push(a[2]); }
    }
    var ready = mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve();
    ready.then(function () {
      return mj.typesetPromise ? mj.typesetPromise(elements) : null;
    }).catch(function (err) { console.warn("MathJax typeset of a widget failed", err); });
  }
  function shim() {
    var mj = window.MathJax;
    if (mj && !mj.Hub) { mj.Hub = {Queue: queue}; }
  }
  shim();
  document.addEventListener("DOMContentLoaded", shim);  // MathJax 3 (deferred) replaces its global
})();
"""

#: What the pages load, relative to book/_static/vendor (and to _build/html/_static/vendor).
REQUIRED = ("mathjax/tex-chtml.js", "mathjax/output/chtml/fonts/woff-v2",
            "requirejs/require.js", "html-manager/setup.js",
            "html-manager/embed-amd.js", "plotly/plotly.min.js")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plotly_js_source() -> Path:
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"the installed plotly package has no {path}")
    return path


def _expected_stamp() -> dict:
    import plotly

    return {
        "package-lock.json": _sha256(NPM_DIR / "package-lock.json"),
        "setup.js": hashlib.sha256(WIDGETS_SETUP_JS.encode()).hexdigest(),
        "plotly": plotly.__version__,
        "plotly.min.js": _sha256(plotly_js_source()),
    }


def _read_stamp() -> dict:
    try:
        return json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return {}


def assets_ready() -> bool:
    """True when book/_static/vendor holds every file the pages load, as last copied."""
    return all((STATIC_VENDOR / rel).exists() for rel in REQUIRED) and \
        _read_stamp() == _expected_stamp()


def _npm_install(log=print) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed once to fetch the book's browser assets "
                           "(Debian: apt-get install npm)")
    installed = NODE_MODULES / ".package-lock.json"
    lock = NPM_DIR / "package-lock.json"
    if installed.is_file() and installed.stat().st_mtime >= lock.stat().st_mtime \
            and all((NODE_MODULES / src).exists() for src, _ in NPM_FILES):
        return
    log(f"npm ci in {NPM_DIR.relative_to(ROOT)}")
    subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                   cwd=NPM_DIR, check=True)


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def assets(force: bool = False, log=print) -> Path:
    """Fetch and copy the offline assets into book/_static/vendor (no-op when up to date)."""
    prepare_book_copy(ROOT)
    if not force and assets_ready():
        log(f"assets: up to date in {STATIC_VENDOR.relative_to(ROOT)}")
        return STATIC_VENDOR
    _npm_install(log)
    if STATIC_VENDOR.exists():
        shutil.rmtree(STATIC_VENDOR)
    for src, dst in NPM_FILES:
        _copy(NODE_MODULES / src, STATIC_VENDOR / dst)
    dist = NODE_MODULES / "@jupyter-widgets" / "html-manager" / "dist"
    for font in sorted(dist.iterdir()):
        if font.suffix in FONT_SUFFIXES:
            _copy(font, STATIC_VENDOR / "html-manager" / font.name)
    (STATIC_VENDOR / "html-manager" / "setup.js").write_text(WIDGETS_SETUP_JS)
    _copy(plotly_js_source(), STATIC_VENDOR / "plotly" / "plotly.min.js")
    missing = [rel for rel in REQUIRED if not (STATIC_VENDOR / rel).exists()]
    if missing:
        raise RuntimeError(f"assets: missing after copy: {missing}")
    STAMP.write_text(json.dumps(_expected_stamp(), indent=1) + "\n")
    log(f"assets: copied into {STATIC_VENDOR.relative_to(ROOT)}")
    return STATIC_VENDOR


def build(extra_args: list[str] | None = None, log=print, stored_outputs: bool = False) -> int:
    """assets(), then ``jupyter-book build`` of the repository into _build/html, with every
    warning an error (``-W -n --keep-going``: all warnings are reported, then it fails).

    By default the chapters are executed (through jupyter-cache), so the book shows this
    machine's numbers and the results in ``$AMORTLIB_RESULTS``. ``stored_outputs``: render the
    outputs stored in the ``.ipynb`` files instead, executing nothing (a config with
    ``execute_notebooks: off`` beside ``_config.yml``); a build in a minute or two, used by the
    tests, whose nbval run checks that those outputs are what the code produces."""
    assets(log=log)
    jb = Path(sys.executable).with_name("jupyter-book")
    config = []
    if stored_outputs:
        import yaml

        conf = yaml.safe_load((ROOT / "_config.yml").read_text())
        conf.setdefault("execute", {})["execute_notebooks"] = "off"
        path = ROOT / "_build" / "_config.stored-outputs.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# written by python -m amortlib.book build --stored-outputs\n"
                        + yaml.safe_dump(conf, sort_keys=False))
        config = ["--config", str(path)]
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(ROOT),
           "--builder", "html", "-W", "-n", "--keep-going", *config, *(extra_args or [])]
    if checkout() is None:
        log(f"building the installed book in {ROOT}")
    log("$ " + " ".join(cmd))
    env = dict(os.environ, **{BOOK_ROOT_ENV: str(ROOT)})  # the Sphinx extension's ROOT too
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets the kernels' debugger warning
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


# ---------------------------------------------------------------------------------------------
# Sphinx extension
# ---------------------------------------------------------------------------------------------

def _skip_plotly_json() -> None:
    """Make myst-nb render nothing (and warn nothing) for the plotly JSON of an output bundle;
    the bundle's text/html is what the book shows. (myst-nb renders every mime type of a bundle
    before it picks one by priority, so ``nb_mime_priority_overrides`` cannot silence the
    warning; a mime-render plugin could, but needs a package entry point.)"""
    from myst_nb.core.render import NbElementRenderer

    for name in ("render_mime_type", "render_mime_type_inline"):
        original = getattr(NbElementRenderer, name)
        if getattr(original, "_amortlib_skips_plotly", False):
            continue

        def patched(self, data, _original=original):
            if data.mime_type == PLOTLY_MIME:
                return []
            return _original(self, data)

        patched._amortlib_skips_plotly = True
        patched.__name__ = name
        setattr(NbElementRenderer, name, patched)


def _check_assets(app) -> None:
    if app.builder.format == "html" and not all((STATIC_VENDOR / rel).exists()
                                                for rel in REQUIRED):
        from sphinx.errors import ExtensionError

        raise ExtensionError("the book's offline assets are missing from book/_static/vendor: "
                             "run `python -m amortlib.book assets`")


def setup(app):
    _skip_plotly_json()
    app.connect("builder-inited", _check_assets)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m amortlib.book", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_assets = sub.add_parser("assets", help="fetch and copy the offline browser assets")
    p_assets.add_argument("--force", action="store_true", help="copy again even if up to date")
    p_build = sub.add_parser("build", help="assets, then build the book into _build/html")
    p_build.add_argument("--all", action="store_true", help="re-build every page")
    p_build.add_argument("--stored-outputs", action="store_true",
                         help="render the notebooks' stored outputs, executing nothing (fast; "
                              "default: execute the chapters, on this machine's results)")
    args = parser.parse_args(argv)
    try:
        prepare_book_copy(ROOT)   # an installed amortlib builds a copy of the book it ships
        missing = [p for p in (ROOT / "_config.yml", NPM_DIR / "package.json") if not p.is_file()]
        if missing:
            raise RuntimeError(f"the book's sources are not installed with the package ({missing[0]} is missing): "
                               f"build the book from a checkout of its repository (git clone, then make)")
        if args.command == "assets":
            assets(force=args.force)
            return 0
        return build(["--all"] if args.all else [], stored_outputs=args.stored_outputs)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as err:
        print(f"python -m amortlib.book {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"python -m amortlib.book {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
