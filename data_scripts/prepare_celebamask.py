"""Place CelebAMask-HQ (paper B) from the released archive or a URL for the ``celebamask`` loader.

CelebAMask-HQ (https://github.com/switchablenorms/CelebAMask-HQ) is distributed as one archive,
``CelebAMask-HQ.zip``, through links that need a browser (Google Drive, Baidu), so the usual
way is to download it yourself and pass ``--archive``; ``--url`` takes a direct link to a zip
or tar archive.  Archives nested in the archive are unpacked one level further when the layout
is not found at once.

The script finds the folder holding ``CelebA-HQ-img/``, ``CelebAMask-HQ-mask-anno/`` and
``CelebAMask-HQ-attribute-anno.txt`` (the release's ``CelebAMask-HQ/``), validates it with
the ``celebamask`` loader (attribute file, every image listed there present, first and last
sample of each split decoded with its mask), and moves it to the destination (``--root``, else
``$MTLREPRO_DATA_DIR/celebamask``, else ``<repo root>/data/celebamask``).  Unpacking happens in
a temporary folder next to the destination, so the final move is a rename.  An existing valid
destination is left alone; an invalid one is only replaced with ``--force``.

Usage::

    python data_scripts/prepare_celebamask.py --archive ~/Downloads/CelebAMask-HQ.zip
    python data_scripts/prepare_celebamask.py --url 'https://example.org/CelebAMask-HQ.zip'
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from prepare_nyuv2 import place_dataset, run_prepare, source_arguments

from mtlrepro.data.celebamask import (
    ATTRIBUTE_FILE,
    CELEBAMASK_COUNT,
    IMAGE_DIR,
    LAYOUT_ENTRIES,
    MASK_DIR,
    SPLIT_TENTHS,
    celebamask_counts,
    celebamask_root,
)


def is_layout(folder: Path) -> bool:
    """Whether ``folder`` holds ``CelebA-HQ-img/``, ``CelebAMask-HQ-mask-anno/`` and
    ``CelebAMask-HQ-attribute-anno.txt``.

    Args:
        folder: a candidate folder.
    """
    return (
        (folder / IMAGE_DIR).is_dir()
        and (folder / MASK_DIR).is_dir()
        and (folder / ATTRIBUTE_FILE).is_file()
    )


def prepare(source: Path | str, dest: Path, force: bool = False) -> dict[str, int]:
    """Place CelebAMask-HQ from an archive file or URL at ``dest``; return the images per split.

    Args:
        source: a local archive (``Path``) or a URL (``str``) to download it from.
        dest: where the data must end up (its parent is created if needed).
        force: replace an existing ``dest`` that is not valid.
    """
    return place_dataset(
        source,
        dest,
        name="CelebAMask-HQ",
        is_layout=is_layout,
        layout=f"{', '.join(LAYOUT_ENTRIES)} (the CelebAMask-HQ layout)",
        validate=celebamask_counts,
        nested_prefix="celeba",
        force=force,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    Args:
        argv: arguments (default ``sys.argv[1:]``).
    """
    parser = source_arguments(
        __doc__,
        "celebamask",
        "the released CelebAMask-HQ.zip",
        "direct URL of a zip or tar archive",
    )
    args = parser.parse_args(argv)
    dest = celebamask_root(args.root)
    counts = run_prepare(parser, args, lambda source: prepare(source, dest, args.force))
    if counts is None:
        return 1
    total = sum(counts.values())
    note = "" if total == CELEBAMASK_COUNT else f" (the release has {CELEBAMASK_COUNT})"
    print(f"{dest}: {total} images{note}", file=sys.stderr)
    for split, n in counts.items():
        print(f"  {split}: {n} images ({SPLIT_TENTHS[split] * 10} % split)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
