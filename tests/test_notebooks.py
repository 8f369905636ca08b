"""Every notebook is thin, committed clean, and runs at the smoke profile through papermill."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from mtlrepro import pipeline, report

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    for cell in _code_cells(path):
        assert not cell.get("outputs") and cell.get("execution_count") is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_code_cell_is_a_parameters_cell_of_plain_scalars(path):
    first = _code_cells(path)[0]
    assert "parameters" in first["metadata"].get("tags", [])
    tree = ast.parse("".join(first["source"]))
    for node in tree.body:
        assert isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
    names = {node.targets[0].id for node in tree.body}
    assert {"profile", "output_dir", "threads", "progress"} <= names
    defaults = {n.targets[0].id: n.value.value for n in tree.body}
    # run with its defaults (JupyterLab, tests) a notebook writes to the scratch folder
    assert defaults["output_dir"] is None
    assert report.resolve_output_dir(None, path.stem).relative_to(ROOT).parts[0] == ".scratch"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_defines_no_functions_or_classes(path):
    for cell in _code_cells(path):
        for node in ast.walk(ast.parse("".join(cell["source"]))):
            assert not isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Lambda)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_the_smoke_profile(path, tmp_path):
    # one torch thread: tiny smoke models on two threads stall whenever another process runs
    parameters = {"profile": "smoke", "progress": False, "threads": 1}
    folder = pipeline.run_notebook(path.stem, parameters, tmp_path, progress_bar=False)
    produced = {p.name for p in folder.iterdir()}
    assert {f"{path.stem}.ipynb", f"{path.stem}.html", "claims.csv", "metrics.json"} <= produced
    assert any(name.endswith(".png") for name in produced)
    assert any(name.startswith("table") and name.endswith(".md") for name in produced)
    claims = report.read_claims(folder / "claims.csv")
    assert claims and all(c.profile == "smoke" for c in claims)
