"""``celebamask``: the real CelebAMask-HQ (paper B) in its released layout, read lazily.

On-disk layout (Lee et al., CVPR 2020; 30,000 face images)::

    <root>/CelebA-HQ-img/{0..29999}.jpg                        # 1024x1024 RGB
    <root>/CelebAMask-HQ-mask-anno/{0..14}/{k:05d}_{part}.png  # 512x512; folder = k // 2000
    <root>/CelebAMask-HQ-attribute-anno.txt                    # 40 binary attributes per image
    <root>/CelebA-HQ-to-CelebA-mapping.txt                     # not read (indices in CelebA)

A part mask file exists only if the part is visible; a pixel belongs to the part where the
mask is non-zero (any colour channel, alpha ignored).  The attribute file holds the number of
images on line 1, the 40 attribute names on line 2, then one row per image: ``k.jpg`` and one
value ``-1`` / ``1`` per attribute, separated by one or more spaces.

**Tasks** (the same names, classes and specs as the embedded ``faces`` dataset):

* ``segmentation`` -- 3 classes :data:`CELEBAMASK_CLASSES` (background 0, skin 1, hair 2).
  Paper B's mask-building code is not public; here the 18 part masks are painted in the
  release's order :data:`CELEBAMASK_PARTS`, later parts overwriting earlier ones (which is the
  19-label map of the release's ``g_mask.py``), and each part paints its class of
  :data:`PART_CLASSES`: ``skin`` = the face, i.e. the parts ``skin, nose, eye_g, l_eye, r_eye,
  l_brow, r_brow, l_ear, r_ear, mouth, u_lip, l_lip`` (glasses included, as they lie on the
  face); ``hair`` = ``hair``; background = everything else: no part, ``hat``, ``ear_r``
  (earrings), ``neck_l`` (necklace), ``cloth`` and also ``neck``.  The neck is *not* skin: the
  release's own ``skin`` label is face skin only, paper B names the class after it, and how
  much neck shows depends on the crop and the clothes rather than on the face.  So a ``hat``
  over ``hair`` gives background and ``hair`` over ``skin`` gives hair.
* ``male`` -- attribute ``Male`` (``-1`` -> 0 = female, ``1`` -> 1 = male);
* ``smile`` -- attribute ``Smiling`` (``-1`` -> 0, ``1`` -> 1).

**Splits.**  The release has no split and paper B draws a random 60/20/20 one: the image ids
of the attribute file (sorted) are permuted with ``numpy.random.default_rng(split_seed)``;
the first ``6 N // 10`` are ``train``, the next ``2 N // 10`` ``val``, the rest ``test``
(18,000 / 6,000 / 6,000 for the release's 30,000), each then sorted by id.  The splits are
disjoint, cover every image and depend only on ``split_seed`` and the set of ids.
``n_train`` / ``n_val`` / ``n_test`` keep the first images of a split (by id).

**Root.**  ``$MTLREPRO_DATA_DIR/celebamask`` if that variable is set, else
``<repo root>/data/celebamask``; the ``root`` config field overrides both.
``python data_scripts/prepare_celebamask.py --archive CelebAMask-HQ.zip`` places the data.

**Loading.**  Opening a split parses the attribute file and lists the image folder, so that a
missing folder or file, a malformed attribute file or an image without its JPEG stops at once
with one :class:`~mtlrepro.data.base.DataFilesError` naming the file and the fix.  Images
and masks are read with Pillow when a sample or batch is requested (nothing is cached):
JPEGs are decoded at a reduced scale where libjpeg allows one that is not smaller than the
target (Pillow's draft mode, DCT-domain downscaling), converted to RGB and resized to
``height`` x ``width`` bilinearly (Pillow antialiases when shrinking); the 3-class mask is
built at the masks' size (512x512, half the images') and resized with nearest-neighbour
sampling only, so no class is ever mixed.  An image with no part mask at all is an error.
No augmentation is applied here.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mtlrepro.config import ConfigError, build_config, check_choice, check_range
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

CELEBAMASK_CLASSES: tuple[str, ...] = ("background", "skin", "hair")
CELEBAMASK_TASKS: tuple[str, ...] = ("segmentation", "male", "smile")
# fmt: off
CELEBAMASK_PARTS: tuple[str, ...] = (
    "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth",
    "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)
# fmt: on
"""The release's part masks in painting order (later parts overwrite earlier ones)."""
_FACE_PARTS = CELEBAMASK_PARTS[:12]
PART_CLASSES: dict[str, int] = {
    part: 1 if part in _FACE_PARTS else 2 if part == "hair" else 0 for part in CELEBAMASK_PARTS
}
"""Class each part paints: the face parts ``skin .. l_lip`` 1 (skin), ``hair`` 2, the rest 0."""
ATTRIBUTE_COLUMNS: dict[str, str] = {"male": "Male", "smile": "Smiling"}
"""Attribute-file column of each classification task."""
CELEBAMASK_COUNT = 30000
"""Images in the release."""
SPLIT_TENTHS: dict[str, int] = {"train": 6, "val": 2, "test": 2}
"""Share of the images in each split, in tenths (paper B's random 60/20/20 split)."""
IMAGE_DIR = "CelebA-HQ-img"
MASK_DIR = "CelebAMask-HQ-mask-anno"
ATTRIBUTE_FILE = "CelebAMask-HQ-attribute-anno.txt"
LAYOUT_ENTRIES: tuple[str, ...] = (IMAGE_DIR, MASK_DIR, ATTRIBUTE_FILE)
"""The entries of the root the loader reads (the mapping file is optional)."""
MASK_FOLDER_SIZE = 2000
"""Images per mask sub-folder: image ``k``'s masks are in ``<MASK_DIR>/{k // 2000}/``."""
PREPARE_COMMAND = "python data_scripts/prepare_celebamask.py --archive <path to CelebAMask-HQ.zip>"
_ROW_NAME = re.compile(r"^(\d+)\.jpg$")


@dataclasses.dataclass(frozen=True)
class CelebAMaskConfig:
    """Parameters of the ``celebamask`` dataset (validated on creation).

    Attributes:
        root: folder holding the release's entries (:data:`LAYOUT_ENTRIES`); ``None`` =
            ``$MTLREPRO_DATA_DIR/celebamask`` or ``<repo root>/data/celebamask`` (the built
            dataset's config holds the resolved path).
        height: height images and masks are resized to.
        width: width images and masks are resized to.
        n_train: use only the first ``n_train`` training images (by id; ``None`` = all).
        n_val: use only the first ``n_val`` validation images (``None`` = all).
        n_test: use only the first ``n_test`` test images (``None`` = all).
        split_seed: seed of the random 60/20/20 split (module doc).
        tasks: the tasks to publish, a subset of :data:`CELEBAMASK_TASKS`.
    """

    root: str | None = None
    height: int = 256
    width: int = 256
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    split_seed: int = 0
    tasks: tuple[str, ...] = CELEBAMASK_TASKS

    def __post_init__(self) -> None:
        check_real_dataset_config(self, "celebamask", CELEBAMASK_TASKS)
        check_range("split_seed", self.split_seed, 0, integer=True)


CELEBAMASK_PRESETS: dict[str, dict[str, object]] = {
    # seconds: a few images at quarter of paper B's size (needs the real data like every profile)
    "smoke": {"height": 64, "width": 64, "n_train": 64, "n_val": 32, "n_test": 32},
    # all images at half of paper B's size, for a CPU
    "cpu": {"height": 128, "width": 128},
    # paper B: all images at 256x256
    "paper": {},
}
"""Per-profile :class:`CelebAMaskConfig` overrides; every profile reads the same files."""


def celebamask_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The CelebAMask-HQ folder: ``root`` if given, else ``$MTLREPRO_DATA_DIR/celebamask``,
    else ``<repo root>/data/celebamask``.

    Args:
        root: an explicit folder, or ``None`` for the default.
    """
    return dataset_root("celebamask", root)


def celebamask_fix(root: Path) -> str:
    """The fix named in every CelebAMask-HQ file error.

    Args:
        root: the CelebAMask-HQ folder the loader looked in.
    """
    return (
        f"run `{PREPARE_COMMAND}` or put the unpacked CelebAMask-HQ at {root} (<root>/"
        f"{IMAGE_DIR}/, <root>/{MASK_DIR}/, <root>/{ATTRIBUTE_FILE}); set ${DATA_DIR_ENV} or "
        f"the `root` parameter to read it from elsewhere"
    )


def celebamask_task_specs(tasks: Sequence[str] = CELEBAMASK_TASKS) -> dict[str, TaskSpec]:
    """Task specs of the chosen CelebAMask-HQ tasks, in the given order.

    Args:
        tasks: names from :data:`CELEBAMASK_TASKS`.
    """
    all_specs = {
        "segmentation": TaskSpec("segmentation", "segmentation", len(CELEBAMASK_CLASSES)),
        "male": TaskSpec("male", "classification", 2),
        "smile": TaskSpec("smile", "classification", 2),
    }
    return {task: all_specs[task] for task in tasks}


def read_attributes(
    path: Path, columns: Sequence[str], fix: str
) -> tuple[tuple[int, ...], dict[str, np.ndarray]]:
    """Parse the attribute file: the image ids (sorted) and the chosen columns as 0/1.

    Checks the count on line 1 against the rows, that every row has a ``k.jpg`` name (each
    once) and one value per attribute name, and that the chosen columns hold only ``-1`` / ``1``.

    Args:
        path: the attribute file.
        columns: attribute names to return (e.g. ``("Male", "Smiling")``), mapped -1 -> 0.
        fix: what to do about bad files, appended to every error message.
    """

    def error(problem: str) -> DataFilesError:
        return DataFilesError(f"celebamask: file {path} {problem}; {fix}")

    if not path.is_file():
        raise error("does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"is not a readable text file ({exc})") from exc
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise error("does not start with the number of images and a line of attribute names")
    declared = int(lines[0])
    names = lines[1].split()
    missing = [column for column in columns if column not in names]
    if missing:
        raise error(f"has no {' or '.join(missing)} column (line 2 names: {' '.join(names)})")
    positions = [names.index(column) for column in columns]
    ids: list[int] = []
    rows: list[list[str]] = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1:
            raise error(
                f"line {number} has {len(fields)} columns, expected {len(names) + 1} (an image "
                f"name and one value per attribute named on line 2)"
            )
        match = _ROW_NAME.match(fields[0])
        if match is None:
            raise error(f"line {number} starts with {fields[0]!r}, expected an image name k.jpg")
        ids.append(int(match.group(1)))
        rows.append([fields[1 + p] for p in positions])
    if len(ids) != declared:
        raise error(f"declares {declared} images on line 1 but has {len(ids)} rows")
    twice = [k for k, n in Counter(ids).items() if n > 1]
    if twice:
        raise error(f"lists image {twice[0]}.jpg twice")
    table = np.array(rows, dtype=str).reshape(len(ids), len(columns))
    order = np.argsort(ids, kind="stable")
    values: dict[str, np.ndarray] = {}
    for j, column in enumerate(columns):
        bad = np.flatnonzero(~np.isin(table[:, j], ("-1", "1")))
        if len(bad):
            value = str(table[bad[0], j])
            raise error(f"gives image {ids[bad[0]]}.jpg {column}={value!r}, expected -1 or 1")
        values[column] = (table[order, j] == "1").astype(np.int64)
    return tuple(ids[i] for i in order), values


def split_image_ids(ids: Sequence[int], seed: int) -> dict[str, tuple[int, ...]]:
    """Paper B's random 60/20/20 split of the image ids (module doc), each split sorted.

    Args:
        ids: every image id of the dataset (any order; duplicates are not allowed).
        seed: seed of the permutation (``split_seed``).
    """
    ordered = np.array(sorted(ids), dtype=np.int64)
    shuffled = ordered[np.random.default_rng(seed).permutation(len(ordered))]
    n_train = len(ordered) * SPLIT_TENTHS["train"] // 10
    n_val = len(ordered) * SPLIT_TENTHS["val"] // 10
    parts = np.split(shuffled, [n_train, n_train + n_val])
    return {
        split: tuple(int(k) for k in np.sort(part))
        for split, part in zip(SPLITS, parts, strict=True)
    }


def mask_path(root: Path, image_id: int, part: str) -> Path:
    """The mask file of one part of one image (it exists only if the part is visible).

    Args:
        root: the CelebAMask-HQ folder.
        image_id: the image's id ``k``.
        part: one of :data:`CELEBAMASK_PARTS`.
    """
    return root / MASK_DIR / str(image_id // MASK_FOLDER_SIZE) / f"{image_id:05d}_{part}.png"


def _part_pixels(image: Image.Image) -> np.ndarray:
    """Boolean ``(H, W)``: where a part mask is non-zero in any colour channel (not alpha)."""
    array = np.asarray(image)
    if array.ndim == 3:
        return array[..., : 1 if array.shape[2] == 2 else 3].any(axis=2)
    return array != 0


def read_face_mask(root: Path, image_id: int, fix: str) -> np.ndarray:
    """The 3-class mask of one image at the masks' size, uint8 ``(H, W)`` in ``0..2``: every
    present part mask painted in :data:`CELEBAMASK_PARTS` order with its
    :data:`PART_CLASSES` class (later parts overwrite earlier ones).

    Args:
        root: the CelebAMask-HQ folder.
        image_id: the image's id ``k``.
        fix: what to do about bad files, appended to every error message.
    """
    label: np.ndarray | None = None
    for part in CELEBAMASK_PARTS:
        path = mask_path(root, image_id, part)
        try:
            with Image.open(path) as image:
                pixels = _part_pixels(image)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise DataFilesError(
                f"celebamask: file {path} is not a readable image ({exc}); {fix}"
            ) from exc
        if label is None:
            label = np.zeros(pixels.shape, dtype=np.uint8)
        elif pixels.shape != label.shape:
            raise DataFilesError(
                f"celebamask: file {path} is {pixels.shape[1]}x{pixels.shape[0]} but the other "
                f"masks of image {image_id} are {label.shape[1]}x{label.shape[0]}; {fix}"
            )
        label[pixels] = PART_CLASSES[part]
    if label is None:
        folder = mask_path(root, image_id, "skin").parent
        raise DataFilesError(
            f"celebamask: image {image_id} has no part mask in {folder} (expected files "
            f"{image_id:05d}_<part>.png, e.g. {image_id:05d}_skin.png); {fix}"
        )
    return label


class CelebAMaskDataset(LazyDataset):
    """One CelebAMask-HQ split: attributes in memory, images and masks read lazily.

    A :class:`~mtlrepro.data.base.LazyDataset`; the attribute labels are in :attr:`targets`.

    Attributes:
        image_ids: the CelebA-HQ id ``k`` of each sample (image ``<root>/CelebA-HQ-img/k.jpg``).
        targets: classification task -> int64 tensor of all labels of the split.
        root: the CelebAMask-HQ folder.
    """

    def __init__(self, split: str, root: Path, config: CelebAMaskConfig) -> None:
        """Args:
        split: ``train``, ``val`` or ``test``.
        root: the CelebAMask-HQ folder.
        config: the config the split is built from (size, caps, split seed, tasks).
        """
        self.name = "celebamask"
        self.split = split
        self.config = config
        self.root = root
        self._fix = celebamask_fix(root)
        for path in (root, root / IMAGE_DIR, root / MASK_DIR):
            if not path.is_dir():
                raise self._error(f"folder {path} does not exist")
        self.task_specs = celebamask_task_specs(config.tasks)
        columns = [ATTRIBUTE_COLUMNS[t] for t in config.tasks if t in ATTRIBUTE_COLUMNS]
        all_ids, values = read_attributes(root / ATTRIBUTE_FILE, columns, self._fix)
        present = set(os.listdir(root / IMAGE_DIR))
        absent = [k for k in all_ids if f"{k}.jpg" not in present]
        if absent:
            raise self._error(
                f"file {root / IMAGE_DIR / f'{absent[0]}.jpg'} is missing ({len(absent)} of the "
                f"{len(all_ids)} images of {ATTRIBUTE_FILE} are)"
            )
        ids = split_image_ids(all_ids, config.split_seed)[split]
        limit = getattr(config, f"n_{split}")
        if limit is not None:
            if limit > len(ids):
                raise ConfigError(
                    f"celebamask {split}: asked for the first {limit} images but the split holds "
                    f"{len(ids)} (60/20/20 of the {len(all_ids)} images of {root})"
                )
            ids = ids[:limit]
        if "segmentation" in self.task_specs:
            for folder in sorted({mask_path(root, k, "skin").parent for k in ids}):
                if not folder.is_dir():
                    raise self._error(f"folder {folder} does not exist")
        self.image_ids: tuple[int, ...] = ids
        rows = torch.as_tensor(np.searchsorted(all_ids, ids), dtype=torch.int64)
        self.targets: dict[str, Tensor] = {
            task: torch.from_numpy(values[ATTRIBUTE_COLUMNS[task]]).index_select(0, rows)
            for task in self.task_specs
            if task in ATTRIBUTE_COLUMNS
        }
        self._size = (config.height, config.width)

    def _error(self, problem: str) -> DataFilesError:
        """The one error raised for bad files: the problem, then the fix."""
        return DataFilesError(f"celebamask: {problem}; {self._fix}")

    def _image(self, i: int) -> Tensor:
        """Image of sample ``i`` as float32 ``(3, H, W)`` in ``[0, 1]`` at the configured size."""
        path = self.root / IMAGE_DIR / f"{self.image_ids[i]}.jpg"
        height, width = self._size
        try:
            with Image.open(path) as image:
                image.draft("RGB", (width, height))
                rgb = image.convert("RGB")
                if rgb.size != (width, height):
                    rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
                array = np.asarray(rgb)
        except (OSError, ValueError) as exc:
            raise self._error(f"file {path} is not a readable image ({exc})") from exc
        return convert_stored(torch.from_numpy(array.copy()).permute(2, 0, 1), None)

    def _mask(self, i: int) -> Tensor:
        """3-class mask of sample ``i`` as int64 ``(H, W)``, resized with nearest-neighbour."""
        label = read_face_mask(self.root, self.image_ids[i], self._fix)
        height, width = self._size
        if label.shape != (height, width):
            resized = Image.fromarray(label).resize((width, height), Image.Resampling.NEAREST)
            label = np.asarray(resized)
        return torch.from_numpy(label.astype(np.int64))

    def __len__(self) -> int:
        return len(self.image_ids)

    def _sample(self, i: int) -> dict[str, Tensor]:
        """Sample ``i``: its image and mask (read from disk now) and its attribute labels.

        Args:
            i: the sample's index.
        """
        out = {"image": self._image(i)}
        for task in self.task_specs:
            out[task] = self._mask(i) if task == "segmentation" else self.targets[task][i]
        return out

    def _repr_args(self) -> list[str]:
        """The arguments shown by ``repr``: the shared ones, then the root folder."""
        return [*super()._repr_args(), f"root={str(self.root)!r}"]


@DATASETS.register("celebamask")
def build_celebamask(split: str, profile: str = "cpu", **overrides: object) -> CelebAMaskDataset:
    """The ``celebamask`` dataset: one split, read lazily from the released layout (module doc).

    Args:
        split: ``train``, ``val`` or ``test``.
        profile: ``smoke``, ``cpu`` or ``paper`` (selects the :data:`CELEBAMASK_PRESETS` entry).
        **overrides: :class:`CelebAMaskConfig` fields, e.g. ``tasks=("segmentation", "male")``,
            ``root="/data/CelebAMask-HQ"`` or ``split_seed=1``.
    """
    check_choice("split", split, SPLITS)
    config = build_config(CelebAMaskConfig, CELEBAMASK_PRESETS, profile, overrides)
    root = celebamask_root(config.root)
    config = dataclasses.replace(config, root=str(root))
    return CelebAMaskDataset(split, root, config)


def celebamask_counts(root: Path) -> dict[str, int]:
    """Open every split of a CelebAMask-HQ folder, read its first and last sample (image,
    mask, attributes) and return the number of images per split (raises
    :class:`~mtlrepro.data.base.DataFilesError` naming the first bad file).

    Args:
        root: a folder in the CelebAMask-HQ layout.
    """
    counts = {}
    for split in SPLITS:
        dataset = build_celebamask(split, "smoke", root=str(root), **{f"n_{split}": None})
        dataset.batch([0, len(dataset) - 1])
        counts[split] = len(dataset)
    return counts
