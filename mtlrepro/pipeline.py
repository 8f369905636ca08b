"""Run one paper notebook for the DVC pipeline, reproducibly.

``python -m mtlrepro.pipeline run 00_baselines`` reads ``params.yaml`` (the top-level
``profile`` plus the notebook's own section, :func:`mtlrepro.params.load_params`), checks every
parameter against the notebook's ``parameters`` cell, executes ``notebooks/00_baselines.ipynb``
with papermill (kernel ``python3``, working directory = the notebook's folder, as in
JupyterLab) with ``output_dir="results/00_baselines"``, then normalises the executed notebook
(:func:`finalize_notebook`) and renders it to HTML (:func:`render_html`).

Results are all-or-nothing: the notebook runs into a staging folder beside ``results/<name>/``,
which replaces it only when everything is written, so a failed, interrupted or killed run
leaves the previous results as they were (DVC must not delete them first: the stages' outputs
are ``persist: true``).  SIGINT, SIGTERM and SIGHUP, and the death of the parent ``dvc repro``,
stop the kernel too; a second concurrent run of the same notebook is refused.  The executed
notebook carries no timestamps, durations, absolute repository paths or random ids, so a re-run
with the same inputs gives byte-identical files.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nbformat
import papermill
from nbconvert import HTMLExporter
from papermill.exceptions import PapermillExecutionError

from mtlrepro.config import ConfigError, check_profile
from mtlrepro.files import REPO_ROOT, atomic_write_text
from mtlrepro.interrupts import (
    Interrupted,
    RunInProgress,
    child_pids,
    run_lock,
    signal_number,
    signals_deferred,
    signals_raise,
    stop_new_children,
    stop_with_parent,
)
from mtlrepro.params import load_params
from mtlrepro.runs import staging_folder

KERNEL_NAME = "python3"

# Notebook-level papermill metadata that changes on every run (kept: parameters, version, ...).
_VOLATILE_NOTEBOOK_KEYS = (
    "start_time",
    "end_time",
    "duration",
    "input_path",
    "output_path",
    "environment_variables",
)
_VOLATILE_CELL_KEYS = ("start_time", "end_time", "duration")
_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# tqdm's "[elapsed<remaining, rate]" field, e.g. "[00:01<00:00, 8.12it/s]".
_PROGRESS_RE = re.compile(r"\[(\d+:)?\d+:\d\d(<[^,\]]*)?,[^\]]*/[^\]]*\]")
# ipykernel compiles cells to /tmp/ipykernel_<pid>/<hash>.py: the pid changes every run.
_IPYKERNEL_RE = re.compile(r"(/[\w.-]+)*/ipykernel_\d+/")
_ADDRESS_RE = re.compile(r" at 0x[0-9a-fA-F]+")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_VOLATILE_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"tIME"})
_SCALARS = (str, int, float, bool, type(None))
# nbconvert's log, quiet below errors (it warns on every figure that lacks alt text).
_NBCONVERT_LOG = logging.getLogger(f"{__name__}.nbconvert")
_NBCONVERT_LOG.setLevel(logging.ERROR)


class NotebookFailed(RuntimeError):
    """A notebook raised an error while the pipeline executed it."""


# --------------------------------------------------------------------------- parameters


def notebook_parameters(path: str | Path) -> dict[str, str]:
    """The parameters declared in a notebook's ``parameters`` cell: name -> default (source).

    Args:
        path: the notebook file.
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if not any("parameters" in cell.metadata.get("tags", []) for cell in nb.cells):
        raise ConfigError(f"notebook {path} has no cell tagged 'parameters'")
    declared = papermill.inspect_notebook(str(path))
    return {name: info["default"] for name, info in declared.items()}


def check_parameters(
    notebook: str, parameters: Mapping[str, Any], allowed: Mapping[str, Any]
) -> dict[str, Any]:
    """Validate parameters for a notebook: known names, plain values, a valid profile.

    Args:
        notebook: the notebook's name (for messages).
        parameters: name -> value to inject.
        allowed: the notebook's declared parameters (see :func:`notebook_parameters`).
    """
    unknown = sorted(set(parameters) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)} for notebook {notebook}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    for key, value in parameters.items():
        plain = isinstance(value, _SCALARS) or (
            isinstance(value, list) and all(isinstance(v, _SCALARS) for v in value)
        )
        if not plain:
            raise ConfigError(
                f"parameter {key} of notebook {notebook} must be a plain scalar or a list of "
                f"scalars; got {value!r}"
            )
    if "profile" in parameters:
        check_profile(parameters["profile"])
    return dict(parameters)


# --------------------------------------------------------------------------- normalisation


def strip_png_metadata(data: bytes) -> bytes:
    """A PNG without its text and time chunks (e.g. matplotlib's ``Software`` version string).

    Bytes that are not a PNG are returned unchanged.

    Args:
        data: the PNG file content.
    """
    if not data.startswith(_PNG_SIGNATURE):
        return data
    chunks = [_PNG_SIGNATURE]
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 12 + length  # length, type, data, CRC
        if data[pos + 4 : pos + 8] not in _PNG_VOLATILE_CHUNKS:
            chunks.append(data[pos:end])
        pos = end
    return b"".join(chunks)


def _normalise_text(text: str, root: Path) -> str:
    """Replace run-specific strings: the repo root, ipykernel temp paths, object addresses."""
    prefix = re.escape(str(root))
    text = re.sub(prefix + r"/", "", text)
    text = re.sub(prefix + r"(?![\w.-])", ".", text)
    text = _IPYKERNEL_RE.sub("<ipykernel>/", text)
    return _ADDRESS_RE.sub(" at 0x...", text)


def _clean_stream(text: str) -> str:
    """Stream text as a terminal would leave it, minus progress-bar lines."""
    lines = []
    for line in text.split("\n"):
        segments = [s for s in line.split("\r") if s]
        shown = segments[-1] if segments else ""
        if not _PROGRESS_RE.search(shown):
            lines.append(shown)
    return "\n".join(lines)


def _clean_output(output: Any, root: Path) -> Any | None:
    """A normalised copy of one cell output, or ``None`` if nothing stable remains."""
    if output.output_type == "stream":
        text = _normalise_text(_clean_stream(output.text), root)
        if not text.strip():
            return None
        output.text = text
    elif output.output_type in ("display_data", "execute_result"):
        data = output.data
        if _WIDGET_MIME in data:
            return None  # a widget (e.g. a progress bar): its text is a snapshot of its start
        for mime in list(data):
            if mime.startswith("text/") and isinstance(data[mime], str):
                data[mime] = _normalise_text(data[mime], root)
            elif mime == "image/png":
                png = strip_png_metadata(base64.b64decode(data[mime]))
                data[mime] = base64.b64encode(png).decode("ascii")
        if not data:
            return None
    elif output.output_type == "error":
        output.evalue = _normalise_text(output.evalue, root)
        output.traceback = [_normalise_text(line, root) for line in output.traceback]
    return output


def _order_streams(outputs: list[Any]) -> list[Any]:
    """Outputs with every run of consecutive stream outputs merged into one output per stream,
    ``stdout`` first, then ``stderr``.

    The kernel sends the two streams on separate channels, so how a cell's prints and
    warnings interleave varies from run to run; within one stream the order is kept.
    """
    out: list[Any] = []
    run: list[Any] = []
    for output in [*outputs, None]:
        if output is not None and output.output_type == "stream":
            run.append(output)
            continue
        for name in ("stdout", "stderr"):
            parts = [o for o in run if o.name == name]
            if parts:
                parts[0].text = "".join(o.text for o in parts)
                out.append(parts[0])
        run = []
        if output is not None:
            out.append(output)
    return out


def finalize_notebook(path: str | Path, *, root: Path = REPO_ROOT) -> Path:
    """Strip run-specific content from an executed notebook, in place (atomically).

    Removes papermill start/end times, durations and input/output paths, the per-cell
    ``execution`` timestamps and widget state; gives every cell a content-derived id
    (papermill's injected cell gets a random one); drops progress-bar lines from streams;
    makes paths under ``root`` relative, masks ipykernel temp paths and object addresses;
    merges a cell's consecutive stream outputs per stream (stdout, then stderr: their
    interleaving is a race); removes text/time chunks from PNG outputs.  Parameters, papermill
    version and cell status stay, so the notebook still says how it was run.

    Args:
        path: the executed notebook.
        root: the repository root, replaced by relative paths in outputs.
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    run_meta = nb.metadata.get("papermill", {})
    for key in _VOLATILE_NOTEBOOK_KEYS:
        run_meta.pop(key, None)
    nb.metadata.pop("widgets", None)
    nb.nbformat_minor = max(nb.nbformat_minor, 5)
    seen: dict[str, int] = {}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for key in _VOLATILE_CELL_KEYS:
            cell.metadata.get("papermill", {}).pop(key, None)
        digest = hashlib.sha256(f"{cell.cell_type}\n{cell.source}".encode()).hexdigest()[:12]
        seen[digest] = seen.get(digest, 0) + 1
        cell["id"] = digest if seen[digest] == 1 else f"{digest}-{seen[digest]}"
        if cell.cell_type == "code":
            outputs = (_clean_output(o, root) for o in cell.outputs)
            cell.outputs = _order_streams([o for o in outputs if o is not None])
    nbformat.validate(nb)
    return atomic_write_text(path, nbformat.writes(nb).rstrip("\n") + "\n")


def render_html(path: str | Path) -> Path:
    """Render a notebook to ``<same name>.html`` beside it (nbconvert ``lab`` template).

    nbconvert's warning about images without alternative text (the ``lab`` template cannot
    carry one; it inserts a generic ``alt``) is not shown.

    Args:
        path: the (finalised) notebook.
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    exporter = HTMLExporter(template_name="lab", log=_NBCONVERT_LOG)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
    return atomic_write_text(path.with_suffix(".html"), body)


# --------------------------------------------------------------------------- running


def _output_dir_parameter(folder: Path) -> str:
    """``folder`` as the notebook's ``output_dir``: relative to the repo root when inside it."""
    try:
        return folder.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(folder)


def _recover(final: Path) -> None:
    """Finish a swap that a kill interrupted (see :func:`_swap_in`)."""
    backup = final.with_name(f".{final.name}.previous")
    if backup.exists():
        if final.exists():  # killed after the swap, before the old results were removed
            shutil.rmtree(backup)
        else:  # killed between the two renames: the old results come back
            os.rename(backup, final)


def _swap_in(staging: Path, final: Path) -> None:
    """Replace ``final`` by ``staging``: two renames with stop signals held (a SIGKILL in
    between is finished by :func:`_recover` on the next run)."""
    backup = final.with_name(f".{final.name}.previous")
    with signals_deferred():
        if final.exists():
            os.rename(final, backup)
        os.rename(staging, final)
    shutil.rmtree(backup, ignore_errors=True)


def _rename_in_file(path: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in a JSON text file (both as JSON string content)."""
    old_json, new_json = json.dumps(old)[1:-1], json.dumps(new)[1:-1]
    text = path.read_text(encoding="utf-8")
    atomic_write_text(path, text.replace(old_json, new_json))


def run_notebook(
    name: str,
    parameters: Mapping[str, Any],
    results_root: str | Path = "results",
    *,
    notebooks_dir: str | Path = "notebooks",
    kernel_name: str = KERNEL_NAME,
    progress_bar: bool = True,
    start_timeout: int = 60,
) -> Path:
    """Execute ``<notebooks_dir>/<name>.ipynb`` into ``<results_root>/<name>/`` with papermill.

    Writes ``<name>.ipynb`` (finalised) and ``<name>.html`` next to the files the notebook
    writes itself.  All or nothing: the notebook runs into ``.<name>.staging/`` beside the
    results folder (its ``output_dir`` is shown as the final folder in the executed notebook),
    which replaces ``<name>/`` only once everything is written.  A failure raises
    :class:`NotebookFailed` (the executed notebook up to the failing cell is kept as
    ``.<name>.failed.ipynb``); SIGINT, SIGTERM or SIGHUP stop the kernel and raise
    ``KeyboardInterrupt`` / :class:`~mtlrepro.interrupts.Interrupted`; in every case
    ``<name>/`` is left as it was.
    A second run of the same notebook into the same folder while one is running raises
    :class:`~mtlrepro.interrupts.RunInProgress` (a lock on ``.<name>.lock``).

    Args:
        name: notebook name without extension, e.g. ``"00_baselines"``.
        parameters: values for the notebook's parameters (``output_dir`` is set here).
        results_root: the results folder (relative paths: to the working directory).
        notebooks_dir: the folder holding the notebooks.
        kernel_name: Jupyter kernel to execute with.
        progress_bar: show papermill's per-cell progress bar on stderr.
        start_timeout: seconds to wait for the kernel to start.
    """
    notebook = Path(notebooks_dir).resolve() / f"{name}.ipynb"
    if not notebook.is_file():
        available = sorted(p.stem for p in notebook.parent.glob("*.ipynb"))
        raise ConfigError(
            f"notebook {notebook} does not exist; available: {', '.join(available) or 'none'}"
        )
    declared = notebook_parameters(notebook)
    if "output_dir" not in declared:
        raise ConfigError(f"notebook {name} must declare output_dir in its parameters cell")
    if "output_dir" in parameters:
        raise ConfigError("output_dir is set by the pipeline; do not pass it")
    params = check_parameters(name, parameters, declared)
    root = Path(results_root).resolve()
    final = root / name
    staging = staging_folder(final)
    failed_copy = root / f".{name}.failed.ipynb"
    root.mkdir(parents=True, exist_ok=True)
    with run_lock(root / f".{name}.lock", f"notebook {name} into {final}"), signals_raise():
        _recover(final)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        params["output_dir"] = _output_dir_parameter(staging)
        partial = staging / f".{name}.partial.ipynb"
        executed = staging / f"{name}.ipynb"
        before = child_pids()
        try:
            papermill.execute_notebook(
                str(notebook),
                str(partial),
                parameters=params,
                kernel_name=kernel_name,
                progress_bar=progress_bar,
                cwd=str(notebook.parent),
                start_timeout=start_timeout,
                # The kernel's own log (e.g. its TCP-without-encryption warning) is noise here.
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
            _rename_in_file(partial, params["output_dir"], _output_dir_parameter(final))
            finalize_notebook(partial)
            os.replace(partial, executed)
            render_html(executed)
        except PapermillExecutionError as err:
            with signals_deferred():
                if partial.exists():
                    os.replace(partial, failed_copy)
                shutil.rmtree(staging, ignore_errors=True)
            raise NotebookFailed(
                f"notebook {name} failed in cell In [{err.exec_count}] with "
                f"{err.ename}: {err.evalue}{err}"
                f"{final} was not changed; the executed notebook up to the failing cell is "
                f"{failed_copy}"
            ) from err
        except BaseException:  # interrupted by a signal, or a bug of ours: stop the kernel too
            with signals_deferred():
                stop_new_children(before)
                shutil.rmtree(staging, ignore_errors=True)
            raise
        _swap_in(staging, final)
        failed_copy.unlink(missing_ok=True)
    return final


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m mtlrepro.pipeline run NOTEBOOK [options]``.

    Exit status: 0 done, 1 the notebook failed or another run holds the folder, 2 a bad
    parameter, 128 + N stopped by signal N (130 for SIGINT, 143 for SIGTERM).

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(prog="python -m mtlrepro.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute one notebook into RESULTS/NOTEBOOK/")
    run.add_argument("notebook", help="notebook name without .ipynb, e.g. 00_baselines")
    run.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file")
    run.add_argument("--section", default=None,
                     help="params.yaml section (default: notebook name without the NN_ prefix)")
    run.add_argument("--profile", default=None, help="override the profile (smoke, cpu, paper)")
    run.add_argument("--results", type=Path, default=Path("results"), help="results folder")
    run.add_argument("--notebooks", type=Path, default=Path("notebooks"),
                     help="notebooks folder")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    try:
        stop_with_parent()
        parameters = load_params(args.params, args.notebook, section=args.section)
        if args.profile is not None:
            parameters["profile"] = args.profile
        folder = run_notebook(
            args.notebook,
            parameters,
            args.results,
            notebooks_dir=args.notebooks,
            progress_bar=not args.no_progress,
        )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (NotebookFailed, RunInProgress) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (Interrupted, KeyboardInterrupt) as stop:
        signum = signal_number(stop)
        where = Path(args.results) / args.notebook
        print(
            f"error: notebook {args.notebook} {Interrupted(signum)}: its kernel was stopped "
            f"and {where} was left as it was before the run",
            file=sys.stderr,
        )
        return 128 + signum
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
