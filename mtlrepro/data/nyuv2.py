"""``nyuv2``: the real NYU-v2 in the MTAN preprocessed layout (13 classes, depth, normals).

On-disk layout (as released with MTAN, Liu et al. 2019; one ``.npy`` file per image and field,
indices contiguous from 0)::

    <root>/train/{image,label,depth,normal}/{0..794}.npy   # 795 images
    <root>/val/{image,label,depth,normal}/{0..653}.npy     # 654 images (the test set)

* ``image`` -- ``(288, 384, 3)`` RGB in ``[0, 1]`` (``uint8`` files: ``0..255``, scaled by
  1/255), channels last;
* ``label`` -- ``(288, 384)`` class ids ``0..12`` (:data:`NYUV2_CLASSES`), ``-1`` = ignore;
* ``depth`` -- ``(288, 384, 1)`` (``(288, 384)`` is accepted too) in metres ``>= 0``,
  ``0`` = invalid;
* ``normal`` -- ``(288, 384, 3)`` unit vectors (length within :data:`NORMAL_TOLERANCE` of 1),
  all-zero = invalid.

Files may hold any integer or real dtype (the release uses float64; ``bool`` is refused, as a
bool label file is a mask rather than class ids); samples are returned channels first
in the documented dtypes of :mod:`mtlrepro.data.base`: ``image`` float32 ``(3, H, W)``,
``segmentation`` int64 ``(H, W)``, ``depth`` float32 ``(1, H, W)``, ``normal`` float32
``(3, H, W)``.

**Splits.**  The MTAN layout has no separate validation split: ``train`` reads ``train/``, and
both ``val`` and ``test`` read ``val/`` (the official 654-image NYU-v2 test set), which is
where MTAN-style papers report their numbers.  Model selection on ``val`` is therefore
selection on the test images, as in those papers; hold out part of ``train`` if that matters.

**Root.**  ``$MTLREPRO_DATA_DIR/nyuv2`` if that variable is set, else ``<repo root>/data/nyuv2``
(repo root = the parent of the ``mtlrepro`` package directory); the ``root`` config field
overrides both.  ``python data_scripts/prepare_nyuv2.py`` downloads and places the data.

**Loading.**  Files are read lazily, per sample, when a sample or batch is requested; only the
file headers are read when a split is opened, so that a missing folder, a missing file,
mismatched counts or a wrong shape or dtype stops at once with one :class:`DataFilesError`
naming the file and the fix; values out of the ranges above (or not finite) raise the same
error when the file is read.  Nothing is cached in memory.

**Size.**  ``height`` / ``width`` (both or neither) resize every sample when it is loaded:
the image bilinearly with antialiasing, labels, depth and normals with nearest-neighbour
sampling (``nearest-exact``), so that no class, depth or normal is ever mixed with an ignored
or invalid pixel and normals stay unit vectors.  Depth values are unchanged by a resize (the
scene is not zoomed).  No augmentation is applied here (MTAN-style training scales by
``{1.0, 1.2, 1.5}`` dividing depth by the scale, and flips negating normal x).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mtlrepro.config import ConfigError, build_config, check_choice
from mtlrepro.data.base import (
    DATA_DIR_ENV,
    DATASETS,
    SPLITS,
    DataFilesError,
    LazyDataset,
    check_real_dataset_config,
    convert_stored,
    dataset_root,
)
from mtlrepro.tasks import TaskSpec

# The 13-class NYU-v2 mapping of Couprie et al. (2013); MTAN's labels are its ids minus one
# (``void`` -> -1).
# fmt: off
NYUV2_CLASSES: tuple[str, ...] = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
    "picture", "sofa", "table", "tv", "wall", "window",
)
# fmt: on
NYUV2_TASKS: tuple[str, ...] = ("segmentation", "depth", "normal")
NYUV2_COUNTS: dict[str, int] = {"train": 795, "val": 654}
"""Images per folder of the released data."""
SPLIT_FOLDERS: dict[str, str] = {"train": "train", "val": "val", "test": "val"}
"""Folder each split reads: the layout's ``val/`` is the test set and serves both."""
TASK_FOLDERS: dict[str, str] = {"segmentation": "label", "depth": "depth", "normal": "normal"}
"""Sub-folder holding each task's targets (the image is in ``image/``)."""
PREPARE_COMMAND = "python data_scripts/prepare_nyuv2.py"
NORMAL_TOLERANCE = 1e-3
"""Largest ``|‖n‖ - 1|`` of a valid (non-zero) stored normal."""
DEPTH_NOTE = "depth is in metres, 0 = invalid"
"""What NYU-v2's depth values are (said in the error about a negative depth)."""


@dataclasses.dataclass(frozen=True)
class NYUv2Config:
    """Parameters of the ``nyuv2`` dataset (validated on creation).

    Attributes:
        root: folder holding ``train/`` and ``val/``; ``None`` = ``$MTLREPRO_DATA_DIR/nyuv2``
            or ``<repo root>/data/nyuv2`` (the built dataset's config holds the resolved path).
        height: resize every sample to this height (with ``width``); ``None`` = native 288.
        width: resize every sample to this width (with ``height``); ``None`` = native 384.
        n_train: use only the first ``n_train`` training images (``None`` = all 795).
        n_val: use only the first ``n_val`` images of the ``val`` split (``None`` = all).
        n_test: use only the first ``n_test`` images of the ``test`` split (``None`` = all).
        tasks: the tasks to publish, a subset of :data:`NYUV2_TASKS`.
    """

    root: str | None = None
    height: int | None = None
    width: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    tasks: tuple[str, ...] = NYUV2_TASKS

    def __post_init__(self) -> None:
        check_real_dataset_config(self, "nyuv2", NYUV2_TASKS, optional_size=True)


NYUV2_PRESETS: dict[str, dict[str, object]] = {
    # seconds: a few quarter-resolution images (needs the real data like every profile)
    "smoke": {"height": 72, "width": 96, "n_train": 16, "n_val": 8, "n_test": 8},
    # all images at half resolution, for a CPU
    "cpu": {"height": 144, "width": 192},
    # the papers' setting: all images at the native 288x384
    "paper": {},
}
"""Per-profile :class:`NYUv2Config` overrides; every profile reads the same files."""


def nyuv2_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The NYU-v2 folder: ``root`` if given, else ``$MTLREPRO_DATA_DIR/nyuv2``, else
    ``<repo root>/data/nyuv2``.

    Args:
        root: an explicit folder, or ``None`` for the default.
    """
    return dataset_root("nyuv2", root)


def nyuv2_task_specs(tasks: Sequence[str] = NYUV2_TASKS) -> dict[str, TaskSpec]:
    """Task specs of the chosen NYU-v2 tasks, in the given order.

    Args:
        tasks: names from :data:`NYUV2_TASKS`.
    """
    all_specs = {
        "segmentation": TaskSpec("segmentation", "segmentation", len(NYUV2_CLASSES)),
        "depth": TaskSpec("depth", "depth"),
        "normal": TaskSpec("normal", "normal"),
    }
    return {task: all_specs[task] for task in tasks}


def _expected_shape(kind: str | None, height: int, width: int) -> tuple[tuple[int, ...], ...]:
    """Allowed channels-last shapes of one file of the given kind (``None`` = image)."""
    if kind == "segmentation":
        return ((height, width),)
    if kind == "depth":
        return ((height, width, 1), (height, width))
    return ((height, width, 3),)


def _to_channels_first(array: np.ndarray, kind: str | None) -> Tensor:
    """A channels-last array as a channels-first tensor: ``(H, W, C)`` becomes ``(C, H, W)``,
    labels stay ``(H, W)`` and a depth map ``(H, W)`` becomes ``(1, H, W)``.

    Args:
        array: one file's array.
        kind: the field's task kind (``None`` = the image).
    """
    tensor = torch.from_numpy(array)
    if tensor.ndim == 3:
        return tensor.permute(2, 0, 1)
    return tensor.unsqueeze(0) if kind == "depth" else tensor


def _read_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file, reading only its header (memory map).

    Args:
        path: the file.
    """
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    return array.shape, array.dtype


def _range_problem(array: np.ndarray, kind: str | None, depth_note: str = DEPTH_NOTE) -> str | None:
    """What lies outside the documented range in one finite file of the given kind (``None`` =
    image), or ``None``: image values outside ``[0, 1]`` (``uint8`` is scaled, so never),
    negative depths, valid normals that are not unit vectors.

    Args:
        array: the file's array, channels last.
        kind: the field's task kind.
        depth_note: what depth values are, said after a negative depth.
    """
    if kind is None and array.dtype != np.uint8:
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            return (
                f"image values in [{low:g}, {high:g}], outside [0, 1] (images are RGB in [0, 1], "
                "or uint8 0..255)"
            )
    elif kind == "depth" and array.min() < 0:
        return f"negative depths (down to {float(array.min()):g}; {depth_note})"
    elif kind == "normal":
        squared = np.einsum("...c,...c->...", array, array)  # squared lengths, no sqrt
        low, high = (1 - NORMAL_TOLERANCE) ** 2, (1 + NORMAL_TOLERANCE) ** 2
        bad = ((squared < low) & (squared > 0)) | (squared > high)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            return (
                f"{np.count_nonzero(bad)} normals that are not unit vectors (length "
                f"{float(np.sqrt(squared[row, col])):.4g} at row {row}, column {col}; allowed: "
                f"1 ± {NORMAL_TOLERANCE:g}, or all-zero = invalid)"
            )
    return None


class NpyFolderDataset(LazyDataset):
    """One split stored as one channels-last ``.npy`` file per sample and field, read lazily.

    A :class:`~mtlrepro.data.base.LazyDataset`: nothing is held in memory.  Conversion to the
    documented dtypes is the one of :mod:`mtlrepro.data.base`.

    ``folder/image/{i}.npy`` holds image ``i``; ``folder/<subfolder>/{i}.npy`` its target of
    each task (``subfolders`` maps task -> sub-folder).  Opening the split checks every file's
    header (count, names, shape, numeric dtype) and raises :class:`DataFilesError` naming the
    first bad file or folder and ``fix``.
    """

    def __init__(
        self,
        name: str,
        split: str,
        folder: Path,
        subfolders: Mapping[str, str],
        task_specs: Mapping[str, TaskSpec],
        config: Any,
        fix: str,
        size: tuple[int, int] | None = None,
        limit: int | None = None,
        depth_note: str = DEPTH_NOTE,
    ) -> None:
        """Args:
        name: dataset name (as registered).
        split: ``train``, ``val`` or ``test``.
        folder: the split's folder (holding ``image/`` and the tasks' sub-folders) inside the
            dataset's root folder.
        subfolders: task name -> sub-folder of ``folder`` with its targets.
        task_specs: task name -> spec, in the dataset's order (keys of ``subfolders``).
        config: the config dataclass the split was built from.
        fix: what to do about bad files, appended to every error message.
        size: ``(H, W)`` to resize samples to, or ``None`` for the files' size.
        limit: use only the first ``limit`` samples (``None`` = all); more than the folder
            holds is a :class:`~mtlrepro.config.ConfigError`.
        depth_note: what the depth values are, said in the error about a negative depth
            (another dataset's depth may be disparity rather than metres).
        """
        self.name = name
        self.split = split
        self.task_specs: dict[str, TaskSpec] = dict(task_specs)
        self.config = config
        self.folder = Path(folder)
        self._fix = fix
        self._depth_note = depth_note
        self._kinds: dict[str, str | None] = {"image": None}
        self._kinds.update({t: spec.kind for t, spec in self.task_specs.items()})
        self._dirs = {"image": self.folder / "image"}
        self._dirs.update({t: self.folder / subfolders[t] for t in self.task_specs})
        count = self._check_folders()
        if limit is not None:
            if limit > count:
                raise ConfigError(
                    f"{name} {split}: asked for the first {limit} images but {self._dirs['image']}"
                    f" holds {count}"
                )
            count = limit
        self._count = count
        native = self._check_headers()
        self._size = size if size is not None else native

    # ------------------------------------------------------------------ validation
    def _error(self, problem: str) -> DataFilesError:
        """The one error raised for bad files: the problem, then the fix."""
        return DataFilesError(f"{self.name}: {problem}; {self._fix}")

    def _check_folders(self) -> int:
        """Check that the folders exist and hold ``0.npy .. {n-1}.npy`` each; return ``n``."""
        for path in (self.folder.parent, self.folder, *self._dirs.values()):
            if not path.is_dir():
                raise self._error(f"folder {path} does not exist")
        counts = {
            key: sum(1 for p in path.iterdir() if p.suffix == ".npy")
            for key, path in self._dirs.items()
        }
        count = counts["image"]
        if count == 0:
            raise self._error(f"folder {self._dirs['image']} holds no .npy files")
        for key, n in counts.items():
            if n != count:
                raise self._error(
                    f"folder {self._dirs[key]} holds {n} .npy files but "
                    f"{self._dirs['image']} holds {count}"
                )
        for path in self._dirs.values():
            for i in range(count):
                if not (path / f"{i}.npy").is_file():
                    raise self._error(
                        f"file {path / f'{i}.npy'} is missing (files must be numbered "
                        f"0.npy to {count - 1}.npy)"
                    )
        return count

    def _header(self, key: str, i: int) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of one file, or :class:`DataFilesError` if it is unreadable."""
        path = self._path(key, i)
        try:
            return _read_header(path)
        except (OSError, ValueError, EOFError) as exc:
            raise self._error(f"file {path} is not a readable .npy file ({exc})") from exc

    def _check_headers(self) -> tuple[int, int]:
        """Check the shape and dtype of every used file from its header; return the image
        size ``(H, W)`` (that of image 0, which every file must match)."""
        first, _ = self._header("image", 0)
        if len(first) != 3 or first[2] != 3:
            raise self._error(
                f"file {self._path('image', 0)} has shape {first}, expected (H, W, 3)"
            )
        native = (int(first[0]), int(first[1]))
        for i in range(self._count):
            for key, kind in self._kinds.items():
                shape, dtype = self._header(key, i)
                allowed = _expected_shape(kind, *native)
                if shape not in allowed:
                    expected = " or ".join(str(s) for s in allowed)
                    raise self._error(
                        f"file {self._path(key, i)} has shape {shape}, expected {expected} "
                        f"(the size of {self._path('image', 0)})"
                    )
                if dtype.kind not in "fiu":
                    holding = ""
                    if kind == "segmentation":
                        holding = f" holding class ids -1..{self.task_specs[key].num_classes - 1}"
                    raise self._error(
                        f"file {self._path(key, i)} has dtype {dtype}, expected a number type"
                        f"{holding}"
                    )
        return native

    # ------------------------------------------------------------------ loading
    def _path(self, key: str, i: int) -> Path:
        """The file of field ``key`` (``image`` or a task) of sample ``i``."""
        return self._dirs[key] / f"{i}.npy"

    def _load(self, key: str, i: int) -> Tensor:
        """Field ``key`` of sample ``i`` at the files' size, channels first, documented dtype;
        checks that values are finite and in range (:func:`_range_problem`) and class ids in
        ``-1 .. classes - 1``."""
        path = self._path(key, i)
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise self._error(f"file {path} is not a readable .npy file ({exc})") from exc
        kind = self._kinds[key]
        if kind == "segmentation":
            classes = self.task_specs[key].num_classes
            bad = (array < -1) | (array >= classes) | (array != np.floor(array))
            if bad.any():
                raise self._error(
                    f"file {path} holds labels outside the integers -1..{classes - 1}"
                )
        elif not np.isfinite(array).all():
            raise self._error(f"file {path} holds NaN or infinite values")
        elif problem := _range_problem(array, kind, self._depth_note):
            raise self._error(f"file {path} holds {problem}")
        return convert_stored(_to_channels_first(array, kind), kind)

    def _resize(self, key: str, value: Tensor) -> Tensor:
        """Field ``key`` of one sample resized to the configured size (if it differs)."""
        if tuple(value.shape[-2:]) == self._size:
            return value
        kind = self._kinds[key]
        if kind is None:
            return F.interpolate(
                value[None], size=self._size, mode="bilinear", align_corners=False, antialias=True
            )[0]
        if kind == "segmentation":
            labels = value[None, None].to(torch.float32)
            return F.interpolate(labels, size=self._size, mode="nearest-exact")[0, 0].to(
                value.dtype
            )
        return F.interpolate(value[None], size=self._size, mode="nearest-exact")[0]

    def __len__(self) -> int:
        return self._count

    def _sample(self, i: int) -> dict[str, Tensor]:
        """Every field of sample ``i``, read from its files and resized.

        Args:
            i: the sample's index.
        """
        return {key: self._resize(key, self._load(key, i)) for key in self._kinds}

    def _repr_args(self) -> list[str]:
        """The arguments shown by ``repr``: the name, the shared ones, then the folder."""
        return [repr(self.name), *super()._repr_args(), f"folder={str(self.folder)!r}"]


def nyuv2_fix(root: Path) -> str:
    """The fix named in every NYU-v2 file error.

    Args:
        root: the NYU-v2 folder the loader looked in.
    """
    return (
        f"run `{PREPARE_COMMAND}` or put the MTAN-preprocessed NYU-v2 at {root} "
        f"(<root>/{{train,val}}/{{image,label,depth,normal}}/<i>.npy; set ${DATA_DIR_ENV} or "
        f"the `root` parameter to read it from elsewhere)"
    )


@DATASETS.register("nyuv2")
def build_nyuv2(split: str, profile: str = "cpu", **overrides: object) -> NpyFolderDataset:
    """The ``nyuv2`` dataset: one split, read lazily from the MTAN layout (module doc).

    Args:
        split: ``train``, ``val`` or ``test`` (``val`` and ``test`` both read ``val/``).
        profile: ``smoke``, ``cpu`` or ``paper`` (selects the :data:`NYUV2_PRESETS` entry).
        **overrides: :class:`NYUv2Config` fields, e.g. ``tasks=("segmentation", "depth")``,
            ``root="/data/nyuv2"`` or ``height=None, width=None`` for the native size.
    """
    check_choice("split", split, SPLITS)
    config = build_config(NYUv2Config, NYUV2_PRESETS, profile, overrides)
    root = nyuv2_root(config.root)
    config = dataclasses.replace(config, root=str(root))
    size = None if config.height is None else (config.height, config.width)
    return NpyFolderDataset(
        "nyuv2",
        split,
        root / SPLIT_FOLDERS[split],
        TASK_FOLDERS,
        nyuv2_task_specs(config.tasks),
        config,
        nyuv2_fix(root),
        size=size,
        limit=getattr(config, f"n_{split}"),
    )
