"""``cityscapes``: the real Cityscapes in the MTAN preprocessed layout (segmentation, depth).

On-disk layout (as released with MTAN, Liu et al. 2019, in two sizes: 128x256 and 256x512;
one ``.npy`` file per image and field, indices contiguous from 0)::

    <root>/train/{image,depth,label_2,label_7,label_19}/{0..2974}.npy   # 2975 images
    <root>/val/{image,depth,label_2,label_7,label_19}/{0..499}.npy      # 500 images (the test set)

* ``image`` -- ``(H, W, 3)`` RGB in ``[0, 1]`` (``uint8`` files: ``0..255``, scaled by 1/255),
  channels last;
* ``depth`` -- ``(H, W, 1)`` (``(H, W)`` is accepted too) **disparity** (inverse depth, about
  ``0 .. 0.49`` in the release), ``>= 0``, ``0`` = invalid;
* ``label_<n>`` -- ``(H, W)`` class ids ``0 .. n - 1`` of the ``n``-class label set,
  ``-1`` = ignore.  Only the folder of the chosen set (``classes``) is read.

Files may hold any integer or real dtype (``bool`` is refused); samples are returned channels
first in the documented dtypes of :mod:`mtlrepro.data.base`: ``image`` float32 ``(3, H, W)``,
``segmentation`` int64 ``(H, W)``, ``depth`` float32 ``(1, H, W)``.

**Label set.**  ``classes`` chooses ``label_19`` (default), ``label_7`` or ``label_2``.  The
default is 19 because paper D (Choi & Im) takes its Cityscapes setup from AdaShare (its
[38], §4.1), whose Cityscapes config (``yamls/adashare/cityscapes_2task.yml`` in
github.com/sunxm2357/AdaShare) sets ``tasks_num_class: [19, 1]``, and because paper D's
Table 12 reports pixel accuracies of 74-76 %, the level of a 19-class task (7-class
MTAN-style results are around 90 %).  MTAN's paper and LibMTL use the 7-class set:
``classes=7``.  The 19 classes are Cityscapes' evaluation ``trainId`` classes
(:data:`CITYSCAPES_CLASSES`); the 7 classes are its categories without ``void``, as far as
we know (MTAN's preprocessing code is not public); the 2-class set is not documented.

**Depth is disparity.**  The ``depth`` task is trained and evaluated on the stored disparity
directly, as MTAN-style and AdaShare code do: it keeps the ``depth`` kind's conventions of
:mod:`mtlrepro.tasks` (float32 ``(1, H, W)``, ``0`` = invalid, loss over positive targets)
except that values are disparities, not metres.  The metrics of :mod:`mtlrepro.metrics`
(``abs_err``, ``rel_err``, ``delta1..3`` over pixels with a positive target) need only a
positive target and apply unchanged; they are then errors in disparity -- the scale of paper
D's Table 12 (absolute errors 0.015-0.018).  Converting to metres would need the camera's
baseline and focal length, which the release does not carry, and would blow up small
disparities.  The δ metrics clamp predictions to at least
:data:`~mtlrepro.metrics.MIN_DEPTH_PRED` (``1e-3``), far below typical disparities, so only
near-zero predictions are affected.  No upper bound is checked (the release's range is only
known approximately); negative or non-finite values stop with an error.

**Splits.**  As for ``nyuv2``: ``train`` reads ``train/``, and both ``val`` and ``test`` read
``val/`` (Cityscapes' official 500-image validation set, which MTAN-style papers use as their
test set and report on).  No validation split is carved out of ``train``; model selection on
``val`` is selection on the test images, as in those papers.

**Root.**  ``$MTLREPRO_DATA_DIR/cityscapes`` if that variable is set, else ``<repo
root>/data/cityscapes``; the ``root`` config field overrides both.  ``python
data_scripts/prepare_cityscapes.py --archive <path to the MTAN zip>`` places the data.

**Loading and size.**  As for ``nyuv2`` (:class:`~mtlrepro.data.nyuv2.NpyFolderDataset`): files
are read lazily, per sample; opening a split reads only the file headers, so that a missing
folder or file, mismatched counts or a wrong shape or dtype stops at once with one
:class:`DataFilesError` naming the file and the fix; bad values raise it when the file is read.
``height`` / ``width`` resize every sample when it is loaded: the image bilinearly with
antialiasing, labels and disparity with nearest-neighbour sampling (``nearest-exact``), so no
class or disparity is mixed with an ignored or invalid pixel; disparity values are unchanged
by a resize.  No augmentation is applied here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from mtlrepro.config import ConfigError, build_config, check_choice
from mtlrepro.data.base import (
    DATA_DIR_ENV,
    DATASETS,
    SPLITS,
    check_real_dataset_config,
    dataset_root,
)
from mtlrepro.data.nyuv2 import NpyFolderDataset
from mtlrepro.tasks import TaskSpec

# fmt: off
CITYSCAPES_CLASSES: dict[int, tuple[str, ...]] = {
    # Cityscapes' 19 evaluation classes, in trainId order
    19: (
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
        "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
        "bus", "train", "motorcycle", "bicycle",
    ),
    # Cityscapes' categories without void, in category-id order (catId - 1)
    7: ("flat", "construction", "object", "nature", "sky", "human", "vehicle"),
}
# fmt: on
"""Class names of the documented label sets (the 2-class set has none documented)."""
CITYSCAPES_LABEL_SETS: tuple[int, ...] = (2, 7, 19)
"""Class counts of the released label sets, folder ``label_<n>``."""
DEFAULT_CLASSES = 19
"""The label set paper D uses (AdaShare's setup; module doc)."""
CITYSCAPES_TASKS: tuple[str, ...] = ("segmentation", "depth")
CITYSCAPES_COUNTS: dict[str, int] = {"train": 2975, "val": 500}
"""Images per folder of the released data."""
SPLIT_FOLDERS: dict[str, str] = {"train": "train", "val": "val", "test": "val"}
"""Folder each split reads: the layout's ``val/`` is the test set and serves both."""
PREPARE_COMMAND = "python data_scripts/prepare_cityscapes.py --archive <path to the MTAN zip>"
DEPTH_NOTE = "depth is disparity (inverse depth) >= 0, 0 = invalid"
"""What the depth values are (said in the error about a negative value)."""


def label_folder(classes: int) -> str:
    """The sub-folder holding the ``classes``-class labels, e.g. ``label_19``.

    Args:
        classes: one of :data:`CITYSCAPES_LABEL_SETS`.
    """
    return f"label_{classes}"


def cityscapes_task_folders(classes: int = DEFAULT_CLASSES) -> dict[str, str]:
    """Sub-folder holding each task's targets (the image is in ``image/``).

    Args:
        classes: the label set of the ``segmentation`` task.
    """
    return {"segmentation": label_folder(classes), "depth": "depth"}


@dataclasses.dataclass(frozen=True)
class CityscapesConfig:
    """Parameters of the ``cityscapes`` dataset (validated on creation).

    Attributes:
        root: folder holding ``train/`` and ``val/``; ``None`` = ``$MTLREPRO_DATA_DIR/
            cityscapes`` or ``<repo root>/data/cityscapes`` (the built dataset's config holds
            the resolved path).
        height: resize every sample to this height (with ``width``); ``None`` = the files'.
        width: resize every sample to this width (with ``height``); ``None`` = the files'.
        n_train: use only the first ``n_train`` training images (``None`` = all 2975).
        n_val: use only the first ``n_val`` images of the ``val`` split (``None`` = all).
        n_test: use only the first ``n_test`` images of the ``test`` split (``None`` = all).
        tasks: the tasks to publish, a subset of :data:`CITYSCAPES_TASKS`.
        classes: the segmentation label set, one of :data:`CITYSCAPES_LABEL_SETS` (folder
            ``label_<classes>``); default 19, paper D's (module doc).
    """

    root: str | None = None
    height: int | None = None
    width: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    tasks: tuple[str, ...] = CITYSCAPES_TASKS
    classes: int = DEFAULT_CLASSES

    def __post_init__(self) -> None:
        check_real_dataset_config(self, "cityscapes", CITYSCAPES_TASKS, optional_size=True)
        if (
            isinstance(self.classes, bool)
            or not isinstance(self.classes, int)
            or self.classes not in CITYSCAPES_LABEL_SETS
        ):
            allowed = ", ".join(str(n) for n in CITYSCAPES_LABEL_SETS)
            raise ConfigError(
                f"CityscapesConfig.classes must be one of {allowed} (the label_<classes> "
                f"folders of the release); got {self.classes!r}"
            )


CITYSCAPES_PRESETS: dict[str, dict[str, object]] = {
    # seconds: a few images at a quarter of 128x256 (needs the real data like every profile)
    "smoke": {"height": 32, "width": 64, "n_train": 16, "n_val": 8, "n_test": 8},
    # all images at half of 128x256, for a CPU
    "cpu": {"height": 64, "width": 128},
    # all images at 128x256 (the small archive's size; a 256x512 archive is resized down)
    "paper": {"height": 128, "width": 256},
}
"""Per-profile :class:`CityscapesConfig` overrides; every profile reads the same files."""


def cityscapes_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The Cityscapes folder: ``root`` if given, else ``$MTLREPRO_DATA_DIR/cityscapes``, else
    ``<repo root>/data/cityscapes``.

    Args:
        root: an explicit folder, or ``None`` for the default.
    """
    return dataset_root("cityscapes", root)


def cityscapes_task_specs(
    tasks: Sequence[str] = CITYSCAPES_TASKS, classes: int = DEFAULT_CLASSES
) -> dict[str, TaskSpec]:
    """Task specs of the chosen Cityscapes tasks, in the given order.

    Args:
        tasks: names from :data:`CITYSCAPES_TASKS`.
        classes: the label set of the ``segmentation`` task.
    """
    all_specs = {
        "segmentation": TaskSpec("segmentation", "segmentation", classes),
        "depth": TaskSpec("depth", "depth"),
    }
    return {task: all_specs[task] for task in tasks}


def cityscapes_fix(root: Path) -> str:
    """The fix named in every Cityscapes file error.

    Args:
        root: the Cityscapes folder the loader looked in.
    """
    return (
        f"run `{PREPARE_COMMAND}` or put the MTAN-preprocessed Cityscapes at {root} "
        f"(<root>/{{train,val}}/{{image,depth,label_2,label_7,label_19}}/<i>.npy; "
        f"set ${DATA_DIR_ENV} or the `root` parameter to read it from elsewhere)"
    )


def open_cityscapes_folder(
    root: Path,
    folder: str,
    task_specs: dict[str, TaskSpec],
    subfolders: dict[str, str],
    config: object = None,
    split: str | None = None,
    size: tuple[int, int] | None = None,
    limit: int | None = None,
) -> NpyFolderDataset:
    """One folder of the layout opened as a dataset (the builder's and the prepare script's
    reader).

    Args:
        root: the Cityscapes folder.
        folder: ``train`` or ``val``.
        task_specs: task name -> spec, in order.
        subfolders: task name -> sub-folder of ``root / folder`` with its targets.
        config: the config the split was built from (``None`` for a bare check).
        split: the split's name (default: ``folder``).
        size: ``(H, W)`` to resize samples to, or ``None`` for the files' size.
        limit: use only the first ``limit`` samples (``None`` = all).
    """
    return NpyFolderDataset(
        "cityscapes",
        folder if split is None else split,
        root / folder,
        subfolders,
        task_specs,
        config,
        cityscapes_fix(root),
        size=size,
        limit=limit,
        depth_note=DEPTH_NOTE,
    )


@DATASETS.register("cityscapes")
def build_cityscapes(split: str, profile: str = "cpu", **overrides: object) -> NpyFolderDataset:
    """The ``cityscapes`` dataset: one split, read lazily from the MTAN layout (module doc).

    Args:
        split: ``train``, ``val`` or ``test`` (``val`` and ``test`` both read ``val/``).
        profile: ``smoke``, ``cpu`` or ``paper`` (selects the :data:`CITYSCAPES_PRESETS` entry).
        **overrides: :class:`CityscapesConfig` fields, e.g. ``classes=7``,
            ``tasks=("depth",)``, ``root="/data/cityscapes"`` or ``height=None, width=None``
            for the files' size.
    """
    check_choice("split", split, SPLITS)
    config = build_config(CityscapesConfig, CITYSCAPES_PRESETS, profile, overrides)
    root = cityscapes_root(config.root)
    config = dataclasses.replace(config, root=str(root))
    size = None if config.height is None else (config.height, config.width)
    return open_cityscapes_folder(
        root,
        SPLIT_FOLDERS[split],
        cityscapes_task_specs(config.tasks, config.classes),
        cityscapes_task_folders(config.classes),
        config,
        split=split,
        size=size,
        limit=getattr(config, f"n_{split}"),
    )
