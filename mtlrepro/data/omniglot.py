"""``omniglot``: the real Omniglot (paper D) in torchvision's on-disk layout, read lazily.

On-disk layout (Lake et al., 2015; torchvision's ``Omniglot`` folder, or the official
``images_background.zip`` and ``images_evaluation.zip`` unpacked)::

    <root>/omniglot-py/images_background/<Alphabet>/characterNN/IIII_DD.png   # 30 alphabets
    <root>/omniglot-py/images_evaluation/<Alphabet>/characterNN/IIII_DD.png   # 20 alphabets

105x105 grayscale PNGs (dark strokes on white), ``IIII`` the character's global number and
``DD`` the drawer (01-20).  The folders are read directly (torchvision's class checks the zip
files' MD5 even with ``download=False``).

**Tasks (paper D, Section 4.1).**  "We simulate a homogeneous MTL scenario of a 20-way
classification task in a multi-task setup using Omniglot datasets by following [23]. Each task
predicts a class of characters in a single alphabet set."  Paper D's Table 1 gives the
single-task baseline 20.00x the shared bottom's parameters, i.e. 20 tasks; the paper does not
list its alphabets.  The
choice here: the alphabets of *both* folders (the background / evaluation division is a
one-shot-learning convention that multi-task learning does not use) sorted by folder name,
those with at least ``n_characters`` (20) characters kept -- Blackfoot, Inuktitut, Ojibwe (all
Canadian Aboriginal Syllabics) and Tagalog have fewer -- and the first ``n_alphabets`` (20) of
them; of each, the first ``n_characters`` character folders in name order (``character01`` ..
``character20``).  Task ``alphabet<k>`` (the names of :mod:`mtlrepro.data.glyphs`, so the same
models and code run on both) is the ``k``-th chosen alphabet
(:attr:`OmniglotDataset.alphabet_names`), its class the character's position.

**One task labels each sample**, as in ``glyphs``: the other tasks' targets are ``-1``
(ignore); ``tasks`` chooses the alphabets and keeps only their images, so one task is its
single-task data.

**Splits by drawer.**  Each character was drawn by 20 people; the drawer numbers ``DD`` found
under the chosen characters are permuted with ``numpy.random.default_rng(split_seed)`` and
split 50 / 20 / 30 % (10 / 4 / 6 of 20) into ``train`` / ``val`` / ``test``, the same drawer
numbers for every character.  Paper D states no split; 50 / 20 / 30 % is, as far as we know,
the split of the multi-task Omniglot benchmark its baselines come from (Soft Ordering [23],
CMTR) -- not checked against those papers here.  Samples are ordered by drawer (in number
order), then character, then alphabet, so a prefix of a split (``n_train`` ...) spans every
alphabet.

**Root.**  ``$MTLREPRO_DATA_DIR/omniglot`` if that variable is set, else
``<repo root>/data/omniglot``; the ``root`` config field overrides both.
``python data_scripts/prepare_omniglot.py`` places the data there.

**Loading.**  Opening a split lists the folders (a missing folder, too few alphabets or a
character without drawings stops at once with one
:class:`~mtlrepro.data.base.DataFilesError` naming it and the fix); images are read with Pillow
when a sample or batch is requested, converted to grayscale, resized to ``height`` x ``width``
(bilinear, antialiased) and returned as the documented 3-channel float image (the grey value
repeated; 1 = white paper).  Profiles: ``smoke`` the first 64 / 32 / 32 images at 28x28,
``cpu`` every image at 28x28, ``paper`` every image at Omniglot's 105x105 (paper D gives no
input size).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
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
from mtlrepro.data.glyphs import glyphs_task_specs, glyphs_tasks, select_alphabets

BACKGROUND, EVALUATION = "images_background", "images_evaluation"
FOLDERS: tuple[str, ...] = (BACKGROUND, EVALUATION)
"""The two image folders under ``<root>/omniglot-py``."""
PREPARE_COMMAND = "python data_scripts/prepare_omniglot.py"
SPLIT_SHARES: tuple[float, float, float] = (0.5, 0.2, 0.3)
"""Shares of the drawers in ``train``, ``val`` and ``test``."""
IMAGE_NAME = re.compile(r"^(\d{4})_(\d{2})\.png$")
"""Image file names: character number, drawer."""
CHARACTER_FOLDER = re.compile(r"^character\d+$")


@dataclasses.dataclass(frozen=True)
class OmniglotConfig:
    """Parameters of the ``omniglot`` dataset (validated on creation).

    Attributes:
        root: folder holding ``omniglot-py/``; ``None`` = ``$MTLREPRO_DATA_DIR/omniglot`` or
            ``<repo root>/data/omniglot`` (the built dataset's config holds the resolved path).
        height: height the images are resized to.
        width: width the images are resized to.
        n_train: use only the first ``n_train`` training images (``None`` = all).
        n_val: use only the first ``n_val`` validation images (``None`` = all).
        n_test: use only the first ``n_test`` test images (``None`` = all).
        n_alphabets: alphabets (tasks) to use (paper D: 20).
        n_characters: characters per alphabet (classes per task; paper D: 20).
        split_seed: seed of the permutation of the drawers before the split.
        tasks: the alphabets (tasks) to publish, a subset of ``alphabet0`` ..
            (``None`` = all); only their images are kept.
    """

    root: str | None = None
    height: int = 105
    width: int = 105
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    n_alphabets: int = 20
    n_characters: int = 20
    split_seed: int = 0
    tasks: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.root is not None and not self.root:
            raise ConfigError(f"{type(self).__name__}.root must be a folder path or None; got ''")
        check_range("height", self.height, 8, 4096, integer=True)
        check_range("width", self.width, 8, 4096, integer=True)
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) is not None:
                check_range(name, getattr(self, name), 1, integer=True)
        check_range("n_alphabets", self.n_alphabets, 1, 50, integer=True)
        check_range("n_characters", self.n_characters, 2, 55, integer=True)
        check_range("split_seed", self.split_seed, 0, 2**63 - 1, integer=True)
        if self.tasks is not None:
            check_task_subset("omniglot", self.tasks, glyphs_tasks(self.n_alphabets))

    @property
    def task_names(self) -> tuple[str, ...]:
        """The published tasks: :attr:`tasks`, or every alphabet's when it is ``None``."""
        return glyphs_tasks(self.n_alphabets) if self.tasks is None else self.tasks


OMNIGLOT_PRESETS: dict[str, dict[str, object]] = {
    # seconds: a few images at 28x28 (needs the real data like every profile)
    "smoke": {"height": 28, "width": 28, "n_train": 64, "n_val": 32, "n_test": 32},
    # every image at 28x28, for a CPU
    "cpu": {"height": 28, "width": 28},
    # paper D: every image at Omniglot's 105x105 (the paper gives no input size)
    "paper": {},
}
"""Per-profile :class:`OmniglotConfig` overrides; every profile reads the same files."""


def omniglot_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The Omniglot folder (holding ``omniglot-py/``): ``root`` if given, else
    ``$MTLREPRO_DATA_DIR/omniglot``, else ``<repo root>/data/omniglot``.

    Args:
        root: an explicit folder, or ``None`` for the default.
    """
    return dataset_root("omniglot", root)


def omniglot_fix(root: Path) -> str:
    """The fix named in every Omniglot file error.

    Args:
        root: the Omniglot folder the loader looked in.
    """
    return (
        f"run `{PREPARE_COMMAND}` or put Omniglot at {root} "
        f"(<root>/omniglot-py/{{{BACKGROUND},{EVALUATION}}}/<Alphabet>/characterNN/IIII_DD.png, "
        f"as torchvision's Omniglot or the official zips unpacked; set ${DATA_DIR_ENV} or the "
        f"`root` parameter to read it from elsewhere)"
    )


def drawer_splits(drawers: list[int], seed: int) -> dict[str, tuple[int, ...]]:
    """The drawers of each split: ``drawers`` permuted with ``default_rng(seed)``, then
    :data:`SPLIT_SHARES` of them (rounded; at least one each) to ``train``, ``val``, ``test``,
    each sorted.

    Args:
        drawers: the drawer numbers (at least 3).
        seed: the permutation's seed.
    """
    order = np.asarray(sorted(drawers))[np.random.default_rng(seed).permutation(len(drawers))]
    n = len(order)
    n_train = max(1, round(SPLIT_SHARES[0] * n))
    n_val = max(1, round(SPLIT_SHARES[1] * n))
    n_train = min(n_train, n - n_val - 1)
    parts = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
    return {
        split: tuple(sorted(int(d) for d in part))
        for split, part in zip(SPLITS, parts, strict=True)
    }


def list_alphabets(root: Path, fix: str) -> dict[str, Path]:
    """Every alphabet folder of both image folders: name -> folder, sorted by name.

    Args:
        root: the Omniglot folder.
        fix: what to do about missing files, appended to the error messages.
    """
    base = root / "omniglot-py"
    found: dict[str, Path] = {}
    for path in (root, base, *(base / folder for folder in FOLDERS)):
        if not path.is_dir():
            raise DataFilesError(f"omniglot: folder {path} does not exist; {fix}")
    for folder in FOLDERS:
        for alphabet in (base / folder).iterdir():
            if alphabet.is_dir() and not alphabet.name.startswith("."):
                if alphabet.name in found:
                    raise DataFilesError(
                        f"omniglot: alphabet {alphabet.name!r} is in both {found[alphabet.name]} "
                        f"and {alphabet}; {fix}"
                    )
                found[alphabet.name] = alphabet
    return dict(sorted(found.items()))


def character_folders(alphabet: Path) -> list[Path]:
    """The ``characterNN`` folders of an alphabet, in name order."""
    return sorted(
        (p for p in alphabet.iterdir() if p.is_dir() and CHARACTER_FOLDER.match(p.name)),
        key=lambda p: (len(p.name), p.name),
    )


class OmniglotDataset(LazyDataset):
    """One Omniglot split: labels in memory, images read lazily from PNG files.

    A :class:`~mtlrepro.data.base.LazyDataset`; the labels are in :attr:`targets`.

    Attributes:
        alphabet_names: task ``alphabet<k>`` -> the ``k``-th chosen alphabet's folder name,
            for every alphabet (also those not in ``tasks``).
        drawers: the drawer numbers of the split.
        files: the split's image files, in sample order.
        targets: task -> int64 tensor of all labels of the split (``-1`` = another alphabet).
    """

    def __init__(self, split: str, root: Path, config: OmniglotConfig) -> None:
        """Args:
        split: ``train``, ``val`` or ``test``.
        root: the Omniglot folder.
        config: the config the split is built from (size, alphabets, caps, tasks).
        """
        self.name = "omniglot"
        self.split = split
        self.config = config
        self._fix = omniglot_fix(root)
        alphabets = list_alphabets(root, self._fix)
        chosen: list[tuple[str, list[Path]]] = []
        for name, folder in alphabets.items():
            characters = character_folders(folder)
            if len(characters) >= config.n_characters:
                chosen.append((name, characters[: config.n_characters]))
            if len(chosen) == config.n_alphabets:
                break
        if len(chosen) < config.n_alphabets:
            raise self._error(
                f"{root / 'omniglot-py'} holds {len(chosen)} alphabets with at least "
                f"{config.n_characters} characters, {config.n_alphabets} needed (of "
                f"{len(alphabets)} alphabets)"
            )
        self.alphabet_names: tuple[str, ...] = tuple(name for name, _ in chosen)
        drawings: dict[tuple[int, int, int], Path] = {}  # (drawer, character, alphabet) -> file
        for a, (_, characters) in enumerate(chosen):
            for c, folder in enumerate(characters):
                files = [(IMAGE_NAME.match(p.name), p) for p in folder.iterdir()]
                files = [(m, p) for m, p in files if m is not None]
                if not files:
                    raise self._error(f"folder {folder} holds no IIII_DD.png images")
                for match, path in files:
                    drawings[(int(match.group(2)), c, a)] = path
        drawers = sorted({key[0] for key in drawings})
        if len(drawers) < 3:
            raise self._error(
                f"{root / 'omniglot-py'}: the chosen characters have {len(drawers)} drawers "
                f"({drawers}); at least 3 are needed for train / val / test"
            )
        self.drawers: tuple[int, ...] = drawer_splits(drawers, config.split_seed)[split]
        keys = sorted(key for key in drawings if key[0] in self.drawers)
        alphabet = np.array([key[2] for key in keys], dtype=np.int64)
        character = np.array([key[1] for key in keys], dtype=np.int64)
        tasks = config.task_names
        rows, targets = select_alphabets(alphabet, character, tasks, None)
        limit = getattr(config, f"n_{split}")
        if limit is not None:
            if limit > len(rows):
                raise ConfigError(
                    f"omniglot {split}: asked for the first {limit} images but the split "
                    f"holds {len(rows)} of the chosen alphabets"
                )
            rows, targets = rows[:limit], {t: v[:limit] for t, v in targets.items()}
        self.files: list[Path] = [drawings[keys[i]] for i in rows]
        self.targets: dict[str, Tensor] = {
            t: torch.from_numpy(v.astype(np.int64)) for t, v in targets.items()
        }
        self.task_specs = glyphs_task_specs(config.n_alphabets, config.n_characters, tasks)
        self._size = (config.height, config.width)

    def _error(self, problem: str) -> DataFilesError:
        """The one error raised for bad files: the problem, then the fix."""
        return DataFilesError(f"omniglot: {problem}; {self._fix}")

    def _image(self, i: int) -> Tensor:
        """Image ``i`` as float32 ``(3, H, W)`` in ``[0, 1]`` at the configured size."""
        path = self.files[i]
        height, width = self._size
        try:
            with Image.open(path) as img:
                grey = img.convert("L")
                if grey.size != (width, height):
                    grey = grey.resize((width, height), Image.Resampling.BILINEAR)
                array = np.asarray(grey)
        except (OSError, ValueError) as exc:
            raise self._error(f"file {path} is not a readable image ({exc})") from exc
        image = convert_stored(torch.from_numpy(array.copy()), None)
        return image.unsqueeze(0).expand(3, -1, -1).contiguous()

    def __len__(self) -> int:
        return len(self.files)

    def _sample(self, i: int) -> dict[str, Tensor]:
        """Sample ``i``: its image (read from disk now) and one int64 label per task.

        Args:
            i: the sample's index.
        """
        return {"image": self._image(i), **{t: labels[i] for t, labels in self.targets.items()}}

    def _repr_args(self) -> list[str]:
        """The arguments shown by ``repr``: the shared ones, then the drawers."""
        return [*super()._repr_args(), f"drawers={list(self.drawers)}"]


@DATASETS.register("omniglot")
def build_omniglot(split: str, profile: str = "cpu", **overrides: object) -> OmniglotDataset:
    """The ``omniglot`` dataset: one split, read lazily from torchvision's layout (module doc).

    Args:
        split: ``train``, ``val`` or ``test``.
        profile: ``smoke``, ``cpu`` or ``paper`` (selects the :data:`OMNIGLOT_PRESETS` entry).
        **overrides: :class:`OmniglotConfig` fields, e.g. ``tasks=("alphabet0", "alphabet1")``
            or ``root="/data/omniglot"``.
    """
    check_choice("split", split, SPLITS)
    config = build_config(OmniglotConfig, OMNIGLOT_PRESETS, profile, overrides)
    root = omniglot_root(config.root)
    config = dataclasses.replace(config, root=str(root), tasks=config.task_names)
    return OmniglotDataset(split, root, config)


def omniglot_counts(root: Path, config: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Open every split of an Omniglot folder, read its first and last image, and return the
    number of images per split (raises :class:`DataFilesError` naming the first bad file).

    Args:
        root: a folder in the Omniglot layout (holding ``omniglot-py/``).
        config: :class:`OmniglotConfig` overrides (e.g. ``{"n_alphabets": 3}``).
    """
    counts = {}
    for split in SPLITS:
        dataset = build_omniglot(split, "paper", **{**(config or {}), "root": str(root)})
        dataset.batch([0, len(dataset) - 1])
        counts[split] = len(dataset)
    return counts
