"""Stopping runs: the launcher's death reaches a run through a shell, nohup is respected, signals
become exceptions and a second run is refused."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import psutil
import pytest

from mtlrepro.interrupts import (
    Interrupted,
    RunInProgress,
    run_lock,
    signals_raise,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux signals")

# A run that reports when it is ready and which signal stopped it.
RUN = """
import os, signal, sys, time
from pathlib import Path
from mtlrepro.interrupts import Interrupted, signals_raise, stop_with_parent
folder = Path(sys.argv[1])
if sys.argv[2] == "nohup":
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
stop_with_parent()
try:
    with signals_raise():
        (folder / "ready").write_text(str(os.getpid()))
        time.sleep(60)
except Interrupted as stop:
    (folder / "stopped").write_text(signal.Signals(stop.signum).name)
"""
# The launcher (a stand-in for `dvc repro`) starts the run through `sh -c`; the trailing `:`
# keeps the shell alive as the run's parent, as dash does for every `dvc repro` stage command.
LAUNCHER = """
import subprocess, sys, time
subprocess.Popen(["/bin/sh", "-c", f'"{sys.executable}" -c "$0" "$1" "$2"; :', *sys.argv[1:]])
time.sleep(60)
"""


def _wait_for(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return path.exists()


def _start_behind_a_shell(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[bytes], int]:
    starter = subprocess.Popen([sys.executable, "-c", LAUNCHER, RUN, str(tmp_path), mode])
    assert _wait_for(tmp_path / "ready", 30), "the run did not start"
    return starter, int((tmp_path / "ready").read_text())


def test_launcher_looks_through_shells() -> None:
    code = "from mtlrepro.interrupts import launcher; print(launcher().pid)"
    shown = subprocess.run(["/bin/sh", "-c", f'"{sys.executable}" -c "{code}"; :'],
                           capture_output=True, text=True, check=True)
    assert int(shown.stdout) == os.getpid()


@pytest.mark.parametrize("mode", ["watch", "nohup"])
def test_killed_launcher_stops_the_run_behind_a_shell(tmp_path: Path, mode: str) -> None:
    """`dvc repro` killed: its stage stops, also when the whole run was started under nohup
    (the stage inherits the ignored SIGHUP, but its launcher is a program, not a terminal)."""
    starter, run = _start_behind_a_shell(tmp_path, mode)
    starter.kill()
    starter.wait()
    assert _wait_for(tmp_path / "stopped", 10), "the run outlived its launcher"
    assert (tmp_path / "stopped").read_text() == "SIGTERM"
    psutil.wait_procs([psutil.Process(run)] if psutil.pid_exists(run) else [], timeout=10)


@pytest.mark.parametrize("mode", ["watch", "nohup"])
def test_a_run_from_an_interactive_shell_outlives_it_only_under_nohup(
    tmp_path: Path, mode: str
) -> None:
    # the terminal's shell starts with SIGHUP at its default even when this suite runs under
    # nohup (an inherited SIG_IGN would make the "watch" run look like a nohup run)
    shell = subprocess.Popen(["/bin/bash", "--norc", "-i"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    assert shell.stdin is not None
    shell.stdin.write(
        f"{shlex.quote(sys.executable)} -c {shlex.quote(RUN)} {shlex.quote(str(tmp_path))} "
        f"{mode}\n".encode()
    )
    shell.stdin.flush()
    assert _wait_for(tmp_path / "ready", 30), "the run did not start"
    run = int((tmp_path / "ready").read_text())
    shell.kill()
    shell.wait()
    try:
        if mode == "nohup":
            time.sleep(3)
            assert psutil.pid_exists(run) and not (tmp_path / "stopped").exists()
        else:
            # generous: on a loaded machine (the whole suite) the watcher's poll can lag
            assert _wait_for(tmp_path / "stopped", 30), "the run outlived its terminal"
    finally:
        with suppress(ProcessLookupError):
            os.kill(run, signal.SIGTERM)
    assert _wait_for(tmp_path / "stopped", 10)


def test_signals_raise_turns_sigterm_into_interrupted_and_keeps_an_ignored_sighup() -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with pytest.raises(Interrupted) as stop, signals_raise():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert stop.value.signum == signal.SIGTERM
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_run_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    lock = tmp_path / ".run.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from mtlrepro.interrupts import run_lock\n"
         "with run_lock(Path(sys.argv[1]), 'x'):\n    print('held', flush=True); time.sleep(60)",
         str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(RunInProgress, match=f"another run of x \\(process {holder.pid}\\)"):
            with run_lock(lock, "x"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(lock, "x"):  # released when its holder died
        pass
