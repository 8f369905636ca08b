"""The run-unit machinery every paper uses: unit files, re-use, the pool, the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mtlrepro import papers, runs
from mtlrepro.config import ConfigError


def _square(x: int, offset: int) -> tuple[int, int]:
    return x * x + offset, os.getpid()


def test_runs_dir_is_beside_the_results_folder_even_from_its_staging_folder(tmp_path) -> None:
    final = tmp_path / "results" / "02_group_sparsity"
    assert runs.runs_dir_for(final) == tmp_path / "results" / "runs" / "02_group_sparsity"
    staging = runs.staging_folder(final)
    assert staging == tmp_path / "results" / ".02_group_sparsity.staging"
    assert runs.runs_dir_for(staging) == runs.runs_dir_for(final)


def test_a_unit_file_describes_itself_and_is_read_back_only_with_its_settings(tmp_path) -> None:
    path = tmp_path / "kind" / "unit.json"
    settings = {"seed": 0, "profile": "smoke"}
    runs.write_unit(path, settings, [{"accuracy": 1.5}])
    stored = json.loads(path.read_text())
    assert stored["settings"] == settings and stored["runs"] == [{"accuracy": 1.5}]
    made_with = stored["made_with"]
    assert {"python", "torch", "numpy", "commit", "code_modified", "cpu"} <= set(made_with)
    assert made_with["torch"].split("+")[0] == __import__("torch").__version__.split("+")[0]
    assert runs.read_unit(path, settings) == [{"accuracy": 1.5}]
    assert runs.read_unit(path, {**settings, "seed": 1}) is None  # stale
    assert runs.read_unit(tmp_path / "missing.json", settings) is None
    path.write_text('{"settings": ')  # a torn file is as good as none
    assert runs.read_unit(path, settings) is None


def test_load_or_train_trains_only_what_is_missing_or_stale(tmp_path) -> None:
    calls: list[int] = []

    def train(value: int):
        def run() -> list[dict[str, int]]:
            calls.append(value)
            return [{"value": value}]
        return run

    path = tmp_path / "unit.json"
    assert runs.load_or_train(path, {"a": 1}, train(1)) == [{"value": 1}]
    assert runs.load_or_train(path, {"a": 1}, train(2)) == [{"value": 1}]  # read back
    assert runs.load_or_train(path, {"a": 2}, train(3)) == [{"value": 3}]  # stale: trained
    assert runs.load_or_train(path, {"a": 2}, train(4), retrain=True) == [{"value": 4}]
    assert calls == [1, 3, 4]


def test_a_failed_training_leaves_the_unit_file_as_it_was(tmp_path) -> None:
    path = tmp_path / "unit.json"
    runs.write_unit(path, {"a": 1}, [{"value": 1}])
    before = path.read_bytes()

    def fail() -> list[dict[str, int]]:
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        runs.load_or_train(path, {"a": 2}, fail)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["unit.json"]


@pytest.mark.parametrize("workers", [1, 2])
def test_map_jobs_keeps_the_order_of_the_jobs_in_any_number_of_processes(workers) -> None:
    jobs = [(x, 10) for x in range(5)]
    results = runs.map_jobs(_square, jobs, workers=workers, progress=False)
    assert [value for value, _ in results] == [x * x + 10 for x in range(5)]
    pids = {pid for _, pid in results}
    assert (pids == {os.getpid()}) == (workers == 1)


def test_every_paper_with_units_provides_the_units_protocol() -> None:
    import importlib

    with_units = [p for p in papers.PAPERS if p.unit_kinds]
    assert sorted(p.name for p in with_units) == runs.papers_with_units()
    for paper in with_units:
        module = importlib.import_module(f"{paper.package}.units")
        for name in ("run_cli_unit", "unit_files", "UNIT_VALUES"):
            assert hasattr(module, name), f"{paper.package}.units lacks {name}"
        # the command line finds the notebook and section here, not in the registry
        assert (module.NOTEBOOK, module.SECTION) == (paper.notebook, paper.name)


def test_no_stage_code_reads_the_registry() -> None:
    """Adding a paper to the registry must not re-run the other papers' stages."""
    import subprocess
    import sys

    probe = (
        "import sys, mtlrepro.runs, mtlrepro.pipeline, mtlrepro.experiments.group_sparsity.units;"
        "print('mtlrepro.papers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_registry_names_each_paper_once_and_refuses_unknown_names() -> None:
    names = [p.name for p in papers.PAPERS]
    assert len(names) == len(set(names))
    assert papers.paper("group_sparsity").notebook == "02_group_sparsity"
    with pytest.raises(ConfigError, match="unknown paper 'nope'; allowed: 'baselines'"):
        papers.paper("nope")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope", "table"], "unknown paper with run units 'nope'; allowed: 'baselines', 'dag'"),
        (["dag", "nyu"], "a dag unit takes SEED; got []"),
        (["dag", "nyu", "x"], "argument seed: a seed is an integer >= 0; got 'x'"),
        (["dag", "city", "-1"], "seed must be an integer in [0, inf); got -1"),
        (["baselines", "table"], "unknown baselines unit kind 'table'; allowed: 'networks'"),
        (["distinctiveness", "table"], "unknown paper with run units 'distinctiveness'"),
        (["group_sparsity", "grid"], "unknown group_sparsity unit kind 'grid'; allowed: 'table'"),
        (["group_sparsity", "table", "scenes"], "a group_sparsity unit takes DATASET LAMBDA SEED"),
    ],
)
def test_the_command_line_refuses_bad_units_with_exit_status_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("profile: smoke\n")
    code = runs.main([*argv, "--params", str(params), "--runs", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "runs").exists()
