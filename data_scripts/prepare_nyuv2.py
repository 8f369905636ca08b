"""Download (or take a local copy of) the MTAN-preprocessed NYU-v2 and place it for ``nyuv2``.

The MTAN repository (https://github.com/lorenmt/mtan) links its preprocessed NYU-v2 from a
Dropbox folder (https://www.dropbox.com/sh/86nssgwm6hm3vkb/AACrnUQ4GxpdrBbLjb6n-mWNa?dl=0)
that also holds the Cityscapes archives.  No stable direct URL of the NYU-v2 file alone is
known, so give either ``--url`` (a direct link to the NYU-v2 archive, or to the whole folder:
Dropbox's ``?dl=0`` is turned into ``?dl=1``, which serves the folder as one zip) or
``--archive`` (an archive you downloaded yourself).  Zip and tar (``.tar``, ``.tar.gz``,
``.tgz``, ...) archives work; an archive of the Dropbox folder that only holds a nested
``nyuv2*`` archive is unpacked one level further.

The script finds the folder holding ``train/`` and ``val/`` with ``image``, ``label``,
``depth`` and ``normal`` sub-folders, validates it with the ``nyuv2`` loader (file counts,
names, shapes, one sample of each split read in full), and moves it to the root
(``--root``, else ``$MTLREPRO_DATA_DIR/nyuv2``, else ``<repo root>/data/nyuv2``).  An
existing valid root is left alone; an invalid one is only replaced with ``--force``.

Usage::

    python data_scripts/prepare_nyuv2.py --archive ~/Downloads/nyuv2.zip
    python data_scripts/prepare_nyuv2.py --url 'https://www.dropbox.com/sh/...?dl=0'
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from mtlrepro.data.base import DataFilesError
from mtlrepro.data.nyuv2 import (
    NYUV2_COUNTS,
    SPLIT_FOLDERS,
    TASK_FOLDERS,
    NpyFolderDataset,
    nyuv2_fix,
    nyuv2_root,
    nyuv2_task_specs,
)

MTAN_FOLDER_URL = "https://www.dropbox.com/sh/86nssgwm6hm3vkb/AACrnUQ4GxpdrBbLjb6n-mWNa?dl=0"
_SUBFOLDERS = ("image", *TASK_FOLDERS.values())
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


class PrepareError(RuntimeError):
    """Preparation failed; the message says why and what to do."""


def direct_url(url: str) -> str:
    """The download URL: a Dropbox share link with ``dl=0`` becomes ``dl=1`` (a file, or a
    shared folder as one zip); other URLs are returned unchanged.

    Args:
        url: the URL given on the command line.
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.netloc.endswith("dropbox.com"):
        return url
    query = dict(urllib.parse.parse_qsl(parts.query))
    query["dl"] = "1"
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def download(url: str, dest: Path) -> Path:
    """Download ``url`` to the file ``dest`` (streamed; progress on stderr every 100 MB).

    Args:
        url: the URL to fetch.
        dest: the file to write.
    """
    print(f"downloading {url} -> {dest}", file=sys.stderr)
    chunk, reported = 1 << 20, 0
    with urllib.request.urlopen(url) as response, dest.open("wb") as out:
        while block := response.read(chunk):
            out.write(block)
            if out.tell() - reported >= 100 * chunk:
                reported = out.tell()
                print(f"  {reported / chunk:.0f} MB", file=sys.stderr)
    return dest


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a zip or tar archive (by content, not name).

    Args:
        path: a file.
    """
    return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)


def extract(archive: Path, dest: Path) -> None:
    """Unpack a zip or tar archive into ``dest`` (paths escaping ``dest`` are refused).

    Args:
        archive: the archive file.
        dest: the folder to unpack into (created if needed).
    """
    dest.mkdir(parents=True, exist_ok=True)
    print(f"extracting {archive} -> {dest}", file=sys.stderr)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)  # ZipFile drops absolute paths and ".." components
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
    else:
        raise PrepareError(f"{archive} is neither a zip nor a tar archive")


def find_layout(folder: Path, is_layout: Callable[[Path], bool], max_depth: int = 4) -> Path | None:
    """The first folder under ``folder`` (itself included, breadth first, at most
    ``max_depth`` levels down) for which ``is_layout`` holds; ``None`` if there is none.

    Args:
        folder: where to search.
        is_layout: whether a folder is in the dataset's released layout.
        max_depth: how many levels below ``folder`` to look.
    """
    level = [folder]
    for _ in range(max_depth + 1):
        for candidate in level:
            if is_layout(candidate):
                return candidate
        level = sorted(p for d in level for p in d.iterdir() if p.is_dir())
    return None


def is_nyuv2_layout(folder: Path) -> bool:
    """Whether ``folder`` holds ``train/`` and ``val/``, each with ``image``, ``label``,
    ``depth`` and ``normal`` sub-folders (the MTAN layout).

    Args:
        folder: a candidate folder.
    """
    return all((folder / s / sub).is_dir() for s in ("train", "val") for sub in _SUBFOLDERS)


def nested_archives(folder: Path, prefix: str = "") -> list[Path]:
    """Zip and tar archives (by name) anywhere under ``folder`` whose name starts with
    ``prefix`` (case-insensitive), e.g. ``nyu*`` inside a Dropbox folder zip.

    Args:
        folder: where to search.
        prefix: required start of the file name (``""``: any archive).
    """
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.name.lower().startswith(prefix)
        and p.name.lower().endswith(ARCHIVE_SUFFIXES)
    )


def validate(root: Path) -> dict[str, int]:
    """Open both folders of ``root`` with the ``nyuv2`` loader and read their first and last
    samples; return the number of images per folder.

    Raises :class:`~mtlrepro.data.base.DataFilesError` naming the first bad file.

    Args:
        root: a folder in the MTAN NYU-v2 layout.
    """
    counts: dict[str, int] = {}
    for folder in sorted(set(SPLIT_FOLDERS.values())):
        dataset = NpyFolderDataset(
            "nyuv2",
            folder,
            root / folder,
            TASK_FOLDERS,
            nyuv2_task_specs(),
            None,
            nyuv2_fix(root),
        )
        dataset.batch([0, len(dataset) - 1])
        counts[folder] = len(dataset)
    return counts


def _report(root: Path, counts: dict[str, int]) -> None:
    """Print the image counts, warning where they differ from the release's."""
    for folder, n in counts.items():
        note = "" if n == NYUV2_COUNTS[folder] else f" (the release has {NYUV2_COUNTS[folder]})"
        print(f"{root / folder}: {n} images{note}", file=sys.stderr)


def place_dataset(
    source: Path | str,
    root: Path,
    *,
    name: str,
    is_layout: Callable[[Path], bool],
    layout: str,
    validate: Callable[[Path], dict[str, int]],
    nested_prefix: str = "",
    force: bool = False,
) -> dict[str, int]:
    """Unpack a dataset archive, find its released layout, validate it and move it to ``root``.

    An existing valid ``root`` is left alone; an invalid one is replaced only with ``force``.
    Unpacking happens in a temporary folder next to ``root``, so the final move is a rename
    and an interrupted run leaves nothing half-placed.

    Args:
        source: a local archive (``Path``) or a URL (``str``) to download it from.
        root: where the data must end up (its parent is created if needed).
        name: the dataset's name, for messages.
        is_layout: whether a folder is in the released layout.
        layout: the layout in words, for the error when none is found.
        validate: opens a folder with the dataset's loader; returns image counts per split.
        nested_prefix: name prefix of archives inside the archive to unpack when the layout is
            not found at once (``""``: any archive).
        force: replace an existing ``root`` that is not valid.
    """
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()  # an empty folder is as good as none
    if root.exists():
        try:
            counts = validate(root)
        except DataFilesError as exc:
            if not force:
                raise PrepareError(
                    f"{root} exists but is not valid ({exc}); remove it or pass --force"
                ) from exc
        else:
            print(f"{root} already holds a valid {name}; nothing to do", file=sys.stderr)
            return counts
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=f".{root.name}-prepare-") as tmp:
        work = Path(tmp)
        archive = source if isinstance(source, Path) else download(direct_url(source), work / "dl")
        extract(archive, work / "x")
        found = find_layout(work / "x", is_layout)
        if found is None:
            for inner in nested_archives(work / "x", nested_prefix):
                extract(inner, work / "x" / f"{inner.name}.d")
            found = find_layout(work / "x", is_layout)
        if found is None:
            raise PrepareError(f"{source} holds no folder with {layout}")
        counts = validate(found)
        if root.exists():
            shutil.rmtree(root)
        found.rename(root)
    print(f"{name} is ready at {root}", file=sys.stderr)
    return counts


def prepare(source: Path | str, root: Path, force: bool = False) -> dict[str, int]:
    """Place the NYU-v2 from an archive file or URL at ``root``; return the image counts.

    Args:
        source: a local archive (``Path``) or a URL (``str``) to download it from.
        root: where the data must end up (its parent is created if needed).
        force: replace an existing ``root`` that is not valid.
    """
    layout = (
        f"train/ and val/ each holding {', '.join(_SUBFOLDERS)} sub-folders "
        "(the MTAN NYU-v2 layout)"
    )
    return place_dataset(
        source,
        root,
        name="NYU-v2",
        is_layout=is_nyuv2_layout,
        layout=layout,
        validate=validate,
        nested_prefix="nyu",
        force=force,
    )


def source_arguments(
    description: str | None, dataset: str, archive_help: str, url_help: str
) -> argparse.ArgumentParser:
    """The command line every prepare script shares: ``--url`` or ``--archive``, ``--root``
    (alias ``--dest``) and ``--force``; a script adds its own options to it.

    Args:
        description: the script's help text (its module docstring).
        dataset: the dataset's folder name under ``data/`` (for the default in the help).
        archive_help: help of ``--archive``.
        url_help: help of ``--url``.
    """
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help=url_help)
    source.add_argument("--archive", type=Path, help=archive_help)
    parser.add_argument(
        "--root",
        "--dest",
        dest="root",
        type=Path,
        default=None,
        help=f"destination (default: $MTLREPRO_DATA_DIR/{dataset} or <repo root>/data/{dataset})",
    )
    parser.add_argument("--force", action="store_true", help="replace an invalid existing root")
    return parser


def run_prepare(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    prepare_source: Callable[[Path | str], dict[str, int]],
) -> dict[str, int] | None:
    """Call ``prepare_source`` on the parsed ``--archive`` or ``--url``; on a preparation error
    print it and return ``None`` (the script then exits with status 1).

    Args:
        parser: the script's parser (reports a missing archive file as a usage error).
        args: the parsed arguments.
        prepare_source: places the dataset from an archive path or a URL, returns its counts.
    """
    if args.archive is not None and not args.archive.is_file():
        parser.error(f"--archive {args.archive} is not a file")
    try:
        return prepare_source(args.archive if args.archive is not None else args.url)
    except (PrepareError, DataFilesError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    Args:
        argv: arguments (default ``sys.argv[1:]``).
    """
    parser = source_arguments(
        __doc__,
        "nyuv2",
        "a local zip or tar archive",
        f"archive URL (MTAN's folder: {MTAN_FOLDER_URL})",
    )
    args = parser.parse_args(argv)
    root = nyuv2_root(args.root)
    counts = run_prepare(parser, args, lambda source: prepare(source, root, args.force))
    if counts is None:
        return 1
    _report(root, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
