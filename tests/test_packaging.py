"""Packaging stays consistent: the locks pin what pyproject.toml declares, for the Pythons it
declares; environment.yml and the Binder configuration install the same set; the wheel ships
the book's files."""
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
REQ = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
TORCH_STACK = re.compile(r"^(torch|torchvision|triton|nvidia-[\w.-]+|cuda-[\w.-]+)$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject_requirements(extras=None):
    reqs = list(PROJECT["dependencies"])
    for name, extra in PROJECT["optional-dependencies"].items():
        if extras is None or name in extras:
            reqs += extra
    return reqs


def _pins(path: Path) -> dict[str, list[tuple[str, str, bool]]]:
    """name -> [(version, marker, hashed)] of a requirements file (a name may be split by
    Python version in a universal lock)."""
    pins: dict = {}
    text = path.read_text()
    for m in re.finditer(r"(?m)^([A-Za-z0-9][\w.-]*)==([^\s;\\]+)(?: ; ([^\\\n]+))?(.*(?:\n {4}--hash[^\n]*)*)", text):
        pins.setdefault(_norm(m.group(1)), []).append(
            (m.group(2), (m.group(3) or "").strip(), "--hash=sha256:" in m.group(4)))
    return pins


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    env_reqs = {r.replace(" ", "") for r in pip if not r.startswith("-e")}
    py_reqs = {r.replace(" ", "") for r in _pyproject_requirements()}
    assert env_reqs == py_reqs, (f"only in environment.yml: {sorted(env_reqs - py_reqs)}; "
                                 f"only in pyproject.toml: {sorted(py_reqs - env_reqs)}")
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert SpecifierSet(PROJECT["requires-python"]).contains(python.split("=", 1)[1] + ".0")


@pytest.mark.parametrize("lock,extras", [("book.lock", ["book"]), ("test.lock", ["book", "test", "browser"])])
def test_locks_pin_every_declared_dependency_with_hashes(lock, extras):
    pins = _pins(REQ / lock)
    torch = _pins(REQ / "torch.txt")
    assert pins and all(h for entries in pins.values() for *_, h in entries), f"{lock}: an entry without hashes"
    assert not [n for n in pins if TORCH_STACK.match(n)], f"{lock} holds torch-stack packages (torch.txt's)"
    assert not [n for entries in torch.values() for *_, h in entries if h], "torch.txt is pinned by version only"
    for req in map(Requirement, _pyproject_requirements(extras)):
        entries = pins.get(_norm(req.name)) or torch.get(_norm(req.name))
        assert entries, f"{lock} does not pin {req.name}"
        for version, _marker, _ in entries:
            assert req.specifier.contains(version, prereleases=True), \
                f"{lock}: {req.name}=={version} does not satisfy pyproject's {req}"


def test_the_two_locks_agree_on_every_version():
    book, test = _pins(REQ / "book.lock"), _pins(REQ / "test.lock")
    assert set(book) <= set(test)
    assert {n: sorted(v for v, *_ in book[n]) for n in book} == \
           {n: sorted(v for v, *_ in test[n]) for n in book}


def test_declared_pythons_are_those_the_lock_is_resolved_for():
    """requires-python, the classifiers, the lock's oldest Python and the README agree (the
    Makefile is tested on the oldest and newest of them)."""
    sys.path.insert(0, str(REQ))
    try:
        import make_lock as lock_compile
    finally:
        sys.path.pop(0)
    oldest = lock_compile.OLDEST_PYTHON
    assert PROJECT["requires-python"] == f">={oldest}"
    declared = [c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"]
                if re.match(r"Programming Language :: Python :: 3\.\d+$", c)]
    assert declared[0] == oldest and sys.version_info[:2] >= (3, 11)
    readme = (ROOT / "README.md").read_text()
    assert f"Python {declared[0]} to {declared[-1]}" in readme
    numpy = _pins(REQ / "book.lock")["numpy"]
    assert any("3.12" in marker for _, marker, _ in numpy) or len(numpy) == 1


def test_playwright_only_in_the_browser_extra():
    extras = PROJECT["optional-dependencies"]
    where = [name for name, reqs in extras.items() if any(_norm(Requirement(r).name) == "playwright" for r in reqs)]
    assert where == ["browser"]
    assert not any(_norm(Requirement(r).name) == "playwright" for r in PROJECT["dependencies"])
    assert "playwright" not in _pins(REQ / "book.lock")
    assert "playwright" in _pins(REQ / "test.lock")


def test_binder_installs_the_same_set_with_cpu_torch_and_no_editable_install():
    env = yaml.safe_load((ROOT / ".binder" / "environment.yml").read_text())
    deps = env["dependencies"]
    assert not any(isinstance(d, dict) for d in deps), "Binder's environment.yml installs no pip packages " \
        "(postBuild does, once the repository is there)"
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    assert SpecifierSet(PROJECT["requires-python"]).contains(python.split("=", 1)[1] + ".0")
    post = (ROOT / ".binder" / "postBuild").read_text()
    assert (ROOT / ".binder" / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"
    commands = [ln.strip() for ln in post.replace("\\\n", " ").splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
    assert not [c for c in commands if re.search(r"(^|\s)(-e|--editable)\s", c)]
    assert any("--require-hashes -r requirements/book.lock" in c for c in commands)
    assert any("--index-url https://download.pytorch.org/whl/cpu" in c and "requirements/torch.txt" in c
               for c in commands)
    assert any(re.search(r"pip install .*--no-deps \.$", c) for c in commands)
    # the same dependency set as pyproject's (the lock is made from it)
    book = _pins(REQ / "book.lock") | _pins(REQ / "torch.txt")
    missing = [r for r in _pyproject_requirements(["book"]) if _norm(Requirement(r).name) not in book]
    assert not missing


def test_the_package_list_is_every_package_on_disk():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "amortlib").rglob("__init__.py")}
    assert on_disk <= listed, f"add to pyproject's packages: {sorted(on_disk - listed)}"


@pytest.mark.slow
def test_the_wheel_ships_the_chapters_the_published_results_and_the_book(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    str(ROOT), "-w", str(tmp_path)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("amortlib-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", "_config.yml", "_toc.yml", "book", "notebooks",
                              "results/published"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout: cannot list the tracked book files")
    missing = [f for f in tracked if f"amortlib/_book/{f}" not in names]
    assert not missing, missing
