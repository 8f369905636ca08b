"""Place Vehicle-X (paper A) from a local archive or a URL for the ``vehiclex`` loader.

Vehicle-X (https://github.com/yorkeyao/VehicleX) is distributed through links that need a
browser (Google Drive, Baidu, the AI City Challenge sign-up), so the usual way is to download
the archive yourself and pass ``--archive``; ``--url`` takes a direct link to a zip or tar
archive.  Zip and tar (``.tar``, ``.tar.gz``, ``.tgz``, ...) archives work; archives nested in
the archive are unpacked one level further when the layout is not found at once.

The script finds the folder holding ``train/``, ``val/`` and ``test/`` (images named
``VVVV_cCCC_NN.jpg``) and ``finegrained_label.xml`` (or per-split ``<split>_label.xml``
files), validates it with the ``vehiclex`` loader (names, labels of every image, first and last
image of every split decoded), and moves it to the root (``--root``, else
``$MTLREPRO_DATA_DIR/vehiclex``, else ``<repo root>/data/vehiclex``).  Unpacking happens in a
temporary folder next to the root, so the final move is a rename.  An existing valid root is
left alone; an invalid one is only replaced with ``--force``.

Usage::

    python data_scripts/prepare_vehiclex.py --archive ~/Downloads/vehiclex.zip
    python data_scripts/prepare_vehiclex.py --url 'https://example.org/vehiclex.tar.gz'
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from prepare_nyuv2 import place_dataset, run_prepare, source_arguments

from mtlrepro.data.vehiclex import LABEL_FILE, VEHICLEX_COUNTS, vehiclex_counts, vehiclex_root

SPLIT_FOLDERS = ("train", "val", "test")


def is_layout(folder: Path) -> bool:
    """Whether ``folder`` holds ``train/``, ``val/``, ``test/`` and a label file
    (``finegrained_label.xml`` or ``train_label.xml``).

    Args:
        folder: a candidate folder.
    """
    has_labels = (folder / LABEL_FILE).is_file() or (folder / "train_label.xml").is_file()
    return has_labels and all((folder / split).is_dir() for split in SPLIT_FOLDERS)


def prepare(
    source: Path | str, root: Path, force: bool = False, label_base: int = 0
) -> dict[str, int]:
    """Place Vehicle-X from an archive file or URL at ``root``; return the image counts.

    Args:
        source: a local archive (``Path``) or a URL (``str``) to download it from.
        root: where the data must end up (its parent is created if needed).
        force: replace an existing ``root`` that is not valid.
        label_base: the number of the first colour and type in the XML (0 or 1).
    """
    loader = {"label_base": label_base}
    return place_dataset(
        source,
        root,
        name="Vehicle-X",
        is_layout=is_layout,
        layout=f"train/, val/, test/ and {LABEL_FILE} (the Vehicle-X layout)",
        validate=lambda folder: vehiclex_counts(folder, loader),
        force=force,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    Args:
        argv: arguments (default ``sys.argv[1:]``).
    """
    parser = source_arguments(
        __doc__, "vehiclex", "a local zip or tar archive", "direct URL of a zip or tar archive"
    )
    parser.add_argument(
        "--label-base",
        type=int,
        choices=(0, 1),
        default=0,
        help="number of the first colorID / typeID in the XML (Vehicle-X: 0)",
    )
    args = parser.parse_args(argv)
    root = vehiclex_root(args.root)
    counts = run_prepare(
        parser, args, lambda source: prepare(source, root, args.force, args.label_base)
    )
    if counts is None:
        return 1
    for split, n in counts.items():
        note = "" if n == VEHICLEX_COUNTS[split] else f" (paper A has {VEHICLEX_COUNTS[split]})"
        print(f"{root / split}: {n} images{note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
