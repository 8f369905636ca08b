"""The in-memory dataset every data module returns, and the dataset registry.

A :class:`TensorDataset` holds one split of a dataset as whole tensors (``image`` plus one
target per task).  Tensors may be *stored* in compact dtypes (``uint8`` images, ``int8``/``int16``
labels, ``uint8`` binary maps); :meth:`TensorDataset.__getitem__` and
:meth:`TensorDataset.batch` always return the documented dtypes:

* ``image`` -- float32 ``(3, H, W)`` in ``[0, 1]`` (``uint8`` storage is divided by 255);
* ``segmentation`` / ``classification`` targets -- int64 (``-1`` = ignore);
* ``depth`` / ``normal`` / ``binary`` targets -- float32.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtlrepro.config import ConfigError, check_choice, check_range
from mtlrepro.registry import Registry
from mtlrepro.tasks import TaskSpec

DATA_DIR_ENV = "MTLREPRO_DATA_DIR"
"""Environment variable naming the folder that holds one sub-folder per real dataset."""


def dataset_root(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """A real dataset's folder: ``root`` if given, else ``$MTLREPRO_DATA_DIR/<name>``, else
    ``<repo root>/data/<name>``.

    Args:
        name: the dataset's folder name, e.g. ``"nyuv2"``.
        root: an explicit folder, or ``None`` for the default.
    """
    if root is not None:
        return Path(root)
    env = os.environ.get(DATA_DIR_ENV)
    base = Path(env) if env else Path(__file__).resolve().parents[2] / "data"
    return base / name


def check_task_subset(dataset: str, tasks: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    """Validate a dataset's ``tasks`` override: a non-empty subset of ``allowed``, no repeats.

    Args:
        dataset: the dataset's name, used in the messages.
        tasks: the requested tasks.
        allowed: the tasks the dataset provides.
    """
    check_range("number of tasks", len(tasks), 1, len(allowed), integer=True)
    for task in tasks:
        check_choice(f"{dataset} task", task, allowed)
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"tasks repeat a task: {tasks!r}; allowed: {allowed}")


DATASETS: Registry = Registry("dataset")
SPLITS: tuple[str, ...] = ("train", "val", "test")

_INTEGER_KINDS = ("segmentation", "classification")


def convert_stored(value: Tensor, kind: str | None) -> Tensor:
    """Cast a stored tensor to the dtype documented for its kind (``None`` = the image)."""
    if kind is None:
        if value.dtype == torch.uint8:
            return value.to(torch.float32).div_(255.0)
        return value.to(torch.float32)
    if kind in _INTEGER_KINDS:
        return value.to(torch.int64)
    return value.to(torch.float32)


class TensorDataset(torch.utils.data.Dataset):
    """One split of a dataset held as whole tensors.

    Attributes:
        name: dataset name (as registered in :data:`DATASETS`).
        split: ``train``, ``val`` or ``test``.
        tensors: ``"image"`` ``(N, 3, H, W)`` and one tensor per task, first dimension ``N``
            (possibly in a compact storage dtype, see the module docstring).
        task_specs: task name -> :class:`~mtlrepro.tasks.TaskSpec`, in the dataset's order.
        config: the dataset's config dataclass, so the dataset describes itself.
    """

    def __init__(
        self,
        name: str,
        split: str,
        tensors: Mapping[str, Tensor],
        task_specs: Mapping[str, TaskSpec],
        config: Any,
    ) -> None:
        """Args:
        name: dataset name.
        split: split name.
        tensors: ``"image"`` plus one tensor per task in ``task_specs``.
        task_specs: task name -> spec; every task needs a tensor of the same length.
        config: the config dataclass the split was built from.
        """
        if "image" not in tensors:
            raise ValueError(f"dataset {name!r}: tensors need an 'image' entry")
        missing = [t for t in task_specs if t not in tensors]
        if missing:
            raise ValueError(f"dataset {name!r}: no tensor for task(s) {missing}")
        n = len(tensors["image"])
        lengths = {k: len(tensors[k]) for k in ("image", *task_specs)}
        if any(length != n for length in lengths.values()):
            raise ValueError(f"dataset {name!r}: tensor lengths differ: {lengths}")
        self.name = name
        self.split = split
        self.task_specs: dict[str, TaskSpec] = dict(task_specs)
        self.tensors: dict[str, Tensor] = {k: tensors[k] for k in ("image", *task_specs)}
        self.config = config
        self._kinds: dict[str, str | None] = {"image": None}
        self._kinds.update({t: spec.kind for t, spec in self.task_specs.items()})

    def __len__(self) -> int:
        return len(self.tensors["image"])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        """Sample ``i``: ``"image"`` and one target per task, in the documented dtypes."""
        return {k: convert_stored(v[i], self._kinds[k]) for k, v in self.tensors.items()}

    def batch(self, index: Tensor | Sequence[int]) -> dict[str, Tensor]:
        """A stacked batch by tensor indexing (the training loop's fast path).

        Args:
            index: 1-D int64 tensor (or sequence) of sample indices.
        """
        index = torch.as_tensor(index, dtype=torch.int64)
        return {
            k: convert_stored(v.index_select(0, index), self._kinds[k])
            for k, v in self.tensors.items()
        }

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images."""
        height, width = self.tensors["image"].shape[-2:]
        return int(height), int(width)

    def __repr__(self) -> str:
        tasks = ", ".join(self.task_specs)
        return f"TensorDataset({self.name!r}, {self.split!r}, n={len(self)}, tasks=[{tasks}])"
