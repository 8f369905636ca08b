"""The DVC pipeline: a stage per notebook with honest dependencies, and a valid dry run."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

from mtlrepro import papers
from mtlrepro.runs import runs_dir_for

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
NOTEBOOK_STAGES = {
    name: stage
    for name, stage in DVC_YAML["stages"].items()
    if "mtlrepro.pipeline run" in stage["cmd"]
}


def _notebook_of(stage: dict) -> str:
    return stage["cmd"].split("mtlrepro.pipeline run ")[1].split()[0]


def test_every_notebook_has_a_stage_and_the_report_reads_every_result():
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert {_notebook_of(s) for s in NOTEBOOK_STAGES.values()} == notebooks
    report_deps = set(DVC_YAML["stages"]["report"]["deps"])
    assert {f"results/{name}" for name in notebooks} <= report_deps


@pytest.mark.parametrize("name", sorted(NOTEBOOK_STAGES))
def test_stage_declares_its_params_outputs_and_notebook(name):
    stage = NOTEBOOK_STAGES[name]
    notebook = _notebook_of(stage)
    assert f"notebooks/{notebook}.ipynb" in stage["deps"]
    assert stage["params"] == ["profile", name] and name in PARAMS
    assert stage["outs"] == [{f"results/{notebook}": {"cache": False, "persist": True}}]


def test_every_output_persists_so_a_failed_stage_keeps_the_committed_results():
    """With ``persist: false`` DVC deletes an output before its stage runs; the pipeline and
    the run units replace their outputs atomically themselves, only once a run is complete."""
    for name, stage in DVC_YAML["stages"].items():
        for out in stage.get("outs", []):
            ((path, options),) = out.items()
            assert options.get("persist") is True, f"{name}: {path}"


@pytest.mark.parametrize("name", sorted(NOTEBOOK_STAGES))
def test_stage_deps_cover_every_mtlrepro_module_the_notebook_imports(name):
    notebook = _notebook_of(NOTEBOOK_STAGES[name])
    source = (ROOT / "notebooks" / f"{notebook}.ipynb").read_text()
    imported = sorted(
        f"{package}.{item.split(' as ')[0].strip()}"
        for package, items in re.findall(r"from (mtlrepro[\w.]*) import ([\w, ]+)", source)
        for item in items.split(",")
    )
    assert imported, "the notebook imports nothing from mtlrepro"
    _assert_deps_cover([*imported, "mtlrepro.pipeline"], NOTEBOOK_STAGES[name]["deps"])


RUN_STAGES = {
    name: stage
    for name, stage in DVC_YAML["stages"].items()
    if stage["cmd"].startswith("python -m mtlrepro.runs ")
}


def _paper_of_run_stage(stage: dict) -> papers.Paper:
    return papers.paper(stage["cmd"].split()[3])


def test_every_paper_with_run_units_has_one_run_stage_per_kind():
    kinds = {(p.name, kind) for p in papers.PAPERS for kind in p.unit_kinds}
    staged = {(stage["cmd"].split()[3], stage["cmd"].split()[4]) for stage in RUN_STAGES.values()}
    assert staged == kinds


def _is_unit_file(dep: str) -> bool:
    return dep.startswith("results/runs/")


@pytest.mark.parametrize("paper", [p.name for p in papers.PAPERS if p.unit_kinds])
def test_run_stages_share_deps_that_cover_every_mtlrepro_module_they_import(paper):
    deps = [
        [d for d in s["deps"] if not _is_unit_file(d)]
        for s in RUN_STAGES.values() if _paper_of_run_stage(s).name == paper
    ]
    assert deps and all(d == deps[0] for d in deps)
    _assert_deps_cover(["mtlrepro.runs", f"mtlrepro.experiments.{paper}.units"], deps[0])


def _template_glob(path: str) -> str:
    return re.sub(r"\$\{[^}]*\}", "*", path)


def test_a_run_stage_that_reads_another_units_file_depends_on_the_stage_that_writes_it():
    """DVC orders stages only by such deps: without one, a unit trains the file it reads
    itself and the stage that owns the file trains it again."""
    for name, stage in RUN_STAGES.items():
        paper = _paper_of_run_stage(stage).name
        writers = {
            _template_glob(path)
            for other_name, other in RUN_STAGES.items()
            if other_name != name and _paper_of_run_stage(other).name == paper
            for out in other["outs"] for path in out
        }
        for dep in filter(_is_unit_file, stage["deps"]):
            assert _template_glob(dep) in writers, f"{name}: no stage writes {dep}"
    assert any(filter(_is_unit_file, RUN_STAGES["partition_search"]["deps"]))
    assert any(filter(_is_unit_file, RUN_STAGES["partition_table2"]["deps"]))


@pytest.mark.parametrize("paper", [p for p in papers.PAPERS if p.unit_kinds], ids=lambda p: p.name)
def test_run_stages_write_exactly_the_units_the_notebook_reads(paper):
    """The matrix stages' outputs are the unit files of the study params.yaml describes (and,
    for units that log their training, each unit's log folder)."""
    module = importlib.import_module(f"{paper.package}.units")
    runs_dir = runs_dir_for(f"results/{paper.notebook}")
    params = {"profile": PARAMS["profile"], **PARAMS[paper.name]}
    expected = {path.as_posix() for path in module.unit_files(params, runs_dir)}
    logged = getattr(module, "UNITS", None)
    if logged is not None and logged.logs:
        config = logged.config_from(params)
        expected |= {logged.log_dir(runs_dir, *unit).as_posix() for unit in logged.units(config)}
    stages = {n for n, s in RUN_STAGES.items() if _paper_of_run_stage(s) == paper}
    # DVC's own reading of the matrices (`dvc stage list` cuts long paths with "…")
    with Repo(str(ROOT)) as repo:
        outs = {
            out.def_path
            for stage in repo.index.stages
            if stage.addressing.split("@")[0] in stages
            for out in stage.outs
        }
    assert outs == expected
    assert runs_dir.as_posix() in DVC_YAML["stages"][paper.name]["deps"]


@pytest.mark.parametrize("paper", papers.PAPERS, ids=lambda p: p.name)
def test_every_registered_paper_has_its_package_notebook_stage_and_section(paper):
    assert (ROOT / "mtlrepro" / "experiments" / paper.name / "__init__.py").is_file()
    assert paper.notebook == f"{paper.notebook[:2]}_{paper.name}"
    assert (ROOT / "notebooks" / f"{paper.notebook}.ipynb").is_file()
    assert _notebook_of(NOTEBOOK_STAGES[paper.name]) == paper.notebook
    assert paper.name in PARAMS


def test_the_registry_lists_every_notebook():
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert {p.notebook for p in papers.PAPERS} == notebooks


def _assert_deps_cover(modules: list[str], deps: list[str]) -> None:
    """Every mtlrepro file loaded by importing ``modules`` is a dep."""
    probe = (
        "import sys, importlib\n"
        f"for m in {modules!r}:\n"
        "    try: importlib.import_module(m)\n"
        "    except ModuleNotFoundError: importlib.import_module(m.rpartition('.')[0])\n"
        "print('\\n'.join(sorted(m.__file__ for n, m in sys.modules.items()"
        " if n.startswith('mtlrepro') and getattr(m, '__file__', None))))"
    )
    files = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    for file in files:
        relative = Path(file).relative_to(ROOT).as_posix()
        assert any(relative == d or relative.startswith(d + "/") for d in deps), relative


@pytest.mark.slow
def test_dvc_repro_dry_run_succeeds():
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = Path(sys.executable).with_name("dvc")
    run = subprocess.run(
        [str(dvc), "repro", "--dry"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]


@pytest.mark.slow
def test_committed_results_are_up_to_date_with_the_code():
    """A second `dvc repro` would do nothing: every stage's recorded hashes match the tree."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = Path(sys.executable).with_name("dvc")
    run = subprocess.run(
        [str(dvc), "status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0 and "up to date" in run.stdout, run.stdout[-2000:]


def test_every_logged_baseline_network_is_a_dvc_metric_and_plot():
    """`dvc metrics show` / `dvc plots show` cover every multi-task network the baselines' units
    log, for every seed."""
    from mtlrepro.experiments.baselines import study, units

    config = study.baselines_config(PARAMS["profile"], **PARAMS["baselines"])
    runs_dir = runs_dir_for("results/00_baselines")
    logged = [f"shared-{b}" for b in config.balancers] + list(config.architectures)
    folders = [units.UNITS.log_dir(runs_dir, "networks", seed).as_posix() for seed in config.seeds]
    assert len(folders) == 3
    metrics = {f"{folder}/{n}/metrics.json" for folder in folders for n in logged}
    assert metrics <= set(DVC_YAML["metrics"])
    plots = {next(iter(p)) for p in DVC_YAML["plots"]}
    assert {f"{folder}/{n}/plots/metrics" for folder in folders for n in logged} <= plots
