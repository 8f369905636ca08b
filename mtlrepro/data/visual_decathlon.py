"""``visual_decathlon``: the real Visual Decathlon (Rebuffi et al., 2017; paper E), read lazily.

On-disk layout (the released ``decathlon-1.0-devkit.tar.gz`` and ``decathlon-1.0-data.tar.gz``,
whose per-domain ``<domain>.tar`` archives are unpacked under ``data/``; ImageNet comes
separately as ``decathlon-1.0-data-imagenet.tar``)::

    <root>/decathlon-1.0/annotations/<domain>_{train,val,test_stripped}.json
    <root>/decathlon-1.0/data/<domain>/{train,val,test}/...

The annotation files are COCO-style: ``images`` (``id``, ``file_name`` relative to
``decathlon-1.0/``, starting ``data/<domain>/``), ``annotations`` (``image_id``,
``category_id``; one per image) and ``categories`` (``id``, ``name``).  Category ids carry a
per-domain offset in multiples of 100,000: the class is ``category_id % 100000 - 1`` (as in
the authors' code of paper E), and the classes of a domain must be exactly ``0 ..
len(categories) - 1`` -- the task's class count is read from ``categories``.  Images are
about 72 pixels on the shorter side; grey images (Omniglot, Daimler pedestrians) are tiled to
three channels.

**Domains = tasks** (:data:`VISUAL_DECATHLON_DOMAINS`): aircraft (100 classes), cifar100
(100), daimlerpedcls (2), dtd (47), gtsrb (43), imagenet12 (1000), omniglot (1623), svhn (10),
ucf101 (101), vgg-flowers (102).  The default ``tasks`` are paper E's nine (§5: "all datasets
except for ImageNet"; Table 2's nine columns, :data:`PAPER_DOMAINS`); ``imagenet12`` is
available by name.  As in :mod:`mtlrepro.data.glyphs` and ``decathlon``, **one task labels
each sample**: the other domains' targets are ``-1`` (ignore), and ``tasks`` chooses the
domains *and* keeps only their images.  Only the chosen domains' files are read.
:data:`NO_FLIP_DOMAINS` are the domains the authors' code does not flip.

**Splits.**  The test split's labels are not released (``*_test_stripped.json`` has none), and
paper E reports *validation* accuracy (Table 2) with "the exact training, validation, and test
splits provided by Visual Decathlon".  So ``test`` here is the official ``val`` split, and
``val`` is carved from the official ``train``: per domain and class, ``round(val_fraction *
n)`` images (at least 1, and at least one left for training, for a class of 2 images or
more; none for a single image) chosen by a permutation with ``numpy.random.default_rng(
SeedSequence([split_seed, domain index]))``; ``train`` is the rest.  The test-set images
(``data/<domain>/test``) are never read.

**Order.**  Within a domain, a split's images are ordered round robin over the classes (the
``k``-th image of every class, in the seeded order, then the ``k + 1``-th), and the domains
round robin too (image ``j`` of every chosen domain in :data:`VISUAL_DECATHLON_DOMAINS`
order, then image ``j + 1``), so a prefix (``n_train`` ...) spans the domains and classes.

**Size** (paper E takes its data pipeline from Rebuffi et al.: resize to 72 pixels on the
shorter side, random 64x64 crops and flips for training, central 64x64 crops for testing --
72x72 for gtsrb, omniglot and svhn, which it does not flip).  Here every image is resized
(bilinear, antialiased) to ``shorter_side`` pixels on its shorter side (default
``round(9 / 8 * max(height, width))``, 72 for 64) and centre-cropped to ``height`` x
``width``, so every domain has one size and batches can mix domains; random crops and flips
are training-time augmentation, not part of the loader.  Profiles: ``smoke`` the first 64 /
32 / 32 images at 32x32, ``cpu`` every image at 32x32 (shorter side 36), ``paper`` every image
at 64x64 (shorter side 72).

**Root.**  ``$MTLREPRO_DATA_DIR/visual_decathlon`` if that variable is set, else ``<repo
root>/data/visual_decathlon``; the ``root`` config field overrides both.  ``python
data_scripts/prepare_visual_decathlon.py`` places the data there.  A missing or malformed file
stops with one :class:`~mtlrepro.data.base.DataFilesError` naming it and that command.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
    check_task_subset,
    convert_stored,
    dataset_root,
)
from mtlrepro.tasks import TaskSpec

VISUAL_DECATHLON_DOMAINS: dict[str, int] = {
    "aircraft": 100,
    "cifar100": 100,
    "daimlerpedcls": 2,
    "dtd": 47,
    "gtsrb": 43,
    "imagenet12": 1000,
    "omniglot": 1623,
    "svhn": 10,
    "ucf101": 101,
    "vgg-flowers": 102,
}
"""The released domains and their class counts, in sample order."""
DOMAIN_NAMES: tuple[str, ...] = tuple(VISUAL_DECATHLON_DOMAINS)
PAPER_DOMAINS: tuple[str, ...] = tuple(d for d in DOMAIN_NAMES if d != "imagenet12")
"""Paper E's nine domains (every domain but ImageNet), the default tasks."""
NO_FLIP_DOMAINS: tuple[str, ...] = ("gtsrb", "omniglot", "svhn")
"""Domains the authors' code never flips horizontally."""
CATEGORY_OFFSET = 100_000
"""Category ids are ``offset * CATEGORY_OFFSET + class + 1``."""
RELEASE_FOLDER = "decathlon-1.0"
ANNOTATION_FILES: dict[str, str] = {"train": "train", "val": "val", "test": "test_stripped"}
"""Official split -> suffix of its annotation file ``<domain>_<suffix>.json``."""
SOURCE_SPLITS: dict[str, str] = {"train": "train", "val": "train", "test": "val"}
"""Our split -> the official split its images come from."""
PREPARE_COMMAND = "python data_scripts/prepare_visual_decathlon.py"


@dataclasses.dataclass(frozen=True)
class VisualDecathlonConfig:
    """Parameters of the ``visual_decathlon`` dataset (validated on creation).

    Attributes:
        root: folder holding ``decathlon-1.0/``; ``None`` = ``$MTLREPRO_DATA_DIR/
            visual_decathlon`` or ``<repo root>/data/visual_decathlon`` (the built dataset's
            config holds the resolved path).
        height: height of the centre crop.
        width: width of the centre crop.
        shorter_side: the shorter side images are resized to before the crop (at least
            ``max(height, width)``); ``None`` = ``round(9 / 8 * max(height, width))``.
        n_train: use only the first ``n_train`` training images (``None`` = all).
        n_val: use only the first ``n_val`` validation images (``None`` = all).
        n_test: use only the first ``n_test`` test images (``None`` = all).
        val_fraction: share of every class of the official training split held out as ``val``.
        split_seed: seed of the permutation choosing the held-out images.
        tasks: the domains (tasks) to publish, a subset of :data:`DOMAIN_NAMES` (``None`` =
            :data:`PAPER_DOMAINS`); only their images are kept.
    """

    root: str | None = None
    height: int = 64
    width: int = 64
    shorter_side: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    tasks: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.root is not None and not self.root:
            raise ConfigError(f"{type(self).__name__}.root must be a folder path or None; got ''")
        check_range("height", self.height, 8, 4096, integer=True)
        check_range("width", self.width, 8, 4096, integer=True)
        if self.shorter_side is not None:
            check_range("shorter_side", self.shorter_side, max(self.height, self.width), 8192,
                        integer=True)  # fmt: skip
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) is not None:
                check_range(name, getattr(self, name), 1, integer=True)
        check_range("val_fraction", self.val_fraction, 0.0, 0.5, low_inclusive=False)
        check_range("split_seed", self.split_seed, 0, 2**63 - 1, integer=True)
        if self.tasks is not None:
            check_task_subset("visual_decathlon", self.tasks, DOMAIN_NAMES)

    @property
    def task_names(self) -> tuple[str, ...]:
        """The published tasks: :attr:`tasks`, or :data:`PAPER_DOMAINS` when it is ``None``."""
        return PAPER_DOMAINS if self.tasks is None else self.tasks

    @property
    def resize_to(self) -> int:
        """The shorter side images are resized to: :attr:`shorter_side` or its default."""
        if self.shorter_side is not None:
            return self.shorter_side
        return round(9 * max(self.height, self.width) / 8)


VISUAL_DECATHLON_PRESETS: dict[str, dict[str, object]] = {
    # seconds: a few images at 32x32 (needs the real data like every profile)
    "smoke": {"height": 32, "width": 32, "n_train": 64, "n_val": 32, "n_test": 32},
    # every image at 32x32 (shorter side 36), for a CPU
    "cpu": {"height": 32, "width": 32},
    # paper E (Rebuffi et al.'s pipeline): 72 pixels on the shorter side, 64x64 centre crops
    "paper": {},
}
"""Per-profile :class:`VisualDecathlonConfig` overrides; every profile reads the same files."""


def visual_decathlon_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The Visual Decathlon folder (holding ``decathlon-1.0/``): ``root`` if given, else
    ``$MTLREPRO_DATA_DIR/visual_decathlon``, else ``<repo root>/data/visual_decathlon``.

    Args:
        root: an explicit folder, or ``None`` for the default.
    """
    return dataset_root("visual_decathlon", root)


def visual_decathlon_fix(root: Path) -> str:
    """The fix named in every Visual Decathlon file error.

    Args:
        root: the Visual Decathlon folder the loader looked in.
    """
    return (
        f"run `{PREPARE_COMMAND} --download` or put Visual Decathlon at {root} "
        f"(<root>/{RELEASE_FOLDER}/annotations/<domain>_{{train,val}}.json and "
        f"<root>/{RELEASE_FOLDER}/data/<domain>/..., the released devkit and data archives "
        f"unpacked; set ${DATA_DIR_ENV} or the `root` parameter to read it from elsewhere)"
    )


def annotation_file(root: Path, domain: str, official: str) -> Path:
    """The annotation file of one domain and official split (``train``, ``val``, ``test``).

    Args:
        root: the Visual Decathlon folder.
        domain: a domain name.
        official: the official split.
    """
    name = f"{domain}_{ANNOTATION_FILES[official]}.json"
    return root / RELEASE_FOLDER / "annotations" / name


@dataclasses.dataclass(frozen=True)
class Annotations:
    """One domain's official split as read from its annotation file.

    Attributes:
        files: ``file_name`` of every image (relative to ``decathlon-1.0/``), in file order.
        labels: int64 class of every image (``category_id % 100000 - 1``).
        categories: the category ids, sorted.
    """

    files: tuple[str, ...]
    labels: np.ndarray
    categories: tuple[int, ...]


def read_annotations(path: Path, domain: str, fix: str) -> Annotations:
    """Parse one COCO-style annotation file of the release (labelled splits only).

    Args:
        path: the ``<domain>_{train,val}.json`` file.
        domain: its domain (every ``file_name`` must start with ``data/<domain>/``).
        fix: what to do about bad files, appended to the error messages.
    """

    def error(problem: str) -> DataFilesError:
        return DataFilesError(f"visual_decathlon: {problem}; {fix}")

    if not path.is_file():
        raise error(f"file {path} does not exist")
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"file {path} is not a readable annotation file ({exc})") from exc
    lists = {}
    for key in ("images", "annotations", "categories"):
        value = data.get(key) if isinstance(data, dict) else None
        if not isinstance(value, list) or not value:
            raise error(f"file {path} has no '{key}' list (a labelled COCO-style file is needed)")
        lists[key] = value
    try:
        ids = sorted(int(c["id"]) for c in lists["categories"])
        names = {int(im["id"]): str(im["file_name"]) for im in lists["images"]}
        pairs = [(int(a["image_id"]), int(a["category_id"])) for a in lists["annotations"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise error(
            f"file {path} lacks an id, file_name, image_id or category_id ({exc!r})"
        ) from exc
    classes = [i % CATEGORY_OFFSET - 1 for i in ids]
    offsets = {i // CATEGORY_OFFSET for i in ids}
    if len(offsets) > 1 or sorted(classes) != list(range(len(ids))):
        raise error(
            f"the category ids of {path} ({ids[0]} .. {ids[-1]}, {len(ids)} categories) do not "
            f"map to classes 0 .. {len(ids) - 1} by `id % {CATEGORY_OFFSET} - 1` with one offset"
        )
    known = set(ids)
    label_of: dict[int, int] = {}
    for image_id, category in pairs:
        if image_id not in names or category not in known:
            raise error(f"file {path}: annotation of image {image_id} (category {category}) "
                        "refers to an unknown image or category")  # fmt: skip
        if image_id in label_of:
            raise error(f"file {path}: image {names[image_id]} has several annotations")
        label_of[image_id] = category % CATEGORY_OFFSET - 1
    prefix = f"data/{domain}/"
    for image_id, name in names.items():
        if not name.startswith(prefix):
            raise error(f"file {path}: image file_name {name!r} does not start with {prefix!r}")
        if image_id not in label_of:
            raise error(f"file {path}: image {name} has no annotation")
    order = list(names)
    labels = np.array([label_of[i] for i in order], dtype=np.int64)
    return Annotations(tuple(names[i] for i in order), labels, tuple(ids))


def class_round_robin(labels: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``order`` (indices into ``labels``) rearranged round robin over the classes: the first
    index of every class (classes ascending), then the second, ...

    Args:
        labels: class of every image.
        order: the indices to arrange, in their preference order.
    """
    kept = labels[order]
    rank = np.empty(len(order), dtype=np.int64)
    for c in np.unique(kept):
        where = np.flatnonzero(kept == c)
        rank[where] = np.arange(len(where))
    return order[np.lexsort((kept, rank))]


def carve_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Which images of an official training split are held out as ``val``: per class of
    ``n >= 2`` images, ``min(n - 1, max(1, round(fraction * n)))`` of them, the first in a
    random permutation; a boolean mask.

    Args:
        labels: class of every image.
        fraction: share to hold out.
        rng: the permutation's generator.
    """
    permuted = rng.permutation(len(labels))
    held = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = permuted[labels[permuted] == c]
        n = len(members)
        if n >= 2:
            held[members[: min(n - 1, max(1, round(fraction * n)))]] = True
    return held


def domain_split(
    annotations: Annotations, split: str, domain_index: int, config: VisualDecathlonConfig
) -> np.ndarray:
    """Indices into ``annotations`` (of :data:`SOURCE_SPLITS` ``[split]``) of one domain's
    split, in the class round-robin order of the module doc.

    Args:
        annotations: the official split the images come from.
        split: ``train``, ``val`` or ``test``.
        domain_index: the domain's position in :data:`DOMAIN_NAMES`.
        config: ``val_fraction`` and ``split_seed``.
    """
    labels = annotations.labels
    key = [config.split_seed, domain_index, 0 if SOURCE_SPLITS[split] == "train" else 1]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    if split == "test":
        return class_round_robin(labels, rng.permutation(len(labels)))
    held = carve_split(labels, config.val_fraction, rng)
    order = np.random.default_rng(np.random.SeedSequence([*key, 1])).permutation(len(labels))
    chosen = order[held[order]] if split == "val" else order[~held[order]]
    return class_round_robin(labels, chosen)


class VisualDecathlonDataset(LazyDataset):
    """One Visual Decathlon split: labels in memory, images read lazily with Pillow.

    A :class:`~mtlrepro.data.base.LazyDataset`; the labels are in :attr:`targets`.

    Attributes:
        files: the split's image files, in sample order.
        targets: task -> int64 tensor of all labels of the split (``-1`` = another domain).
        source: the official split the images come from (``train`` or ``val``).
    """

    def __init__(self, split: str, root: Path, config: VisualDecathlonConfig) -> None:
        """Args:
        split: ``train``, ``val`` or ``test``.
        root: the Visual Decathlon folder.
        config: the config the split is built from (size, tasks, caps, split carving).
        """
        self.name = "visual_decathlon"
        self.split = split
        self.config = config
        self.source = SOURCE_SPLITS[split]
        self._fix = visual_decathlon_fix(root)
        base = root / RELEASE_FOLDER
        for folder in (root, base, base / "annotations", base / "data"):
            if not folder.is_dir():
                raise self._error(f"folder {folder} does not exist")
        chosen = [d for d in DOMAIN_NAMES if d in config.tasks]  # sample order
        per_domain: list[tuple[int, list[str], np.ndarray]] = []
        classes: dict[str, int] = {}
        for domain in chosen:
            if not (base / "data" / domain).is_dir():
                raise self._error(f"folder {base / 'data' / domain} does not exist")
            train = read_annotations(annotation_file(root, domain, "train"), domain, self._fix)
            classes[domain] = len(train.categories)
            source = train
            if self.source == "val":
                path = annotation_file(root, domain, "val")
                source = read_annotations(path, domain, self._fix)
                if source.categories != train.categories:
                    raise self._error(f"the categories of {path} differ from those of "
                                      f"{annotation_file(root, domain, 'train')}")  # fmt: skip
            index = domain_split(source, split, DOMAIN_NAMES.index(domain), config)
            per_domain.append(
                (chosen.index(domain), [source.files[i] for i in index], source.labels[index])
            )
        domain = np.concatenate([np.full(len(f), d) for d, f, _ in per_domain])
        rank = np.concatenate([np.arange(len(f)) for _, f, _ in per_domain])
        files = [base / name for _, f, _ in per_domain for name in f]
        labels = np.concatenate([lab for _, _, lab in per_domain])
        order = np.lexsort((domain, rank))
        limit = getattr(config, f"n_{split}")
        if limit is not None:
            if limit > len(order):
                raise ConfigError(
                    f"visual_decathlon {split}: asked for the first {limit} images but the "
                    f"split holds {len(order)} of the chosen domains"
                )
            order = order[:limit]
        self.files: list[Path] = [files[i] for i in order]
        kept = labels[order]
        tasks = config.tasks
        self.targets: dict[str, Tensor] = {
            t: torch.from_numpy(np.where(domain[order] == chosen.index(t), kept, -1)) for t in tasks
        }
        self.task_specs = {t: TaskSpec(t, "classification", classes[t]) for t in tasks}
        self._size = (config.height, config.width)

    def _error(self, problem: str) -> DataFilesError:
        """The one error raised for bad files: the problem, then the fix."""
        return DataFilesError(f"visual_decathlon: {problem}; {self._fix}")

    def _image(self, i: int) -> Tensor:
        """Image ``i`` as float32 ``(3, H, W)`` in ``[0, 1]``: resized to the configured shorter
        side, centre-cropped."""
        path = self.files[i]
        height, width = self._size
        side = self.config.resize_to
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")  # grey is tiled to three channels
                w0, h0 = rgb.size
                scale = side / min(w0, h0)
                w1, h1 = max(width, round(w0 * scale)), max(height, round(h0 * scale))
                if (w1, h1) != (w0, h0):
                    rgb = rgb.resize((w1, h1), Image.Resampling.BILINEAR)
                left, top = int(round((w1 - width) / 2)), int(round((h1 - height) / 2))
                array = np.asarray(rgb.crop((left, top, left + width, top + height)))
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
        """The arguments shown by ``repr``: the shared ones, then the official split read."""
        return [*super()._repr_args(), f"source={self.source!r}"]


@DATASETS.register("visual_decathlon")
def build_visual_decathlon(
    split: str, profile: str = "cpu", **overrides: object
) -> VisualDecathlonDataset:
    """The ``visual_decathlon`` dataset: one split, read lazily from the release (module doc).

    Args:
        split: ``train``, ``val`` or ``test``.
        profile: ``smoke``, ``cpu`` or ``paper`` (selects the
            :data:`VISUAL_DECATHLON_PRESETS` entry).
        **overrides: :class:`VisualDecathlonConfig` fields, e.g. ``tasks=("gtsrb", "svhn")``
            or ``root="/data/visual_decathlon"``.
    """
    check_choice("split", split, SPLITS)
    config = build_config(VisualDecathlonConfig, VISUAL_DECATHLON_PRESETS, profile, overrides)
    root = visual_decathlon_root(config.root)
    config = dataclasses.replace(config, root=str(root), tasks=config.task_names)
    return VisualDecathlonDataset(split, root, config)


def visual_decathlon_counts(
    root: Path, domains: Sequence[str], config: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """Open every split of the given domains, read its first and last image, and return the
    number of images per split (raises :class:`DataFilesError` naming the first bad file).

    Args:
        root: a folder in the released layout (holding ``decathlon-1.0/``).
        domains: the domains to check.
        config: further :class:`VisualDecathlonConfig` overrides.
    """
    counts = {}
    for split in SPLITS:
        fields = {**(config or {}), "root": str(root), "tasks": tuple(domains)}
        dataset = build_visual_decathlon(split, "paper", **fields)
        dataset.batch([0, len(dataset) - 1])
        counts[split] = len(dataset)
    return counts
