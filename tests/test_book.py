"""The book builds with warnings as errors, and its pages render offline in a real browser.

The build (``python -m amortlib.book build --stored-outputs`` into ``_build/html``) runs once
per pytest session (the ``built_book`` fixture). It renders the outputs stored in the chapters'
``.ipynb`` files instead of executing the chapters a second time: nbval (``make test``'s second
step) executes every chapter and checks those outputs against what the code produces, and
tests/test_colab.py executes each one again with papermill. (Executing them here as well cost
4 to 8 minutes of CI; ``make`` still builds the book by executing them.) The browser tests open pages in headless Chromium (Debian's
``chromium`` package, driven by the ``playwright`` Python package; no browser download), over
a localhost HTTP server, and fail on any request that leaves the machine.

Pages with plotly figures are listed in ``FIGURE_PAGES``; add a chapter there when it has one.
Screenshots go to ``test-output/`` (git-ignored).
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "test-output"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

#: Built pages (relative to _build/html) that must show plotly figures that draw; pages not
#: built yet (chapters still to come) are skipped, not failed.
FIGURE_PAGES = [
    "notebooks/01_vi_in_one_page.html",
    "notebooks/02_three_families.html",
    "notebooks/05_results.html",
    "notebooks/06_measuring_the_gap.html",
    "notebooks/07_when_can_amortization_close_the_gap.html",
]
#: Further pages opened in the browser (no remote requests, no JavaScript errors, screenshot).
OTHER_PAGES = ["book/intro.html"]
#: Widget modules bundled in @jupyter-widgets/html-manager's embed-amd.js. Any other module
#: would be fetched from a CDN by the page, so saved widget state may use only these.
BUILTIN_WIDGET_MODULES = {"@jupyter-widgets/base", "@jupyter-widgets/controls",
                          "@jupyter-widgets/output"}
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
#: Console errors of the theme itself, harmless: sphinx-thebe's inline config is included twice
#: by Jupyter Book 1 (`const THEBE_JS_URL` redeclared), and pydata-sphinx-theme complains about
#: the empty stored theme mode of a fresh browser profile.
BENIGN_ERRORS = (re.compile(r"Identifier 'THEBE_\w+' has already been declared"),
                 re.compile(r"Got invalid theme mode"))


# ---------------------------------------------------------------------------------------------
# The build, once per session
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def built_book():
    """Build the book once per pytest session; every test here reuses that build."""
    proc = subprocess.run([sys.executable, "-m", "amortlib.book", "build", "--stored-outputs"], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)
    log = proc.stdout + proc.stderr
    return proc.returncode, log


@pytest.mark.slow
def test_book_builds_with_warnings_as_errors(built_book):
    returncode, log = built_book
    tail = "\n".join(log.splitlines()[-60:])
    assert returncode == 0, f"the book build failed (warnings are errors):\n{tail}"
    assert re.search(r"build finished with problems|WARNING:", log) is None, tail
    assert (HTML / "index.html").is_file()
    assert (HTML / "book" / "intro.html").is_file()


def _toc_files(entries) -> list[str]:
    files = []
    for entry in entries or []:
        if "file" in entry:
            files.append(entry["file"])
        for key in ("sections", "chapters", "parts"):
            files += _toc_files(entry.get(key))
    return files


def test_toc_lists_every_notebook_and_only_existing_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + _toc_files(toc.get("chapters")) + _toc_files(toc.get("parts"))
    for f in files:
        assert any((ROOT / f).with_suffix(s).is_file() for s in (".md", ".ipynb")), \
            f"_toc.yml lists {f}, which does not exist"
    listed = {f for f in files if f.startswith("notebooks/")}
    on_disk = {f"notebooks/{p.stem}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert on_disk <= listed, f"notebooks missing from _toc.yml: {sorted(on_disk - listed)}"


def test_config_loads_assets_locally():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    urls = [cfg["mathjax_path"], *cfg["nb_ipywidgets_js"],
            *[e if isinstance(e, str) else e[0] for e in cfg["html_js_files"]]]
    assert not [u for u in urls if "://" in u or u.startswith("//")], urls


# ---------------------------------------------------------------------------------------------
# The browser
# ---------------------------------------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(built_book):
    if built_book[0] != 0:
        pytest.fail("the book did not build; see test_book_builds_with_warnings_as_errors")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    # Skipped without the browser on a developer's machine; in CI (CI=true) that is a failure.
    missing = pytest.fail if os.environ.get("CI", "").lower() in ("1", "true", "yes") \
        else pytest.skip
    try:
        from playwright import sync_api
    except ImportError:
        missing("needs the playwright Python package (pip install playwright; no browser "
                "download: the test drives Debian's chromium)")
    if not CHROMIUM.exists():
        missing("needs Debian's chromium (apt-get install chromium)")
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True,
            args=[a for a in CHROMIUM_ARGS if a != "--headless"],  # playwright adds it
            viewport={"width": 1280, "height": 900}, service_workers="block")
        yield context
        context.close()


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about", "chrome-error"):
        return True
    return parts.scheme in ("http", "https", "ws") and parts.hostname in LOCAL_HOSTS


_REMOTE_ATTR = re.compile(r"""<(script|link|img|iframe|source|video|audio)\b[^>]*?\b(src|href)=["']"""
                          r"""((?:https?:)?//[^"']+)""", re.I)
_REMOTE_CSS = re.compile(r"""(?:@import\s+|url\(\s*)["']?((?:https?:)?//[^"')\s]+)""", re.I)


@pytest.mark.slow
def test_no_page_references_remote_assets(built_book):
    """Static check of every built page and stylesheet: no script, style, font or image from
    the network (links to other sites, <a href>, are fine)."""
    assert built_book[0] == 0, "the book did not build"
    offenders = []
    for path in sorted(HTML.rglob("*.html")):
        text = path.read_text(errors="replace")
        for tag, _attr, url in _REMOTE_ATTR.findall(text):
            if tag.lower() == "link" and not re.search(
                    rf"<link\b[^>]*rel=[\"']?(stylesheet|preload|modulepreload|icon)[^>]*{re.escape(url)}",
                    text):
                continue  # <link rel="canonical"/"alternate"> etc. load nothing
            offenders.append(f"{path.relative_to(HTML)}: {url}")
    for path in sorted(HTML.rglob("*.css")):
        for url in _REMOTE_CSS.findall(path.read_text(errors="replace")):
            offenders.append(f"{path.relative_to(HTML)}: {url}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.slow
@pytest.mark.parametrize("page_path", FIGURE_PAGES + OTHER_PAGES)
def test_page_renders_offline(page_path, server, browser_context):
    built = HTML / page_path
    if not built.is_file():
        pytest.skip(f"{page_path} is not part of the book yet")
    html = built.read_text()
    expects_figure = page_path in FIGURE_PAGES or "plotly-graph-div" in html

    # Saved widget state may only use the widget modules bundled in the local embed-amd.js.
    state = re.search(r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>',
                      html, re.S)
    n_widget_views = html.count('type="application/vnd.jupyter.widget-view+json"')
    if state:
        modules = {m["model_module"] for m in json.loads(state.group(1))["state"].values()}
        assert modules <= BUILTIN_WIDGET_MODULES, \
            f"widgets from {modules - BUILTIN_WIDGET_MODULES} would load from a CDN"

    requests, remote, failed, errors = [], [], [], []

    def route(r):
        url = r.request.url
        if _is_local(url):
            r.continue_()
        else:
            remote.append(url)
            r.abort()

    page = browser_context.new_page()
    page.route("**/*", route)
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))
    page.on("response", lambda r: failed.append(f"{r.url} (HTTP {r.status})")
            if r.status >= 400 else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(f"{server}/{page_path}", wait_until="load")
        # every plotly div on the page (in the text and in widget Outputs) draws its traces
        figures = []
        if expects_figure:
            page.wait_for_function(
                """() => {
                    const divs = document.querySelectorAll('.plotly-graph-div');
                    return divs.length > 0 && [...divs].every(d =>
                        d.classList.contains('js-plotly-plot') &&
                        d.querySelectorAll('svg.main-svg .scatterlayer path, svg.main-svg .trace path, '
                                           + 'svg.main-svg .heatmaplayer image').length > 0);
                }""", timeout=30_000)
            figures = page.evaluate("""() => [...document.querySelectorAll('.plotly-graph-div')].map(d =>
                ({id: d.id, paths: d.querySelectorAll('svg.main-svg path, svg.main-svg .heatmaplayer image').length,
                  inWidget: !!d.closest('.widget-output, .jupyter-widgets')}))""")
        if n_widget_views:
            page.wait_for_function(
                "() => document.querySelectorAll('.jupyter-widgets.widget-container, "
                ".widget-slider, .widget-button, .widget-dropdown').length > 0", timeout=30_000)
            widgets = page.evaluate("""() => ({
                sliders: document.querySelectorAll('.widget-slider').length,
                buttons: [...document.querySelectorAll('button.jupyter-button')].map(b => b.textContent.trim()),
                dropdowns: document.querySelectorAll('.widget-dropdown select').length,
                outputsWithFigure: document.querySelectorAll('.widget-output .js-plotly-plot').length,
            })""")
        if html.count("mjx-container") or "math notranslate" in html:
            page.wait_for_function("() => window.MathJax && MathJax.startup && "
                                   "document.querySelectorAll('mjx-container').length > 0",
                                   timeout=30_000)
            page.evaluate("() => MathJax.startup.promise")
        page.wait_for_load_state("networkidle")
        SCREENSHOTS.mkdir(exist_ok=True)
        shot = SCREENSHOTS / (page_path.replace("/", "__").removesuffix(".html") + ".png")
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()

    assert not remote, f"requests that left the machine: {remote}"
    assert not failed, f"failed local requests: {failed}"
    errors = [e for e in errors if not any(p.search(e) for p in BENIGN_ERRORS)]
    assert not errors, f"JavaScript errors: {errors}"
    assert requests, "no requests recorded"
    if expects_figure:
        assert figures and all(f["paths"] > 0 for f in figures), figures
    if n_widget_views:
        assert widgets["sliders"] >= 1 or widgets["buttons"] or widgets["dropdowns"], widgets
        if page_path.endswith("01_vi_in_one_page.html"):
            assert widgets["sliders"] == 2 and "optimise" in widgets["buttons"], widgets
            assert widgets["outputsWithFigure"] == 1, widgets
            assert any(f["inWidget"] for f in figures) and any(not f["inWidget"] for f in figures)
    assert shot.stat().st_size > 10_000


def _luminance(css_color: str) -> float:
    r, g, b = (int(v) / 255 for v in re.findall(r"[\d.]+", css_color)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@pytest.mark.slow
def test_figures_are_readable_in_dark_mode(server, browser_context):
    """In the theme's dark mode (the reader's system preference), a figure's background is
    transparent and its text light (book/_static/amortlib.css); screenshot in test-output/."""
    page_path = "notebooks/05_results.html"
    page = browser_context.new_page()
    try:
        page.emulate_media(color_scheme="dark")
        page.goto(f"{server}/{page_path}", wait_until="load")
        page.wait_for_function("() => document.documentElement.dataset.theme === 'dark' && "
                               "document.querySelectorAll('.js-plotly-plot .xtick text').length > 0",
                               timeout=30_000)
        style = page.evaluate("""() => {
            const fig = document.querySelector('.js-plotly-plot');
            const text = fig.querySelector('.xtick text');
            let e = fig, behind = 'rgba(0, 0, 0, 0)';   // the first opaque backdrop of the figure
            while (e && (behind === 'rgba(0, 0, 0, 0)' || behind === 'transparent')) {
                behind = getComputedStyle(e).backgroundColor; e = e.parentElement; }
            return {paper: getComputedStyle(fig.querySelector('.main-svg')).backgroundColor,
                    behind: behind,
                    plot: getComputedStyle(fig.querySelector('.bg')).fill,
                    text: getComputedStyle(text).fill,
                    body: getComputedStyle(document.body).backgroundColor};
        }""")
        SCREENSHOTS.mkdir(exist_ok=True)
        fig = page.locator(".js-plotly-plot").first
        fig.scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOTS / "dark__05_results.png"))
    finally:
        page.close()
    assert _luminance(style["body"]) < 0.2, style          # the page is dark
    assert _luminance(style["behind"]) < 0.2, style        # and so is what the figure sits on
    assert style["paper"] in ("rgba(0, 0, 0, 0)", "transparent"), style
    assert style["plot"] in ("rgba(0, 0, 0, 0)", "transparent", "none"), style
    assert _luminance(style["text"]) > 0.6, style          # light text on the dark page


@pytest.mark.slow
def test_links_between_pages_resolve(built_book):
    """LinkChecker (the workflow's link check) over the built book: every internal link
    resolves; external links are not followed (no network)."""
    assert built_book[0] == 0, "the book did not build"
    exe = Path(sys.executable).with_name("linkchecker")
    proc = subprocess.run([str(exe), "--no-status", "--no-robots", str(HTML / "index.html")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\b0 errors found", proc.stdout), proc.stdout[-2000:]
