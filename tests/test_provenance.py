"""Papermill users and run records: list parameters from ``-p``, each unit's provenance, and
executed notebooks that name no machine."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import amortlib
from amortlib import provenance, runner
from amortlib.data import data_root
from amortlib.experiment import experiment_config

ROOT = Path(__file__).resolve().parent.parent
PAPERMILL = Path(sys.executable).with_name("papermill")
ABSOLUTE = re.compile(r'"(/(?:work|home|root|tmp|Users|mnt|content|opt)/[^"]*)"')


def test_list_parameters_accept_json_text_and_other_text_says_how():
    cfg, _, _ = experiment_config({"profile": "test", "widths": "[1, 16]", "seeds": "[0]",
                                   "families": '["amortized", "constant"]'})
    assert (cfg.widths, cfg.seeds, cfg.families) == ((1, 16), (0,), ("amortized", "constant"))
    assert experiment_config({"profile": "test", "families": "amortized"})[0].families == ("amortized",)
    for bad in ("1,16", "[1,", '{"k": 1}'):
        with pytest.raises(ValueError, match=r"^widths=.* is invalid: expected a list.*-p widths '\[1, 16\]'.*-y 'widths: \[1, 16\]'"):
            experiment_config({"profile": "test", "widths": bad})


@pytest.mark.slow
def test_papermill_command_line_with_list_parameters(tmp_path):
    out = tmp_path / "out.ipynb"
    cmd = [str(PAPERMILL), str(ROOT / "notebooks" / "04_experiment.ipynb"), str(out), "--no-progress-bar",
           "-p", "widths", "[1, 8]", "-p", "seeds", "[0]", "-p", "epochs", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nb = json.loads(out.read_text())
    text = "".join("".join(o.get("text", "")) + json.dumps(o.get("data", {}))
                   for c in nb["cells"] for o in c.get("outputs", []))
    assert "widths=(1, 8)" in text and "seeds=(0,)" in text and "epochs=3" in text

    bad = subprocess.run(cmd[:-6] + ["-p", "widths", "1,8"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    assert bad.returncode != 0
    assert "widths='1,8' is invalid: expected a list" in bad.stderr + bad.stdout
    assert "-y 'widths: [1, 16]'" in bad.stderr + bad.stdout


def test_neutral_paths():
    assert provenance.neutral_path("/elsewhere/x/results/quick") == "results/quick"
    assert provenance.neutral_path("/elsewhere/x/folder") == "folder"
    assert provenance.neutral_path(ROOT / "results" / "quick") == "results/quick"
    assert provenance.neutral_path("results/quick") == "results/quick"


@pytest.mark.slow
def test_a_sweep_records_its_provenance_and_no_absolute_path(tmp_path):
    units = runner.plan("test", datasets="mnist", epochs=3)
    out = tmp_path / "sweep-out"
    runner.run(units, out, progress=False, log=lambda *a: None)
    unit = units[0][0]
    prov = json.loads((out / "units" / f"{unit}.json").read_text())["info"]["provenance"]

    assert prov["amortlib"] == amortlib.__version__
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert prov["git_commit"] == head.stdout.strip() and isinstance(prov["git_dirty"], bool)
    lines = provenance.dependency_lines()
    assert prov["dependencies"] == len(lines) > 20
    assert prov["dependencies_sha256"] == hashlib.sha256("\n".join(lines).encode()).hexdigest()
    files = {p.relative_to(data_root()).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in (data_root() / "MNIST" / "raw").iterdir()
             if p.is_file() and p.name.endswith("ubyte")}
    assert prov["data_sha256"] == files and len(files) == 4

    executed = out / "runs" / f"{unit}.ipynb"
    text = executed.read_text()
    assert str(tmp_path) not in text and not ABSOLUTE.findall(text), ABSOLUTE.findall(text)[:5]
    nb = json.loads(text)
    assert nb["metadata"]["amortlib"]["provenance"] == prov
    pm = nb["metadata"]["papermill"]
    assert pm["input_path"] == provenance.EXPERIMENT_SOURCE
    assert pm["output_path"] == f"sweep-out/runs/{unit}.ipynb"
    assert pm["parameters"]["output"] == "sweep-out"


PUBLISHED_RUNS = sorted((ROOT / "results" / "published").glob("**/runs/*.ipynb"))


def test_every_published_results_folder_keeps_its_run_notebooks():
    folders = {p.parent for p in (ROOT / "results" / "published").glob("**/units/*.json")}
    assert folders and all(any((f.parent / "runs").glob("*.ipynb")) for f in folders), sorted(folders)


@pytest.mark.parametrize("path", PUBLISHED_RUNS, ids=lambda p: p.relative_to(ROOT / "results" / "published").as_posix())
def test_published_run_notebooks_name_no_machine(path):
    text = path.read_text()
    assert not ABSOLUTE.findall(text), ABSOLUTE.findall(text)[:5]
    pm = json.loads(text)["metadata"]["papermill"]
    assert isinstance(pm["input_path"], str) and len(pm["input_path"]) < 200
    # where it ran, relative to the checkout or the working folder (no machine's absolute path)
    assert not pm["output_path"].startswith(("/", "~")) and pm["output_path"].endswith(f"/runs/{path.name}")
