"""Place the Visual Decathlon (paper E) for the ``visual_decathlon`` loader, in its released
layout.

The loader reads ``<root>/decathlon-1.0/annotations/<domain>_{train,val}.json`` and the images
under ``<root>/decathlon-1.0/data/<domain>/{train,val}/``.  The release comes as
``decathlon-1.0-devkit.tar.gz`` (``decathlon-1.0/annotations/``, all ten domains),
``decathlon-1.0-data.tar.gz`` (one ``<domain>.tar`` per domain but ImageNet, each holding
``<domain>/{train,val,test}/...``) and ``decathlon-1.0-data-imagenet.tar`` (``imagenet12/``).
Sources, one of:

* ``--download``: fetch the devkit and the data archive from the authors' site (with
  ``--imagenet``, the ImageNet archive too);
* ``--archive FILE`` (repeatable): the released archives (or any zip or tar archive holding
  an ``annotations/`` folder of ``*_train.json`` files, ``<domain>/`` image folders or
  ``<domain>.tar`` archives, which are unpacked too);
* ``--folder DIR`` (repeatable): an unpacked copy (e.g. the ``decathlon-1.0`` folder of the
  authors' ``download_data.sh``); its files are copied, not moved.

The script gathers the annotations and the image folders in a temporary folder next to the
root, validates them with the ``visual_decathlon`` loader (every split of every domain of
``--domains`` opened, its first and last image decoded), and moves the result to the root
(``--root``, else ``$MTLREPRO_DATA_DIR/visual_decathlon``, else ``<repo root>/data/
visual_decathlon``).  An existing valid root is left alone; an invalid one is only replaced
with ``--force``.

Usage::

    python data_scripts/prepare_visual_decathlon.py --download
    python data_scripts/prepare_visual_decathlon.py --archive decathlon-1.0-devkit.tar.gz \\
        --archive decathlon-1.0-data.tar.gz
    python data_scripts/prepare_visual_decathlon.py --folder ~/data/decathlon-1.0
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from prepare_nyuv2 import ARCHIVE_SUFFIXES, PrepareError, download, extract

from mtlrepro.config import ConfigError
from mtlrepro.data.base import DataFilesError
from mtlrepro.data.visual_decathlon import (
    DOMAIN_NAMES,
    PAPER_DOMAINS,
    RELEASE_FOLDER,
    visual_decathlon_counts,
    visual_decathlon_root,
)

SITE = "http://www.robots.ox.ac.uk/~vgg/share/"
DEVKIT_URL = SITE + "decathlon-1.0-devkit.tar.gz"
DATA_URL = SITE + "decathlon-1.0-data.tar.gz"
IMAGENET_URL = "http://www.image-net.org/image/decathlon/decathlon-1.0-data-imagenet.tar"
"""The release's archives (the URLs of the authors' ``download_data.sh`` and of TFDS)."""
SPLIT_FOLDERS = ("train", "val", "test")


def is_annotation_folder(folder: Path) -> bool:
    """Whether ``folder`` is named ``annotations`` and holds a ``*_train.json`` file."""
    return folder.name == "annotations" and any(folder.glob("*_train.json"))


def is_domain_folder(folder: Path) -> bool:
    """Whether ``folder`` is named like a domain and holds a ``train``, ``val`` or ``test``
    folder."""
    return folder.name in DOMAIN_NAMES and any((folder / s).is_dir() for s in SPLIT_FOLDERS)


def find_parts(folder: Path, max_depth: int = 6) -> tuple[list[Path], dict[str, Path]]:
    """The annotation folders and the first folder of each domain under ``folder`` (breadth
    first, at most ``max_depth`` levels down; neither is searched further).

    Args:
        folder: where to search.
        max_depth: how many levels below ``folder`` to look.
    """
    annotations: list[Path] = []
    domains: dict[str, Path] = {}
    level = [folder]
    for _ in range(max_depth + 1):
        deeper = []
        for candidate in level:
            if is_annotation_folder(candidate):
                annotations.append(candidate)
            elif is_domain_folder(candidate):
                domains.setdefault(candidate.name, candidate)
            else:
                deeper += sorted(p for p in candidate.iterdir() if p.is_dir())
        level = deeper
    return annotations, domains


def domain_archives(folder: Path) -> list[Path]:
    """Archives named after a domain (``aircraft.tar``, ...) anywhere under ``folder``."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.name.endswith(ARCHIVE_SUFFIXES)
        and any(p.name == f"{d}{s}" for d in DOMAIN_NAMES for s in ARCHIVE_SUFFIXES)
    )


def gather(sources: Sequence[Path | str], work: Path, out: Path) -> tuple[int, list[str]]:
    """Unpack (or find) the annotations and image folders of every source into ``out`` (the
    ``decathlon-1.0`` folder being built).

    Args:
        sources: archives (``Path`` to a file), folders (``Path`` to a folder: copied) or URLs
            (``str``: downloaded, then unpacked).
        work: an empty scratch folder.
        out: the ``decathlon-1.0`` folder to fill (``annotations/`` and ``data/<domain>/``).

    Returns:
        The number of annotation files placed and the domains whose images were placed; the
        first source holding a file or domain wins.
    """
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    placed: list[str] = []

    def place(tree: Path) -> None:
        annotations, domains = find_parts(tree)
        for folder in annotations:
            for path in sorted(folder.glob("*.json")):
                if not (out / "annotations" / path.name).exists():
                    shutil.copy2(path, out / "annotations" / path.name)
        for name, folder in domains.items():
            target = out / "data" / name
            if target.exists():
                continue
            if folder.is_relative_to(work):
                folder.rename(target)
            else:
                shutil.copytree(folder, target)  # a user's folder is kept
            placed.append(name)

    for i, source in enumerate(sources):
        if isinstance(source, str):
            source = download(source, work / f"download{i}{_suffix(source)}")
        tree = source if source.is_dir() else work / f"x{i}"
        if not source.is_dir():
            extract(source, tree)
        place(tree)
        for j, inner in enumerate(domain_archives(tree)):
            if inner.name.split(".")[0] not in placed:  # not unpacked next to its archive
                extract(inner, work / f"x{i}-{j}")
                place(work / f"x{i}-{j}")
    return len(list((out / "annotations").glob("*.json"))), placed


def _suffix(url: str) -> str:
    """The archive suffix of a URL's file name (``.tar.gz``, ...), or ``""``."""
    name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    return next((s for s in ARCHIVE_SUFFIXES if name.endswith(s)), "")


def prepare(
    sources: Sequence[Path | str],
    root: Path,
    domains: Sequence[str] = PAPER_DOMAINS,
    force: bool = False,
) -> dict[str, int]:
    """Place the Visual Decathlon from archives, folders or URLs at ``root``; return the image
    counts per split (of the loader: ``test`` is the official ``val``).

    Args:
        sources: see :func:`gather`.
        root: where the data must end up (its parent is created if needed).
        domains: the domains that must be present (validated with the loader).
        force: replace an existing ``root`` that is not valid.
    """
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()  # an empty folder is as good as none
    if root.exists():
        try:
            counts = visual_decathlon_counts(root, domains)
        except DataFilesError as exc:
            if not force:
                raise PrepareError(
                    f"{root} exists but is not valid ({exc}); remove it or pass --force"
                ) from exc
        else:
            print(f"{root} already holds a valid Visual Decathlon; nothing to do", file=sys.stderr)
            return counts
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=f".{root.name}-prepare-") as tmp:
        work = Path(tmp)
        (work / "scratch").mkdir()
        out = work / "visual_decathlon"
        n_files, placed = gather(sources, work / "scratch", out / RELEASE_FOLDER)
        missing = [d for d in domains if d not in placed]
        if n_files == 0 or missing:
            what = "no annotations/ folder of *_train.json files" if n_files == 0 else (
                f"no image folder of {', '.join(missing)}")  # fmt: skip
            raise PrepareError(
                f"{', '.join(map(str, sources))} hold {what} (the released devkit and data "
                "archives are both needed)"
            )
        try:
            counts = visual_decathlon_counts(out, domains)
        except DataFilesError as exc:
            raise PrepareError(f"the gathered files are not valid: {exc}") from exc
        if root.exists():
            shutil.rmtree(root)
        out.rename(root)
    print(f"Visual Decathlon ({', '.join(domains)}) is ready at {root}", file=sys.stderr)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    Args:
        argv: arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--download", action="store_true", help="fetch the devkit and data")
    source.add_argument(
        "--archive", type=Path, action="append", help="a zip or tar archive (repeatable)"
    )
    source.add_argument(
        "--folder", type=Path, action="append", help="an unpacked copy (repeatable; copied)"
    )
    parser.add_argument(
        "--imagenet", action="store_true", help="with --download: the ImageNet archive too"
    )
    parser.add_argument(
        "--root",
        "--dest",
        dest="root",
        type=Path,
        default=None,
        help="destination (default: $MTLREPRO_DATA_DIR/visual_decathlon or "
        "<repo root>/data/visual_decathlon)",
    )
    parser.add_argument("--force", action="store_true", help="replace an invalid existing root")
    parser.add_argument(
        "--domains",
        nargs="+",
        default=None,
        choices=DOMAIN_NAMES,
        metavar="DOMAIN",
        help="domains that must be present (default: paper E's nine, imagenet12 with --imagenet)",
    )
    args = parser.parse_args(argv)
    sources: list[Path | str]
    if args.download:
        sources = [DEVKIT_URL, DATA_URL, *([IMAGENET_URL] if args.imagenet else [])]
    else:
        sources = list(args.archive or args.folder)
        kind = "--archive" if args.archive else "--folder"
        check = Path.is_file if args.archive else Path.is_dir
        bad = [str(p) for p in sources if not check(Path(p))]
        if bad:
            parser.error(f"{kind} {bad[0]} is not a {'file' if args.archive else 'folder'}")
    domains = args.domains or [*PAPER_DOMAINS, *(["imagenet12"] if args.imagenet else [])]
    root = visual_decathlon_root(args.root)
    try:
        counts = prepare(sources, root, domains, args.force)
    except (PrepareError, DataFilesError, ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for split, n in counts.items():
        note = " (the official val split)" if split == "test" else ""
        print(f"{split}: {n} images{note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
