"""Drills: `dvc repro` of a notebook stage is failed, interrupted and killed at several points;
the committed results stay intact, no kernel is left running, a concurrent second run is
refused, and the next `dvc repro` completes with `dvc status` clean."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest

NAME = "00_tiny"
STAGE_TIMEOUT_S = 120  # a cold DVC + papermill start takes a few seconds; generous for CI
CELLS = [
    "import os, time\n"
    "from mtlrepro import report\n"
    "out = report.resolve_output_dir(output_dir, '00_tiny')\n"
    "(out / 'first.txt').write_text(f'n={n}\\n')\n"
    "with open('../kernel.pid', 'w') as f:\n"  # the kernel's working folder is notebooks/
    "    f.write(str(os.getpid()))\n"
    "time.sleep(pause)\n"
    "assert not fail, 'asked to fail'\n"
    "(out / 'second.txt').write_text(f'n={n}\\n')",
]
DVC_YAML = f"""stages:
  tiny:
    cmd: python -m mtlrepro.pipeline run {NAME} --no-progress
    deps:
      - notebooks/{NAME}.ipynb
    params:
      - profile
      - tiny
    outs:
      - results/{NAME}:
          cache: false
          persist: true
"""

pytestmark = pytest.mark.slow


def _params(n: int, pause: float = 0, fail: bool = False) -> str:
    return f"profile: smoke\ntiny:\n  n: {n}\n  pause: {pause}\n  fail: {str(fail).lower()}\n"


def _env() -> dict[str, str]:
    """The environment `make` gives DVC: the venv's python first on PATH, no analytics; and no
    SHELL, as on CI, so that DVC runs the stage command with `/bin/sh -c` and (with dash) the
    shell stays between DVC and the pipeline."""
    return {
        **{k: v for k, v in os.environ.items() if k != "SHELL"},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=root, env=_env(), capture_output=True, text=True, timeout=STAGE_TIMEOUT_S
    )


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(root, sys.executable, "-m", "dvc", *args)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repository with one notebook stage whose results are committed."""
    root = tmp_path_factory.mktemp("drills")
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = 'cpu'\noutput_dir = None\nn = 1\npause = 0\n"
                                       "fail = False")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(c) for c in CELLS)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    (root / "notebooks").mkdir()
    nbformat.write(nb, root / "notebooks" / f"{NAME}.ipynb")
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "params.yaml").write_text(_params(1))
    (root / ".gitignore").write_text("results/.*\nkernel.pid\n")
    for command in (
        ["git", "init", "-q"],
        [sys.executable, "-m", "dvc", "init", "-q"],
        [sys.executable, "-m", "dvc", "config", "core.analytics", "false"],
    ):
        subprocess.run(command, cwd=root, env=_env(), check=True, capture_output=True)
    done = _dvc(root, "repro")
    assert done.returncode == 0, done.stderr
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "r"],
                   cwd=root, check=True)
    return root


@pytest.fixture
def committed(repo: Path) -> Callable[[], None]:
    """Checks that the committed results are intact and no run or kernel is left; then a
    quick `dvc repro` with new parameters completes and leaves `dvc status` clean."""
    before = _snapshot(repo / "results" / NAME)
    (repo / "kernel.pid").unlink(missing_ok=True)

    def check() -> None:
        assert _snapshot(repo / "results" / NAME) == before
        pid_file = repo / "kernel.pid"
        if pid_file.exists():
            kernel = int(pid_file.read_text())
            deadline = time.monotonic() + 15  # ipykernel polls for its parent once a second
            while psutil.pid_exists(kernel) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not psutil.pid_exists(kernel) or psutil.Process(kernel).status() == "zombie"
        (repo / "params.yaml").write_text(_params(7))
        done = _dvc(repo, "repro")
        assert done.returncode == 0, done.stderr
        assert (repo / "results" / NAME / "second.txt").read_text() == "n=7\n"
        assert "up to date" in _dvc(repo, "status").stdout
        assert not (repo / "results" / f".{NAME}.staging").exists()
        subprocess.run(["git", "checkout", "-q", "--", "."], cwd=repo, check=True)
        subprocess.run(["git", "clean", "-qfdx", "results"], cwd=repo, check=True)

    return check


@pytest.fixture
def start_slow_repro(repo: Path) -> Iterator[Callable[[], tuple[subprocess.Popen[str],
                                                                   psutil.Process]]]:
    """Starts `dvc repro` of a long-pausing run in its own process group; returns it and the
    pipeline process once the kernel has written its first result (into the staging folder).
    Afterwards kills whatever a failed test left running, so one failure does not cascade."""
    started: list[psutil.Process] = []

    def start() -> tuple[subprocess.Popen[str], psutil.Process]:
        (repo / "params.yaml").write_text(_params(2, pause=600))
        dvc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
        started.append(psutil.Process(dvc.pid))
        staged = repo / "results" / f".{NAME}.staging" / "first.txt"
        deadline = time.monotonic() + STAGE_TIMEOUT_S
        while not (staged.exists() and (repo / "kernel.pid").exists()):
            assert dvc.poll() is None, dvc.stdout.read() if dvc.stdout else ""
            assert time.monotonic() < deadline, "the stage did not start"
            time.sleep(0.2)
        family = psutil.Process(dvc.pid).children(recursive=True)
        started.extend(family)
        # the python process itself, not the `sh -c "python -m mtlrepro.pipeline …"` around it
        pipeline = next(p for p in family if "mtlrepro.pipeline" in p.cmdline())
        return dvc, pipeline

    yield start
    for process in started:
        with suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(started, timeout=STAGE_TIMEOUT_S)


def _wait(process: subprocess.Popen[str] | psutil.Process) -> None:
    process.wait(timeout=STAGE_TIMEOUT_S)


def test_failed_stage_keeps_the_committed_results(
    repo: Path, committed: Callable[[], None]
) -> None:
    (repo / "params.yaml").write_text(_params(3, fail=True))
    done = _dvc(repo, "repro")
    assert done.returncode != 0
    assert f"results/{NAME} was not changed" in done.stderr + done.stdout
    committed()


@pytest.mark.parametrize(
    "how",
    ["SIGTERM to dvc", "SIGINT to the group", "SIGTERM to the pipeline", "SIGKILL to the group"],
)
def test_interrupted_stage_keeps_the_committed_results_and_stops_the_kernel(
    repo: Path, committed: Callable[[], None], start_slow_repro: Callable[..., Any], how: str
) -> None:
    dvc, pipeline = start_slow_repro()
    signum = getattr(signal, how.split()[0])
    if how.endswith("to dvc"):
        os.kill(dvc.pid, signum)
    elif how.endswith("to the pipeline"):
        pipeline.send_signal(signum)
    else:
        os.killpg(dvc.pid, signum)
    _wait(dvc)
    _wait(pipeline)  # the pipeline does not outlive dvc, whichever process got the signal
    if signum != signal.SIGKILL:  # it cleaned up after itself
        assert not (repo / "results" / f".{NAME}.staging").exists()
    committed()


def test_second_concurrent_run_is_refused(
    repo: Path, committed: Callable[[], None], start_slow_repro: Callable[..., Any]
) -> None:
    dvc, pipeline = start_slow_repro()
    try:
        second = _run(repo, sys.executable, "-m", "mtlrepro.pipeline", "run", NAME)
        assert second.returncode == 1
        assert f"another run of notebook {NAME} into " in second.stderr
        assert f"(process {pipeline.pid}) is in progress" in second.stderr
    finally:
        os.killpg(dvc.pid, signal.SIGINT)
        _wait(dvc)
    committed()
