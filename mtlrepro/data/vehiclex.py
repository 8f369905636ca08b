"""``vehiclex``: the real Vehicle-X (paper A) in its released layout, read lazily.

On-disk layout (Yao et al., ECCV 2020, as packaged for paper A; 45,438 / 14,936 / 15,142
images of 256x256)::

    <root>/train/VVVV_cCCC_NN.jpg       # vehicle id (4 or 5 digits), camera, counter
    <root>/val/VVVV_cCCC_NN.jpg
    <root>/test/VVVV_cCCC_NN.jpg
    <root>/finegrained_label.xml        # labels of the images of every split
    <root>/<split>_label.xml            # optional: labels of one split (e.g. train_label.xml)

**Labels.**  A split reads ``<root>/<split>_label.xml`` if that file exists (the AI City
Challenge packaging has ``train_label.xml``), else ``<root>/finegrained_label.xml``.  Every
``<Item>`` element anywhere in the file is one image: ``imageName`` (the file name, required),
``colorID`` and ``typeID`` (required), ``vehicleID`` and ``cameraID`` (``"c001"`` or
``"1"``; taken from the image name when absent, and checked against it when present); the
other attributes (``orientation``, ``lightInt``, ``camHei``, ...) are ignored.  The XML
declaration's encoding is honoured (the Challenge files declare ``gb2312``).  Items of
images that are not in the split's folder are ignored; an image without an item is an error.

**Classes** (the same for every split):

* ``colour`` = ``colorID - label_base`` in ``0..11`` (:data:`VEHICLE_COLOURS`; Vehicle-X's
  ids are 0-based, set ``label_base=1`` for 1-based files);
* ``type`` = ``typeID - label_base`` in ``0..10`` (:data:`VEHICLE_TYPES`);
* ``identity`` = the index of the vehicle id among the sorted distinct vehicle ids of every
  item of every label file of the root (ids are numbered from 1, so with all 1,362 ids of
  Vehicle-X present, class = id - 1); :attr:`VehicleXDataset.vehicle_ids` maps back;
* ``camera`` = camera number - 1 (``c001`` -> 0); the number of classes is the largest
  camera number in the label files.

**Root.**  ``$MTLREPRO_DATA_DIR/vehiclex`` if that variable is set, else
``<repo root>/data/vehiclex``; the ``root`` config field overrides both.
``python data_scripts/prepare_vehiclex.py`` unpacks and places the data.

**Loading.**  Opening a split lists its folder and parses the label files, so that a missing
folder or file, a malformed XML, an image without labels or a label out of range stops at once
with one :class:`~mtlrepro.data.base.DataFilesError` naming the file and the fix.  Images are
read with Pillow when a sample or batch is requested (an unreadable image raises the same
error), converted to RGB and resized to ``height`` x ``width`` (bilinear, antialiased); nothing
is cached.  No augmentation is applied here (paper A uses random flips and crops).
"""

from __future__ import annotations

import dataclasses
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
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
from mtlrepro.data.vehicle_classes import VEHICLE_COLOURS, VEHICLE_TYPES, VEHICLES_TASKS
from mtlrepro.tasks import TaskSpec

VEHICLEX_TASKS: tuple[str, ...] = VEHICLES_TASKS
VEHICLEX_COUNTS: dict[str, int] = {"train": 45438, "val": 14936, "test": 15142}
"""Images per split in paper A."""
LABEL_FILE = "finegrained_label.xml"
PREPARE_COMMAND = "python data_scripts/prepare_vehiclex.py"
IMAGE_NAME = re.compile(r"^(\d{4,5})_c(\d{3})_(\d+)\.jpg$", re.IGNORECASE)
"""Image file names: vehicle id, camera number, counter."""
_ENCODING = re.compile(rb"""^<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")


@dataclasses.dataclass(frozen=True)
class VehicleXConfig:
    """Parameters of the ``vehiclex`` dataset (validated on creation).

    Attributes:
        root: folder holding ``train/``, ``val/``, ``test/`` and the label file(s); ``None``
            = ``$MTLREPRO_DATA_DIR/vehiclex`` or ``<repo root>/data/vehiclex`` (the built
            dataset's config holds the resolved path).
        height: height the images are resized to.
        width: width the images are resized to.
        n_train: use only the first ``n_train`` training images (sorted by name; ``None`` =
            all).
        n_val: use only the first ``n_val`` validation images (``None`` = all).
        n_test: use only the first ``n_test`` test images (``None`` = all).
        label_base: the number of the first colour and type in the XML (0 or 1).
        tasks: the tasks to publish, a subset of :data:`VEHICLEX_TASKS`.
    """

    root: str | None = None
    height: int = 256
    width: int = 256
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    label_base: int = 0
    tasks: tuple[str, ...] = VEHICLEX_TASKS

    def __post_init__(self) -> None:
        check_real_dataset_config(self, "vehiclex", VEHICLEX_TASKS)
        check_choice("label_base", self.label_base, (0, 1))


VEHICLEX_PRESETS: dict[str, dict[str, object]] = {
    # seconds: a few images at quarter resolution (needs the real data like every profile)
    "smoke": {"height": 64, "width": 64, "n_train": 32, "n_val": 16, "n_test": 16},
    # all images at quarter resolution, for a CPU
    "cpu": {"height": 64, "width": 64},
    # paper A: all images at the native 256x256
    "paper": {},
}
"""Per-profile :class:`VehicleXConfig` overrides; every profile reads the same files."""


def vehiclex_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The Vehicle-X folder: ``root`` if given, else ``$MTLREPRO_DATA_DIR/vehiclex``, else
    ``<repo root>/data/vehiclex``.

    Args:
        root: an explicit folder, or ``None`` for the default.
    """
    return dataset_root("vehiclex", root)


def vehiclex_fix(root: Path) -> str:
    """The fix named in every Vehicle-X file error.

    Args:
        root: the Vehicle-X folder the loader looked in.
    """
    return (
        f"run `{PREPARE_COMMAND}` or put Vehicle-X at {root} "
        f"(<root>/{{train,val,test}}/VVVV_cCCC_NN.jpg and <root>/{LABEL_FILE}; set "
        f"${DATA_DIR_ENV} or the `root` parameter to read it from elsewhere)"
    )


def label_file(root: Path, split: str) -> Path:
    """The label file a split reads: ``<root>/<split>_label.xml`` if it exists, else
    ``<root>/finegrained_label.xml`` (which need not exist).

    Args:
        root: the Vehicle-X folder.
        split: ``train``, ``val`` or ``test``.
    """
    own = root / f"{split}_label.xml"
    return own if own.is_file() else root / LABEL_FILE


def _number(path: Path, name: str, key: str, value: str, fix: str) -> int:
    """An attribute as an int (``c001`` -> 1 for cameras), or :class:`DataFilesError`."""
    text = value[1:] if key == "cameraID" and value[:1] in "cC" else value
    try:
        return int(text)
    except ValueError:
        raise DataFilesError(
            f"vehiclex: file {path}: item {name!r} has {key}={value!r}, expected an integer; {fix}"
        ) from None


def read_labels(path: Path, fix: str) -> dict[str, tuple[int, int, int, int]]:
    """Parse one label file: image name -> ``(vehicle id, camera number, colorID, typeID)``
    as written (not yet shifted by ``label_base``).

    Args:
        path: the XML file.
        fix: what to do about bad files, appended to every error message.
    """

    def error(problem: str) -> DataFilesError:
        return DataFilesError(f"vehiclex: file {path} {problem}; {fix}")

    if not path.is_file():
        raise error("does not exist")
    raw = path.read_bytes()
    declared = _ENCODING.match(raw.lstrip())
    try:
        text = raw.decode(declared.group(1).decode() if declared else "utf-8")
        tree = ET.fromstring(_DECLARATION.sub("", text, count=1))
    except (UnicodeDecodeError, LookupError, ET.ParseError) as exc:
        raise error(f"is not a readable XML file ({exc})") from exc
    labels: dict[str, tuple[int, int, int, int]] = {}
    for item in tree.iter("Item"):
        attrs = item.attrib
        name = attrs.get("imageName")
        if name is None:
            raise error("has an <Item> without imageName")
        missing = [key for key in ("colorID", "typeID") if key not in attrs]
        if missing:
            raise error(f"has no {' or '.join(missing)} for item {name!r}")
        match = IMAGE_NAME.match(name)
        if match is None:
            raise error(f"names an image {name!r} that is not VVVV_cCCC_NN.jpg")
        if name in labels:
            raise error(f"lists image {name!r} twice")
        from_name = {"vehicleID": int(match.group(1)), "cameraID": int(match.group(2))}
        values = {}
        for key in ("vehicleID", "cameraID", "colorID", "typeID"):
            if key in attrs:
                values[key] = _number(path, name, key, attrs[key], fix)
            else:
                values[key] = from_name[key]
            if key in from_name and values[key] != from_name[key]:
                raise error(f"gives {key}={attrs[key]!r} for image {name!r}, whose name says "
                            f"{from_name[key]}")  # fmt: skip
        labels[name] = (values["vehicleID"], values["cameraID"], values["colorID"],
                        values["typeID"])  # fmt: skip
    if not labels:
        raise error("holds no <Item> elements")
    return labels


class VehicleXDataset(LazyDataset):
    """One Vehicle-X split: labels in memory, images read lazily from JPEG files.

    A :class:`~mtlrepro.data.base.LazyDataset`; the labels are in :attr:`targets`.

    Attributes:
        files: the split's image files, sorted by name.
        targets: task -> int64 tensor of all labels of the split.
        vehicle_ids: identity class -> vehicle id.
    """

    def __init__(
        self,
        split: str,
        root: Path,
        config: VehicleXConfig,
        limit: int | None = None,
    ) -> None:
        """Args:
        split: ``train``, ``val`` or ``test``.
        root: the Vehicle-X folder.
        config: the config the split is built from (size, label base, tasks).
        limit: use only the first ``limit`` images (``None`` = all); more than the folder
            holds is a :class:`~mtlrepro.config.ConfigError`.
        """
        self.name = "vehiclex"
        self.split = split
        self.config = config
        self._fix = vehiclex_fix(root)
        folder = root / split
        for path in (root, folder):
            if not path.is_dir():
                raise self._error(f"folder {path} does not exist")
        names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() == ".jpg")
        bad = [name for name in names if IMAGE_NAME.match(name) is None]
        if bad:
            raise self._error(f"file {folder / bad[0]} is not named VVVV_cCCC_NN.jpg")
        if not names:
            raise self._error(f"folder {folder} holds no .jpg images")
        if limit is not None:
            if limit > len(names):
                raise ConfigError(
                    f"vehiclex {split}: asked for the first {limit} images but {folder} "
                    f"holds {len(names)}"
                )
            names = names[:limit]
        own = label_file(root, split)
        files = {label_file(root, s) for s in SPLITS} | {own}
        parsed = {path: read_labels(path, self._fix) for path in files if path.is_file()}
        if own not in parsed:
            raise self._error(f"label file {own} does not exist")
        every = [label for labels in parsed.values() for label in labels.values()]
        self.vehicle_ids: tuple[int, ...] = tuple(sorted({label[0] for label in every}))
        n_cameras = max(label[1] for label in every)
        rows = []
        for name in names:
            if name not in parsed[own]:
                raise self._error(f"image {folder / name} has no <Item> in {own}")
            rows.append(parsed[own][name])
        table = np.array(rows, dtype=np.int64)
        identity = {vid: i for i, vid in enumerate(self.vehicle_ids)}
        classes = {
            "colour": len(VEHICLE_COLOURS),
            "type": len(VEHICLE_TYPES),
            "identity": len(self.vehicle_ids),
            "camera": max(n_cameras, 2),
        }
        values = {
            "colour": table[:, 2] - config.label_base,
            "type": table[:, 3] - config.label_base,
            "identity": np.array([identity[v] for v in table[:, 0]], dtype=np.int64),
            "camera": table[:, 1] - 1,
        }
        for task, key, column, allowed in (
            ("colour", "colorID", 2, f"{config.label_base}..{config.label_base + 11}"),
            ("type", "typeID", 3, f"{config.label_base}..{config.label_base + 10}"),
            ("camera", "cameraID", 1, "1 or more (c001 ...)"),
        ):
            outside = np.flatnonzero((values[task] < 0) | (values[task] >= classes[task]))
            if len(outside):
                raise self._error(
                    f"file {own} gives image {names[outside[0]]!r} {key}="
                    f"{table[outside[0], column]}, allowed: {allowed} (label_base="
                    f"{config.label_base})"
                )
        self.task_specs: dict[str, TaskSpec] = {
            t: TaskSpec(t, "classification", classes[t]) for t in config.tasks
        }
        self.targets: dict[str, Tensor] = {t: torch.from_numpy(values[t]) for t in config.tasks}
        self.files: list[Path] = [folder / name for name in names]
        self._size = (config.height, config.width)

    def _error(self, problem: str) -> DataFilesError:
        """The one error raised for bad files: the problem, then the fix."""
        return DataFilesError(f"vehiclex: {problem}; {self._fix}")

    def _image(self, i: int) -> Tensor:
        """Image ``i`` as float32 ``(3, H, W)`` in ``[0, 1]`` at the configured size."""
        path = self.files[i]
        height, width = self._size
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
                if rgb.size != (width, height):
                    rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
                array = np.asarray(rgb)
        except (OSError, ValueError) as exc:
            raise self._error(f"file {path} is not a readable image ({exc})") from exc
        return convert_stored(torch.from_numpy(array.copy()).permute(2, 0, 1), None)

    def __len__(self) -> int:
        return len(self.files)

    def _sample(self, i: int) -> dict[str, Tensor]:
        """Sample ``i``: its image (read from disk now) and one int64 label per task.

        Args:
            i: the sample's index.
        """
        return {"image": self._image(i), **{t: labels[i] for t, labels in self.targets.items()}}

    def _repr_args(self) -> list[str]:
        """The arguments shown by ``repr``: the shared ones, then the image folder."""
        return [*super()._repr_args(), f"folder={str(self.files[0].parent)!r}"]


@DATASETS.register("vehiclex")
def build_vehiclex(split: str, profile: str = "cpu", **overrides: object) -> VehicleXDataset:
    """The ``vehiclex`` dataset: one split, read lazily from the released layout (module doc).

    Args:
        split: ``train``, ``val`` or ``test``.
        profile: ``smoke``, ``cpu`` or ``paper`` (selects the :data:`VEHICLEX_PRESETS` entry).
        **overrides: :class:`VehicleXConfig` fields, e.g. ``tasks=("colour", "type")`` or
            ``root="/data/vehiclex"``.
    """
    check_choice("split", split, SPLITS)
    config = build_config(VehicleXConfig, VEHICLEX_PRESETS, profile, overrides)
    root = vehiclex_root(config.root)
    config = dataclasses.replace(config, root=str(root))
    return VehicleXDataset(split, root, config, limit=getattr(config, f"n_{split}"))


def vehiclex_counts(root: Path, config: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Open every split of a Vehicle-X folder, read its first and last image, and return the
    number of images per split (raises :class:`DataFilesError` naming the first bad file).

    Args:
        root: a folder in the Vehicle-X layout.
        config: :class:`VehicleXConfig` overrides (e.g. ``{"label_base": 1}``).
    """
    counts = {}
    for split in SPLITS:
        dataset = build_vehiclex(split, "paper", **{**(config or {}), "root": str(root)})
        dataset.batch([0, len(dataset) - 1])
        counts[split] = len(dataset)
    return counts
