"""Shared fixtures: every test starts seeded and on one torch thread."""

from __future__ import annotations

import importlib.util
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

DATA_SCRIPTS = Path(__file__).resolve().parents[1] / "data_scripts"


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Seed torch's global generator before every test."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """One torch thread (restored afterwards): the tests use tiny models, and with two
    intra-op threads another busy process on a two-core machine slows tiny ops down a
    hundredfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def hand_weight() -> torch.Tensor:
    """A (C_out=2, C_in=3, 1, 2) float64 conv weight, |g| = 4, whose input-channel groups have
    norms 2, 1 and 4 (channel order; 3 of its 12 weights are zero)."""
    w = torch.zeros(2, 3, 1, 2, dtype=torch.float64)
    w[:, 0] = 1.0  # four ones: norm 2
    w[:, 1] = 0.5  # four halves: norm 1
    w[0, 2, 0, 0] = 4.0  # norm 4
    return w


@pytest.fixture
def load_data_script(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """Import ``data_scripts/<name>.py`` as a module, with ``data_scripts`` on the path as when
    it runs as a script (a script must do nothing on import)."""

    def load(name: str) -> ModuleType:
        monkeypatch.syspath_prepend(str(DATA_SCRIPTS))
        spec = importlib.util.spec_from_file_location(name, DATA_SCRIPTS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def zip_folder() -> Callable[[Path, Path, str], Path]:
    """``zip_folder(folder, archive, prefix)``: zip every file under ``folder`` into
    ``archive`` below the folder ``prefix``; returns ``archive``."""

    def make(folder: Path, archive: Path, prefix: str) -> Path:
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                zf.write(path, f"{prefix}/{path.relative_to(folder)}")
        return archive

    return make
