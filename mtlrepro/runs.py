"""Independent run units, for every paper: files, re-use, a process pool and one command line.

A *unit* is one independent piece of a study (paper B: a kind, dataset, λ and seed) whose
training runs are saved as one self-describing JSON file,
``{"settings": {...}, "made_with": {...}, "runs": [...]}``:

* ``settings`` is everything the unit's numbers depend on (its parameters, the profile, the
  study settings it uses), so a file made with other settings is *stale*;
* ``made_with`` says what made it (:func:`provenance`: package versions, the commit of the
  code and whether ``mtlrepro/`` had uncommitted changes, the CPU), for the reader: it does not
  decide staleness (DVC re-runs a unit when its code changes);
* :func:`load_or_train` reads a unit's file when it exists and matches, else trains the unit
  and writes the file atomically (a failed or interrupted unit leaves the previous file);
* :func:`map_jobs` trains a unit's jobs (e.g. task combinations) in an optional process pool;
* :func:`runs_dir_for` puts units beside the notebook's results folder
  (``results/runs/<notebook>/``), outside it, so DVC matrix stages own them.

``python -m mtlrepro.runs <paper> <kind> <values>...`` trains one unit with ``params.yaml``'s
settings, always (DVC runs a stage because its code changed, which the settings do not record).
It finds the unit in the paper's module ``mtlrepro.experiments.<paper>.units`` (by name: it
does not read the registry :mod:`mtlrepro.papers`), which provides ``NOTEBOOK`` (the notebook's
name, ``NN_<paper>``), ``UNIT_KINDS``,
``run_cli_unit(kind, values, params, runs_dir, progress) -> Path`` (train, write and return the
unit's file; ``ConfigError`` on a bad value), ``UNIT_VALUES`` (the values' names) and
``unit_files(params, runs_dir) -> list[Path]`` (every unit file of the study ``params.yaml``
describes, which the DVC matrix stages must produce).  Exit status: 0 done, 2 a bad parameter,
128 + N stopped by signal N; SIGINT, SIGTERM, SIGHUP or the death of the parent ``dvc repro``
stop the unit and its worker processes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm.std import tqdm

from mtlrepro.config import ConfigError, check_choice
from mtlrepro.files import REPO_ROOT, atomic_write_text, cpu_model
from mtlrepro.interrupts import (
    Interrupted,
    child_pids,
    interruptible,
    signal_number,
    stop_new_children,
    stop_with_parent,
)
from mtlrepro.params import load_params

EXPERIMENTS_DIR = Path(__file__).resolve().parent / "experiments"
"""The experiment packages, ``mtlrepro/experiments/<paper>/``."""
_STAGING_NAME = re.compile(r"\.(?P<name>.+)\.staging")
_VERSIONED = ("mtlrepro", "torch", "torchvision", "numpy")
"""Distributions whose versions a unit file records."""


def staging_folder(final: Path) -> Path:
    """The folder a notebook run writes into before it replaces ``final``:
    ``<parent>/.<name>.staging`` (see :func:`mtlrepro.pipeline.run_notebook`)."""
    return final.parent / f".{final.name}.staging"


def runs_dir_for(output_dir: str | Path) -> Path:
    """Where a notebook's run units live: ``<output_dir>/../runs/<output folder name>``.

    For ``results/02_group_sparsity`` this is ``results/runs/02_group_sparsity``.  A notebook
    the pipeline runs writes into :func:`staging_folder`, which replaces the final folder at
    the end: the runs folder is that of the folder it replaces.

    Args:
        output_dir: the notebook's output folder.
    """
    output_dir = Path(output_dir)
    staged = _STAGING_NAME.fullmatch(output_dir.name)
    name = staged["name"] if staged else output_dir.name
    return output_dir.parent / "runs" / name


def read_unit(path: Path, settings: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The runs of a unit file if it exists and was made with ``settings``, else ``None``."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    if stored.get("settings") != dict(settings):
        return None
    return stored["runs"]


def write_unit(path: Path, settings: Mapping[str, Any], runs: Sequence[Any]) -> Path:
    """Write a unit file atomically (folders created as needed); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    unit = {"settings": dict(settings), "made_with": provenance(), "runs": list(runs)}
    return atomic_write_text(path, json.dumps(unit, indent=1) + "\n")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def provenance() -> dict[str, Any]:
    """What a result was made with: python and package versions, the code's commit (``None``
    outside a git checkout) and whether ``mtlrepro/`` differed from it, and the CPU model
    (torch's CPU kernels, hence the last digits, differ between CPU kinds)."""
    modified = _git("status", "--porcelain", "--", "mtlrepro")
    return {
        "python": platform.python_version(),
        **{name: _version(name) for name in _VERSIONED},
        "commit": _git("rev-parse", "HEAD"),
        "code_modified": None if modified is None else bool(modified),
        "cpu": cpu_model(),
    }


def load_or_train(
    path: Path,
    settings: Mapping[str, Any],
    train: Callable[[], list[dict[str, Any]]],
    *,
    retrain: bool = False,
) -> list[dict[str, Any]]:
    """A unit's runs: read from ``path`` when it matches ``settings``, else ``train()``-ed and
    written there.

    Args:
        path: the unit's file.
        settings: everything its numbers depend on.
        train: trains the unit, returning one JSON-able record per run.
        retrain: train and write even if a matching file exists.
    """
    runs = None if retrain else read_unit(path, settings)
    if runs is None:
        runs = train()
        write_unit(path, settings, runs)
    return runs


@contextmanager
def process_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """``workers`` worker processes, or ``None`` (work in this process) for one.

    Forked where the platform allows it (as torch's DataLoader workers are: a spawned worker
    would spend seconds importing torch again), spawned elsewhere.  Stopped by a signal, the
    workers are stopped too.
    """
    if workers <= 1:
        yield None
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    before = child_pids()
    pool = ProcessPoolExecutor(workers, mp_context=context)
    try:
        yield pool
    except BaseException:  # e.g. stopped by a signal: the workers must not train on
        stop_new_children(before)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def map_jobs(
    function: Callable[..., Any],
    jobs: Sequence[Sequence[Any]],
    *,
    workers: int = 1,
    desc: str = "",
    progress: bool = True,
) -> list[Any]:
    """``[function(*job) for job in jobs]``, in ``min(workers, len(jobs))`` processes, in order.

    Each job must carry its own seed, so that results do not depend on the process that
    computes them.

    Args:
        function: a picklable module-level function.
        jobs: its positional arguments, one sequence per call.
        workers: processes to use (1: this process).
        desc: the progress bar's label.
        progress: show a progress bar (one step per job).
    """
    results = []
    bar = tqdm(total=len(jobs), desc=desc, unit="run", disable=not progress)
    with bar, process_pool(min(workers, len(jobs))) as pool:
        mapper = pool.map if pool is not None else map
        for result in mapper(function, *zip(*jobs, strict=True)):
            results.append(result)
            bar.update()
    return results


# --------------------------------------------------------------------------------------------
# Command line (the DVC matrix stages)
# --------------------------------------------------------------------------------------------
def papers_with_units() -> list[str]:
    """The experiment packages that have run units (a ``units.py``), sorted by name."""
    return sorted(path.parent.name for path in EXPERIMENTS_DIR.glob("*/units.py"))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mtlrepro.runs PAPER KIND VALUE...``: train one run unit (see the module doc).

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
    """
    names = papers_with_units()
    parser = argparse.ArgumentParser(prog="python -m mtlrepro.runs", description=main.__doc__)
    # a value such as -1e-2 is a value (rejected by the paper with its params.yaml name), not an
    # unknown option: argparse's pattern of negative numbers lacks exponents before Python 3.14
    parser._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$", re.I)
    parser.add_argument("paper", help=f"paper with run units: {', '.join(names)}")
    parser.add_argument("kind", help="unit kind (see the paper's units module)")
    parser.add_argument("values", nargs="*", help="the unit's values, e.g. DATASET LAMBDA SEED")
    parser.add_argument("--params", type=Path, default=REPO_ROOT / "params.yaml")
    parser.add_argument("--runs", type=Path, default=None,
                        help="runs folder (default: results/runs/<notebook>)")
    args = parser.parse_args(argv)
    unit = " ".join([args.paper, args.kind, *args.values])
    try:
        stop_with_parent()
        name = check_choice("paper with run units", args.paper, names)
        module = importlib.import_module(f"mtlrepro.experiments.{name}.units")
        check_choice(f"{name} unit kind", args.kind, module.UNIT_KINDS)
        params = load_params(args.params, module.NOTEBOOK, section=name)
        runs_dir = args.runs or runs_dir_for(REPO_ROOT / "results" / module.NOTEBOOK)
        progress = bool(params.pop("progress", True))
        with interruptible():
            path = module.run_cli_unit(args.kind, args.values, params, runs_dir, progress)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as stop:
        print(
            f"error: unit {unit} {Interrupted(signal_number(stop))}: its file was left as it "
            "was before the run",
            file=sys.stderr,
        )
        return 128 + signal_number(stop)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
