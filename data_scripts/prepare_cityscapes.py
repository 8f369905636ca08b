"""Place the MTAN-preprocessed Cityscapes (paper D) for the ``cityscapes`` loader.

MTAN (https://github.com/lorenmt/mtan) released Cityscapes with 2-, 7- and 19-class labels and
disparity in two sizes; its README (June 2019 update) links them from Dropbox:

* 128x256 (651 MB): https://www.dropbox.com/s/lg2ktu7o8hzwf99/cityscapes2.zip?dl=0
* 256x512 (2.42 GB): https://www.dropbox.com/s/q2333k4eyrnezbh/cityscapes.zip?dl=0

(later README versions point to the Dropbox folder that also holds NYU-v2,
https://www.dropbox.com/sh/86nssgwm6hm3vkb/AACrnUQ4GxpdrBbLjb6n-mWNa?dl=0).  Give either
``--archive`` (an archive you downloaded yourself) or ``--url`` (a direct link; Dropbox's
``?dl=0`` is turned into ``?dl=1``).  Zip and tar archives work; an archive that only holds a
nested ``cityscapes*`` archive (e.g. the Dropbox folder as one zip) is unpacked one level
further.  The ``paper`` profile reads 128x256: the small archive is enough (a 256x512 one is
resized when loaded).

The script finds the folder holding ``train/`` and ``val/`` with ``image``, ``depth`` and
``label_<n>`` sub-folders, validates it with the ``cityscapes`` loader (file counts, names,
shapes of every file of every label set present, first and last sample of each folder read in
full), and moves it to the root (``--root``, else ``$MTLREPRO_DATA_DIR/cityscapes``, else
``<repo root>/data/cityscapes``).  An existing valid root is left alone; an invalid one is only
replaced with ``--force``.

Usage::

    python data_scripts/prepare_cityscapes.py --archive ~/Downloads/cityscapes2.zip
    python data_scripts/prepare_cityscapes.py --url 'https://www.dropbox.com/s/...?dl=0'
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from prepare_nyuv2 import place_dataset, run_prepare, source_arguments

from mtlrepro.data.cityscapes import (
    CITYSCAPES_COUNTS,
    CITYSCAPES_LABEL_SETS,
    DEFAULT_CLASSES,
    SPLIT_FOLDERS,
    cityscapes_root,
    label_folder,
    open_cityscapes_folder,
)
from mtlrepro.tasks import TaskSpec

SMALL_ARCHIVE_URL = "https://www.dropbox.com/s/lg2ktu7o8hzwf99/cityscapes2.zip?dl=0"
FOLDERS = tuple(sorted(set(SPLIT_FOLDERS.values())))
"""The layout's folders: ``train`` and ``val``."""


def label_sets(folder: Path) -> tuple[int, ...]:
    """The label sets (class counts) whose ``label_<n>`` folder is in both ``train/`` and
    ``val/`` of ``folder``.

    Args:
        folder: a candidate folder.
    """
    return tuple(
        n
        for n in CITYSCAPES_LABEL_SETS
        if all((folder / f / label_folder(n)).is_dir() for f in FOLDERS)
    )


def is_cityscapes_layout(folder: Path) -> bool:
    """Whether ``folder`` holds ``train/`` and ``val/``, each with ``image`` and ``depth``
    sub-folders and a common ``label_<n>`` one (the MTAN layout).

    Args:
        folder: a candidate folder.
    """
    fields = all((folder / f / sub).is_dir() for f in FOLDERS for sub in ("image", "depth"))
    return fields and bool(label_sets(folder))


def validate(root: Path) -> dict[str, int]:
    """Open both folders of ``root`` with the ``cityscapes`` loader, every label set present
    (the default ``label_19`` if none is), and read their first and last samples; return the
    number of images per folder.

    Raises :class:`~mtlrepro.data.base.DataFilesError` naming the first bad file.

    Args:
        root: a folder in the MTAN Cityscapes layout.
    """
    sets = label_sets(root) or (DEFAULT_CLASSES,)
    specs = {label_folder(n): TaskSpec(label_folder(n), "segmentation", n) for n in sets}
    specs["depth"] = TaskSpec("depth", "depth")
    subfolders = {task: task for task in specs}
    counts: dict[str, int] = {}
    for folder in FOLDERS:
        dataset = open_cityscapes_folder(root, folder, specs, subfolders)
        dataset.batch([0, len(dataset) - 1])
        counts[folder] = len(dataset)
    return counts


def _report(root: Path, counts: dict[str, int]) -> None:
    """Print the image counts and size and the label sets, warning where the counts differ
    from the release's or the default label set is missing."""
    height, width = np.load(root / "train" / "image" / "0.npy", mmap_mode="r").shape[:2]
    for folder, n in counts.items():
        release = CITYSCAPES_COUNTS[folder]
        note = "" if n == release else f" (the release has {release})"
        print(f"{root / folder}: {n} images of {height}x{width}{note}", file=sys.stderr)
    sets = label_sets(root)
    print(f"label sets: {', '.join(label_folder(n) for n in sets)}", file=sys.stderr)
    if DEFAULT_CLASSES not in sets:
        print(
            f"warning: no {label_folder(DEFAULT_CLASSES)}: the default classes="
            f"{DEFAULT_CLASSES} cannot be read; pass classes={sets[0]} to the dataset",
            file=sys.stderr,
        )


def prepare(source: Path | str, root: Path, force: bool = False) -> dict[str, int]:
    """Place the Cityscapes from an archive file or URL at ``root``; return the image counts.

    Args:
        source: a local archive (``Path``) or a URL (``str``) to download it from.
        root: where the data must end up (its parent is created if needed).
        force: replace an existing ``root`` that is not valid.
    """
    layout = (
        "train/ and val/ each holding image, depth and label_<n> sub-folders "
        "(the MTAN Cityscapes layout)"
    )
    return place_dataset(
        source,
        root,
        name="Cityscapes",
        is_layout=is_cityscapes_layout,
        layout=layout,
        validate=validate,
        nested_prefix="cityscapes",
        force=force,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    Args:
        argv: arguments (default ``sys.argv[1:]``).
    """
    parser = source_arguments(
        __doc__,
        "cityscapes",
        "a local zip or tar archive (e.g. MTAN's cityscapes2.zip, 128x256)",
        f"archive URL (MTAN's 128x256 archive: {SMALL_ARCHIVE_URL})",
    )
    args = parser.parse_args(argv)
    root = cityscapes_root(args.root)
    counts = run_prepare(parser, args, lambda source: prepare(source, root, args.force))
    if counts is None:
        return 1
    _report(root, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
