"""Low-level file helpers shared by every module that writes results: atomic writes, the
repository root and the CPU model (kept apart from :mod:`mtlrepro.report` so that training
units do not depend on how reports are built)."""

from __future__ import annotations

import os
import platform
import re
import tempfile
from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
"""The repository root: the parent of the ``mtlrepro`` package folder."""

# Permissions for new files (mkstemp would give 0600): read/write per the process umask.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


FILE_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""A plain file or folder name: letters, digits and ``_.-``, no ``/``, not starting with a
dot (result file stems, notebook names)."""


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, then rename.

    The parent folder is created if needed.  Readers see either the old or the new content,
    never a partial file; on error the temporary file is removed.

    Args:
        path: destination file.
        data: the complete new content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line endings kept as given) to ``path`` atomically.

    Args:
        path: destination file.
        text: the complete new content.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def cpu_model() -> str:
    """The CPU model: ``model name`` of ``/proc/cpuinfo`` on Linux (what ``lscpu`` prints as
    "Model name"), else :func:`platform.processor` or the machine type.  Torch's CPU kernels,
    hence the last digits and the timings, differ between CPU kinds."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
