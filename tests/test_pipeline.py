"""Tests of mtlrepro.pipeline: parameters, notebook normalisation, and real papermill runs."""

from __future__ import annotations

import base64
import copy
import io
import json
import shutil
from pathlib import Path
from typing import Any

import matplotlib.figure
import nbformat
import pytest

from mtlrepro import pipeline, report
from mtlrepro.config import ConfigError
from mtlrepro.files import REPO_ROOT
from mtlrepro.params import load_params, section_name
from mtlrepro.pipeline import (
    NotebookFailed,
    check_parameters,
    finalize_notebook,
    render_html,
    run_notebook,
    strip_png_metadata,
)

NAME = "00_tiny"
TINY_CELLS = [
    "import warnings\n"
    "from tqdm.auto import tqdm\n"
    "import mtlrepro\n"
    "from mtlrepro import report\n"
    "out = report.resolve_output_dir(output_dir, '00_tiny')\n"
    "for _ in tqdm(range(n), desc='work'):\n"
    "    pass\n"
    "print(mtlrepro.__file__)\n"
    "warnings.warn('a warning')\n"
    "assert not fail, 'asked to fail'\n"
    "report.write_metrics({'n': n, 'profile': profile}, out)\n"
    "object()",
]


def _png_with_software_text() -> bytes:
    """A small matplotlib PNG that carries the default 'Software' text chunk."""
    fig = matplotlib.figure.Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=20)
    return buffer.getvalue()


def _write_notebook(folder: Path, parameters: str, cells: list[str]) -> Path:
    """``<folder>/00_tiny.ipynb``: a title, a cell of ``parameters`` tagged ``parameters``, then
    the code ``cells``, for the ``python3`` kernel."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Tiny notebook"), params]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{NAME}.ipynb"
    nbformat.write(nb, path)
    return path


def _write_tiny_notebook(folder: Path) -> Path:
    """A notebook with a tagged parameters cell that writes metrics into its output_dir."""
    return _write_notebook(
        folder, "profile = 'cpu'\noutput_dir = None\nn = 3\nfail = False", TINY_CELLS
    )


def _fake_executed_notebook(run: int) -> dict[str, Any]:
    """Notebook JSON as papermill leaves it; ``run`` changes only run-specific content."""
    stamp = f"2026-01-0{run}T10:00:00.000000+00:00"
    png = base64.b64encode(_png_with_software_text()).decode()
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "papermill": {
                "parameters": {"profile": "smoke"}, "default_parameters": {}, "version": "2.7.0",
                "exception": None, "start_time": stamp, "end_time": stamp,
                "duration": 1.5 * run, "input_path": f"/home/u{run}/nb.ipynb",
                "output_path": f"/tmp/run{run}/out.ipynb", "environment_variables": {},
            },
        },
        "cells": [
            {
                "cell_type": "code", "id": f"random{run}", "execution_count": 1,
                "metadata": {
                    "tags": ["injected-parameters"],
                    "papermill": {"status": "completed", "exception": False,
                                  "start_time": stamp, "end_time": stamp, "duration": 0.1 * run},
                    "execution": {"iopub.status.busy": stamp, "shell.execute_reply": stamp},
                },
                "source": "profile = 'smoke'",
                "outputs": [
                    {"output_type": "stream", "name": "stderr",
                     "text": f"\rwork:   0%|          | 0/5 [00:00<?, ?it/s]\rwork: 100%|####| 5/5 "
                             f"[00:0{run}<00:00, {run}.5it/s]\n"
                             f"/tmp/ipykernel_{1000 + run}/123.py:7: UserWarning: w\n"},
                    {"output_type": "stream", "name": "stdout",
                     "text": f"{REPO_ROOT}/mtlrepro/__init__.py\n"},
                    {"output_type": "execute_result", "execution_count": 1, "metadata": {},
                     "data": {"text/plain": f"<object object at 0x7f{run}a2b3c4d5>",
                              "image/png": png}},
                ],
            }
        ],
    }


# --------------------------------------------------------------------------- parameters


def test_section_name_strips_the_order_prefix() -> None:
    assert section_name("00_baselines") == "baselines"
    assert section_name("12_dag_search") == "dag_search"
    assert section_name("scratch") == "scratch"


def test_load_params_merges_profile_and_own_section(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("profile: cpu\nbaselines:\n  seed: 1\n  epochs: 2\nother:\n  seed: 9\n")
    assert load_params(path, "00_baselines") == {"profile": "cpu", "seed": 1, "epochs": 2}
    assert load_params(path, "00_baselines", section="other") == {"profile": "cpu", "seed": 9}
    assert load_params(path, "07_absent") == {"profile": "cpu"}
    path.write_text("profile: cpu\nbaselines:\n  output_dir: elsewhere\n")
    with pytest.raises(ConfigError, match="may not set 'output_dir'"):
        load_params(path, "00_baselines")
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "missing.yaml", "00_baselines")


def test_unknown_parameter_is_rejected_with_the_allowed_names() -> None:
    allowed = {"profile": "'cpu'", "output_dir": "None", "n": "3"}
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) bogus for notebook nb; "
                                          r"allowed: n, output_dir, profile"):
        check_parameters("nb", {"n": 1, "bogus": 2}, allowed)
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        check_parameters("nb", {"profile": "huge"}, allowed)
    with pytest.raises(ConfigError, match="plain scalar"):
        check_parameters("nb", {"n": {"nested": 1}}, allowed)


# --------------------------------------------------------------------------- normalisation


def test_strip_png_metadata_removes_text_chunks_only() -> None:
    png = _png_with_software_text()
    stripped = strip_png_metadata(png)
    assert b"Software" in png and b"Software" not in stripped
    assert len(png) - len(stripped) > 20  # the tEXt chunk, nothing else of note
    assert stripped.endswith(png[-12:])  # the IEND chunk survives
    assert strip_png_metadata(b"not a png") == b"not a png"


def test_finalize_removes_timestamps_durations_paths_and_random_ids(tmp_path: Path) -> None:
    paths = []
    for run in (1, 2):
        path = tmp_path / f"run{run}.ipynb"
        path.write_text(json.dumps(_fake_executed_notebook(run)))
        finalize_notebook(path)
        paths.append(path)
    text = paths[0].read_text()
    assert text == paths[1].read_text()  # only run-specific content differed
    for volatile in ("start_time", "end_time", "duration", "input_path", "output_path",
                     "iopub", "random1", "ipykernel_1001", "it/s", "0x7f1", str(REPO_ROOT),
                     "Software"):
        assert volatile not in text, volatile
    nb = json.loads(text)
    assert nb["metadata"]["papermill"] == {"parameters": {"profile": "smoke"},
                                           "default_parameters": {}, "version": "2.7.0",
                                           "exception": None}
    outputs = nb["cells"][0]["outputs"]
    assert "".join(outputs[0]["text"]) == "mtlrepro/__init__.py\n"
    assert "".join(outputs[1]["text"]) == "<ipykernel>/123.py:7: UserWarning: w\n"
    assert nb["cells"][0]["metadata"]["papermill"] == {"status": "completed", "exception": False}


def test_finalize_makes_the_interleaving_of_stdout_and_stderr_irrelevant(tmp_path: Path) -> None:
    def executed(order: list[tuple[str, str]]) -> Path:
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("print('a'); warn('w'); print('b')")
        cell.outputs = [nbformat.v4.new_output("stream", name=n, text=t) for n, t in order]
        cell.outputs.append(nbformat.v4.new_output("display_data", data={"text/plain": "d"}))
        cell.outputs.append(nbformat.v4.new_output("stream", name="stdout", text="c\n"))
        nb.cells = [cell]
        path = tmp_path / f"nb{len(list(tmp_path.iterdir()))}.ipynb"
        nbformat.write(nb, path)
        return finalize_notebook(path)

    first = executed([("stdout", "a\n"), ("stderr", "w\n"), ("stdout", "b\n")])
    second = executed([("stderr", "w\n"), ("stdout", "a\n"), ("stdout", "b\n")])
    assert first.read_text() == second.read_text()
    outputs = json.loads(first.read_text())["cells"][0]["outputs"]
    streams = [(o.get("name"), "".join(o.get("text", ""))) for o in outputs]
    # per stream the order is kept; a display output still separates what came before it
    assert streams == [("stdout", "a\nb\n"), ("stderr", "w\n"), (None, ""), ("stdout", "c\n")]


def test_finalize_drops_widget_outputs_such_as_progress_bars(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("for _ in tqdm(range(3)): pass")
    widget = {"model_id": "abc", "version_major": 2, "version_minor": 0}
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": widget,
            "text/plain": "  0%|          | 0/3 [00:00<?, ?it/s]",
        }),
        nbformat.v4.new_output("display_data", data={"text/plain": "kept"}),
    ]
    nb.cells = [cell]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    outputs = json.loads(finalize_notebook(path).read_text())["cells"][0]["outputs"]
    assert [o["data"] for o in outputs] == [{"text/plain": ["kept"]}]


def test_html_rendering_is_identical_twice(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(_fake_executed_notebook(1)))
    finalize_notebook(path)
    first = render_html(path).read_bytes()
    second = render_html(path).read_bytes()
    assert first == second
    assert b"UserWarning: w" in first
    assert not caplog.records  # no nbconvert warnings on stderr


# --------------------------------------------------------------------------- papermill runs


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the tiny notebook twice: through the command line, then through run_notebook."""
    root = tmp_path_factory.mktemp("pipeline")
    _write_tiny_notebook(root / "notebooks")
    (root / "params.yaml").write_text("profile: smoke\ntiny:\n  n: 4\n")
    folder = root / "results" / NAME
    args = ["run", NAME, "--params", str(root / "params.yaml"), "--notebooks",
            str(root / "notebooks"), "--results", str(root / "results"), "--no-progress"]
    code = pipeline.main(args)
    first = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    run_notebook(NAME, {"profile": "smoke", "n": 4}, root / "results",
                 notebooks_dir=root / "notebooks", progress_bar=False)
    second = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    return {"root": root, "code": code, "first": first, "second": second, "args": args}


@pytest.mark.slow
def test_run_writes_normalised_notebook_html_and_outputs(tiny_runs: dict[str, Any]) -> None:
    assert tiny_runs["code"] == 0
    files = tiny_runs["first"]
    assert sorted(files) == [f"{NAME}.html", f"{NAME}.ipynb", "metrics.json"]
    assert json.loads(files["metrics.json"]) == {
        "cpu_model": report.cpu_model(),
        "n": 4,
        "profile": "smoke",
    }
    text = files[f"{NAME}.ipynb"].decode()
    nb = json.loads(text)
    assert nb["metadata"]["papermill"]["parameters"] == {
        "profile": "smoke", "n": 4, "output_dir": str(tiny_runs["root"] / "results" / NAME)}
    for volatile in ("start_time", "duration", "ipykernel_", "it/s", str(REPO_ROOT)):
        assert volatile not in text, volatile
    assert "mtlrepro/__init__.py" in text
    assert b"Tiny notebook" in files[f"{NAME}.html"]
    # no staging folder, backup or partial notebook left: only the run lock's file
    assert [p.name for p in (tiny_runs["root"] / "results").glob(".*")] == [f".{NAME}.lock"]


@pytest.mark.slow
def test_rerun_gives_byte_identical_results(tiny_runs: dict[str, Any]) -> None:
    assert tiny_runs["second"] == tiny_runs["first"]


@pytest.mark.slow
def test_failed_run_leaves_previous_results_untouched(
    tiny_runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(tiny_runs["root"], tmp_path, dirs_exist_ok=True)
    (tmp_path / "params.yaml").write_text("profile: smoke\ntiny:\n  n: 4\n  fail: true\n")
    args = copy.copy(tiny_runs["args"])
    args[args.index("--params") + 1] = str(tmp_path / "params.yaml")
    args[args.index("--notebooks") + 1] = str(tmp_path / "notebooks")
    args[args.index("--results") + 1] = str(tmp_path / "results")
    assert pipeline.main(args) == 1
    err = capsys.readouterr().err
    assert "notebook 00_tiny failed" in err and "AssertionError: asked to fail" in err
    assert f"{tmp_path / 'results' / NAME} was not changed" in err
    folder = tmp_path / "results" / NAME
    assert {p.name: p.read_bytes() for p in sorted(folder.iterdir())} == tiny_runs["first"]
    # the executed notebook up to the failing cell is kept beside, for the reader
    failed = tmp_path / "results" / f".{NAME}.failed.ipynb"
    assert "asked to fail" in failed.read_text()
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == sorted(
        [NAME, f".{NAME}.failed.ipynb", f".{NAME}.lock"]
    )

    shutil.rmtree(tmp_path / "results")
    with pytest.raises(NotebookFailed, match="asked to fail"):
        run_notebook(NAME, {"fail": True}, tmp_path / "results",
                     notebooks_dir=tmp_path / "notebooks", progress_bar=False)
    assert not (tmp_path / "results" / NAME).exists()  # no half-written result
    assert not (tmp_path / "results" / f".{NAME}.staging").exists()


def test_unknown_parameter_stops_before_running(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _write_tiny_notebook(tmp_path / "notebooks")
    with pytest.raises(ConfigError, match="allowed: fail, n, output_dir, profile"):
        run_notebook(NAME, {"bogus": 1}, tmp_path / "results", notebooks_dir=tmp_path / "notebooks")
    with pytest.raises(ConfigError, match="available: 00_tiny"):
        run_notebook("01_missing", {}, tmp_path / "results", notebooks_dir=tmp_path / "notebooks")
    (tmp_path / "params.yaml").write_text("profile: smoke\n")
    code = pipeline.main(["run", NAME, "--params", str(tmp_path / "params.yaml"), "--profile",
                          "huge", "--notebooks", str(tmp_path / "notebooks"), "--results",
                          str(tmp_path / "results")])
    assert code == 2 and "unknown profile 'huge'" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_notebook_run_by_the_pipeline_finds_its_run_units_beside_the_final_folder(
    tmp_path: Path,
) -> None:
    """The notebook runs in a staging folder, but the units the DVC stages wrote live beside the
    results folder it replaces (``results/runs/<notebook>``), and that is where it looks."""
    cell = (
        "from mtlrepro import report\n"
        "from mtlrepro.runs import runs_dir_for\n"
        f"out = report.resolve_output_dir(output_dir, '{NAME}')\n"
        "(out / 'runs_dir.txt').write_text(str(runs_dir_for(out)))"
    )
    _write_notebook(tmp_path / "notebooks", "output_dir = None", [cell])
    folder = run_notebook(NAME, {}, tmp_path / "results", notebooks_dir=tmp_path / "notebooks",
                          progress_bar=False)
    assert (folder / "runs_dir.txt").read_text() == str(tmp_path / "results" / "runs" / NAME)


@pytest.mark.slow
def test_a_swap_interrupted_by_a_kill_is_finished_by_the_next_run(tmp_path: Path) -> None:
    """Killed between the swap's two renames, the old results sit in ``.<name>.previous``
    and ``<name>`` is missing: the next run, even a failing one, puts them back first."""
    _write_tiny_notebook(tmp_path / "notebooks")
    results = tmp_path / "results"
    backup = results / f".{NAME}.previous"
    backup.mkdir(parents=True)
    (backup / "metrics.json").write_text('{"n": 1}\n')
    with pytest.raises(NotebookFailed, match="was not changed"):
        run_notebook(NAME, {"fail": True}, results, notebooks_dir=tmp_path / "notebooks",
                     progress_bar=False)
    assert (results / NAME / "metrics.json").read_text() == '{"n": 1}\n'
    assert not backup.exists()
