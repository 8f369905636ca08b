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
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtlrepro.config import ConfigError, check_choice, check_range
from mtlrepro.registry import Registry
from mtlrepro.tasks import TaskSpec


class DataFilesError(FileNotFoundError):
    """A dataset's files are missing or malformed; the message names the file and the fix."""


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


def check_real_dataset_config(
    config: Any, dataset: str, allowed_tasks: tuple[str, ...], *, optional_size: bool = False
) -> None:
    """Validate the fields every real (on-disk) dataset's config shares.

    Checks that ``config.root`` is a non-empty path or ``None``, ``config.height`` and
    ``config.width`` are integers in ``8..4096``, each cap ``config.n_train`` / ``n_val`` /
    ``n_test`` is ``None`` or at least 1, and ``config.tasks`` is a valid subset of
    ``allowed_tasks`` (:func:`check_task_subset`).  Fields of one dataset only are left to
    its config.

    Args:
        config: the config dataclass; its class name starts the messages about ``root`` and size.
        dataset: the dataset's name, used in the messages about tasks.
        allowed_tasks: the tasks the dataset provides.
        optional_size: allow ``height`` and ``width`` to be both ``None`` (native size);
            exactly one of them ``None`` is then an error.
    """
    kind = type(config).__name__
    if config.root is not None and not config.root:
        raise ConfigError(f"{kind}.root must be a folder path or None; got ''")
    if optional_size and (config.height is None) != (config.width is None):
        raise ConfigError(
            f"{kind}.height and width must both be set or both be None; got "
            f"height={config.height!r}, width={config.width!r}"
        )
    if not optional_size or config.height is not None:
        check_range("height", config.height, 8, 4096, integer=True)
        check_range("width", config.width, 8, 4096, integer=True)
    for name in ("n_train", "n_val", "n_test"):
        if getattr(config, name) is not None:
            check_range(name, getattr(config, name), 1, integer=True)
    check_task_subset(dataset, config.tasks, allowed_tasks)


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


class LazyDataset(torch.utils.data.Dataset, ABC):
    """One split of a dataset read from disk sample by sample when requested.

    Same interface as :class:`TensorDataset` (``name``, ``split``, ``task_specs``,
    ``config``, ``len``, ``[i]``, :meth:`batch`, :attr:`image_size`) except that there is no
    ``tensors`` attribute.  Subclasses set the attributes below in ``__init__`` and implement
    ``__len__`` and :meth:`_sample`; a batch is the stack of its samples.

    Attributes:
        name: dataset name (as registered in :data:`DATASETS`).
        split: ``train``, ``val`` or ``test``.
        task_specs: task name -> :class:`~mtlrepro.tasks.TaskSpec`, in the dataset's order.
        config: the dataset's config dataclass, so the dataset describes itself.
    """

    name: str
    split: str
    task_specs: dict[str, TaskSpec]
    config: Any
    _size: tuple[int, int]
    """``(H, W)`` of the returned images."""

    @abstractmethod
    def __len__(self) -> int:
        """The number of samples of the split."""

    @abstractmethod
    def _sample(self, i: int) -> dict[str, Tensor]:
        """Sample ``i`` (``0 <= i < len(self)``) read from disk: ``"image"`` and one target
        per task of :attr:`task_specs`, in the documented dtypes and at :attr:`image_size`.

        Args:
            i: the sample's index.
        """

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        """Sample ``i`` (negative counts from the end): ``"image"`` and one target per task.

        Args:
            i: the sample's index.
        """
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        return self._sample(i % len(self))

    def batch(self, index: Tensor | Sequence[int]) -> dict[str, Tensor]:
        """A stacked batch of the given samples (read from disk now).

        Args:
            index: 1-D int64 tensor (or sequence) of sample indices.
        """
        rows = [int(i) for i in torch.as_tensor(index, dtype=torch.int64).reshape(-1)]
        out_of_range = [i for i in rows if not 0 <= i < len(self)]
        if out_of_range:
            raise IndexError(f"indices {out_of_range} out of range for {len(self)} samples")
        samples = [self._sample(i) for i in rows]
        return {key: torch.stack([s[key] for s in samples]) for key in ("image", *self.task_specs)}

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the returned images."""
        return self._size

    def _repr_args(self) -> list[str]:
        """The arguments shown by ``repr``: split, length and tasks (subclasses add theirs)."""
        return [repr(self.split), f"n={len(self)}", f"tasks=[{', '.join(self.task_specs)}]"]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(self._repr_args())})"
