"""Packaging stays consistent: environment.yml lists what pyproject.toml declares, and the
constraints file pins every declared dependency."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_requirements():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(proj["dependencies"])
    for extra in proj["optional-dependencies"].values():
        reqs += extra
    return reqs


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    env_reqs = {r.replace(" ", "") for r in pip if not r.startswith("-e")}
    py_reqs = {r.replace(" ", "") for r in _pyproject_requirements()}
    assert env_reqs == py_reqs, (f"only in environment.yml: {sorted(env_reqs - py_reqs)}; "
                                 f"only in pyproject.toml: {sorted(py_reqs - env_reqs)}")
    assert any(str(r).startswith("-e") for r in pip), "environment.yml must install amortlib itself"


def test_constraints_pin_every_dependency():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    missing = [_name(r) for r in _pyproject_requirements() if _name(r) not in pins]
    assert not missing, f"constraints.txt does not pin: {missing}"
