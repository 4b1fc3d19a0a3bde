"""The GitHub Actions workflow that publishes the book is valid, and each of its steps calls
things that exist here: a schema check with check-jsonschema (its vendored GitHub-workflow
schema, no network), then a dry run of every ``run:`` script: bash parses it, every ``make``
target it names exists (``make -n``, which prints the commands without running them), every
``.venv/bin`` program and ``python -c`` import it uses is installed by the Makefile's lock."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from amortlib import book

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps():
    for job_name, job in _workflow()["jobs"].items():
        for step in job["steps"]:
            yield job_name, step


def _commands(script: str) -> list[list[str]]:
    """The simple commands of a step's script (continuation lines joined, split at ``&&``,
    ``||``, ``;`` and ``|`` outside quotes)."""
    out = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        cmd: list[str] = []
        for token in lexer:
            if token in ("&&", "||", ";", "|"):
                out.append(cmd) if cmd else None
                cmd = []
            else:
                cmd.append(token)
        if cmd:
            out.append(cmd)
    return out


def test_workflow_validates_against_the_github_workflow_schema():
    exe = str(CHECK_JSONSCHEMA) if CHECK_JSONSCHEMA.exists() else "check-jsonschema"
    proc = subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflow_tests_builds_checks_links_and_deploys():
    wf = _workflow()
    on = wf[True] if True in wf else wf["on"]   # YAML 1.1 reads the key `on` as True
    assert "pull_request" in on and on["push"]["branches"] == ["main"]
    runs = [s.get("run", "") for _, s in _steps()]
    uses = {s["uses"].split("@")[0]: s for _, s in _steps() if "uses" in s}
    assert any("make test" in r for r in runs)
    assert any("make book" in r for r in runs)
    book_step = next(s for _, s in _steps() if "make book" in s.get("run", ""))
    assert book_step["env"]["AMORTLIB_RESULTS"].endswith("/results/published/quick")
    assert any("linkchecker" in r for r in runs)
    html = book.HTML_DIR.relative_to(ROOT).as_posix()
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == html
    assert uses["actions/upload-artifact"]["with"]["path"] == html
    assert "pull_request" in uses["actions/upload-artifact"]["if"]
    deploy = wf["jobs"]["deploy"]
    assert deploy["needs"] == "build" and "refs/heads/main" in deploy["if"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in deploy["steps"])


@pytest.mark.parametrize("job,step", [(j, s) for j, s in _steps() if "run" in s],
                         ids=lambda x: x if isinstance(x, str) else x.get("name", "?")[:40])
def test_each_run_step_dry_runs_here(job, step):
    script = step["run"]
    proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert proc.returncode == 0, f"bash cannot parse the step {step.get('name')!r}: {proc.stderr}"
    for cmd in _commands(script):
        prog = cmd[0]
        if prog == "make":
            targets = [a for a in cmd[1:] if "=" not in a and not a.startswith("-")]
            variables = [a for a in cmd[1:] if "=" in a]
            dry = subprocess.run(["make", "-n", "-C", str(ROOT), *targets, *variables],
                                 capture_output=True, text=True)
            assert dry.returncode == 0, f"`{' '.join(cmd)}`: {dry.stderr.strip()}"
        elif prog.startswith(".venv/bin/"):
            name = prog.removeprefix(".venv/bin/")
            here = Path(sys.executable).with_name(name)
            assert here.exists() or shutil.which(name), f"{name}: not installed by the lock"
            if name == "python" and "-c" in cmd:
                code = cmd[cmd.index("-c") + 1]
                imports = re.findall(r"^\s*(?:from\s+(\S+)\s+import|import\s+(\S+))", code)
                for a, b in imports:
                    __import__(a or b)
            if name == "amortlib":
                assert subprocess.run([str(here), cmd[1], "--help"], capture_output=True).returncode == 0
            if name == "linkchecker":
                assert subprocess.run([str(here), *[a for a in cmd[1:] if a.startswith("-")], "--help"],
                                      capture_output=True).returncode == 0, "unknown linkchecker option"
        elif prog in ("apt-get",):
            assert cmd[1] in ("update", "install")
        else:
            assert shutil.which(prog), f"{prog}: not on this machine"


def test_every_tool_the_workflow_runs_is_declared():
    """The programs the steps take from .venv come from pyproject's extras (so from the lock)."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    declared = {re.split(r"[<>=\[ ]", r, maxsplit=1)[0].lower() for reqs in extras.values() for r in reqs}
    used = {c[0].removeprefix(".venv/bin/") for _, s in _steps() for c in _commands(s.get("run", ""))
            if c[0].startswith(".venv/bin/")}
    assert {"linkchecker"} <= used and used - {"python", "amortlib"} <= declared
