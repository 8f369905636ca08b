"""Stopping long runs cleanly: signals as exceptions, the parent's death, child processes,
and a lock against a second concurrent run.

Used by the notebook pipeline (:mod:`mtlrepro.pipeline`) and the run-unit command lines, so
that SIGINT, SIGTERM and SIGHUP, or the death of the ``dvc repro`` that started them, stop the
whole run (kernel and worker processes included) and run its clean-up, instead of leaving
orphans that write results behind a stale ``dvc.lock``.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)
"""Signals that :func:`signals_raise` turns into :class:`Interrupted` (SIGINT already raises
``KeyboardInterrupt``)."""
_HELD_SIGNALS = (*STOP_SIGNALS, signal.SIGINT)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Interrupted(BaseException):
    """The run was stopped by a signal.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` on the
    way (papermill, nbclient, a training loop) swallows it.
    """

    def __init__(self, signum: int) -> None:
        """Args:
        signum: the signal received.
        """
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class RunInProgress(RuntimeError):
    """Another process holds the lock of the same run (see :func:`run_lock`)."""


def signal_number(stop: BaseException) -> int:
    """The signal behind an :class:`Interrupted` or a ``KeyboardInterrupt`` (SIGINT).

    Args:
        stop: the exception.
    """
    return stop.signum if isinstance(stop, Interrupted) else int(signal.SIGINT)


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """While the body runs, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread,
    so ``finally`` and ``except`` clauses run; outside the main thread, a no-op.  A signal
    ignored on entry (SIGHUP under ``nohup``) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in STOP_SIGNALS
                if signal.getsignal(signum) != signal.SIG_IGN}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGTERM, SIGHUP and SIGINT until the body (a clean-up, a swap) has finished."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def child_pids() -> set[int]:
    """The process ids of this process's children, grandchildren, …"""
    return {p.pid for p in psutil.Process().children(recursive=True)}


def stop_new_children(before: set[int], timeout: float = 10.0) -> None:
    """Terminate, then kill after ``timeout`` seconds, the descendants started since
    ``before`` (:func:`child_pids`) was taken: a notebook's kernel, a process pool's workers.

    Args:
        before: descendants to leave alone.
        timeout: seconds to wait after SIGTERM, and again after SIGKILL.
    """
    children = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    for child in children:
        with suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        with suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(alive, timeout=timeout)


@contextmanager
def interruptible() -> Iterator[None]:
    """Signals raise (:func:`signals_raise`); when the body is stopped by one, the child
    processes it started are stopped too before the exception goes on."""
    before = child_pids()
    with signals_raise():
        try:
            yield
        except (Interrupted, KeyboardInterrupt):
            with signals_deferred():
                stop_new_children(before)
            raise


SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "mksh", "fish"})
"""Shell process names.  ``dvc repro`` runs a stage's command with ``$SHELL -c``, or
``/bin/sh -c`` when ``SHELL`` is unset, and dash (Debian's ``/bin/sh``) stays alive as the
command's parent instead of replacing itself with it: :func:`launcher` looks through such
``-c`` wrappers."""


def _is_command_wrapper(process: psutil.Process) -> bool:
    """A shell running one command line (``sh -c ...``), not an interactive shell."""
    return process.name() in SHELLS and "-c" in process.cmdline()[1:]


def launcher() -> psutil.Process | None:
    """The process that launched this one, looking through ``sh -c`` wrappers (e.g. the
    ``dvc repro`` above a stage's ``/bin/sh -c``), or ``None`` when there is none."""
    ancestor = psutil.Process().parent()
    while ancestor is not None and _is_command_wrapper(ancestor):
        ancestor = ancestor.parent()
    return ancestor


def _terminate_self_when_gone(process: psutil.Process) -> None:
    with suppress(psutil.Error):
        process.wait()
    os.kill(os.getpid(), signal.SIGTERM)


def stop_with_parent() -> None:
    """Receive SIGTERM when the process that launched this one dies (e.g. ``dvc repro`` killed
    by SIGTERM or SIGKILL), whether it is the parent or ``sh -c`` wrappers stand between them.
    Call it first thing in a command-line entry point.

    Linux sends the signal on the parent's death (``PR_SET_PDEATHSIG``); when the launcher is
    further up (:func:`launcher`), a daemon thread also waits for it.  A no-op outside Linux,
    and for a run started from an interactive shell under ``nohup`` (SIGHUP ignored): the user
    asked it to outlive its terminal.  A program launching it (``dvc repro``) is always
    watched, even when ``nohup`` was applied further up (its ignored SIGHUP is inherited).

    Raises:
        Interrupted: the parent had already died.
    """
    if not sys.platform.startswith("linux"):
        return
    starter = launcher()
    nohup = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    if nohup and (starter is None or starter.name() in SHELLS):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        raise Interrupted(signal.SIGTERM)
    if starter is not None and starter.pid != parent:
        threading.Thread(target=_terminate_self_when_gone, args=(starter,), daemon=True,
                         name="stop-with-launcher").start()


@contextmanager
def run_lock(lock_path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (holding this process's id) while the body
    runs.  The operating system releases it when the process dies, however it dies.

    Args:
        lock_path: the lock file (created if missing, left in place afterwards).
        what: the run, for the message (e.g. ``"notebook 00_baselines into results/…"``).

    Raises:
        RunInProgress: another process holds the lock.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunInProgress(
            f"another run of {what} (process {holder}) is in progress; wait for it to finish, "
            "or stop it, and run again"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
