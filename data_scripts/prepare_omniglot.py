"""Place Omniglot (paper D) for the ``omniglot`` loader, in torchvision's layout.

The loader reads ``<root>/omniglot-py/images_background/<Alphabet>/characterNN/IIII_DD.png``
and ``<root>/omniglot-py/images_evaluation/...`` (both folders: paper D's 20 alphabets are
chosen from all 50).  Sources, one of:

* ``--download``: fetch the official ``images_background.zip`` and ``images_evaluation.zip``
  from https://github.com/brendenlake/omniglot (folder ``python/``);
* ``--archive FILE`` (repeatable): the two official zips, or any zip or tar archive holding the
  two folders (e.g. a zip of the repository, whose ``python/`` folder holds the two zips --
  archives named ``images_*.zip`` inside are unpacked too);
* ``--torchvision DIR``: a torchvision dataset root (``DIR/omniglot-py`` holding the unpacked
  folders or the two zips, as ``torchvision.datasets.Omniglot(DIR, download=True)`` for
  ``background=True`` and ``False`` leaves it); its files are copied, not moved.

The script gathers the two folders in a temporary folder next to the root, validates them with
the ``omniglot`` loader (the alphabets and characters it chooses, every split opened, first and
last image of each decoded), and moves the result to the root (``--root``, else
``$MTLREPRO_DATA_DIR/omniglot``, else ``<repo root>/data/omniglot``).  An existing valid root
is left alone; an invalid one is only replaced with ``--force``.

Usage::

    python data_scripts/prepare_omniglot.py --download
    python data_scripts/prepare_omniglot.py --archive images_background.zip \\
        --archive images_evaluation.zip
    python data_scripts/prepare_omniglot.py --torchvision ~/.torch/datasets
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from prepare_nyuv2 import PrepareError, download, extract, is_archive

from mtlrepro.config import ConfigError
from mtlrepro.data.base import DataFilesError
from mtlrepro.data.omniglot import FOLDERS, character_folders, omniglot_counts, omniglot_root

OFFICIAL_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{}.zip"
"""The official zips, ``{}`` = ``images_background`` or ``images_evaluation``."""


def is_image_folder(folder: Path) -> bool:
    """Whether ``folder`` is named like one of :data:`FOLDERS` and holds an alphabet folder
    with ``characterNN`` folders.

    Args:
        folder: a candidate folder.
    """
    if folder.name not in FOLDERS or not folder.is_dir():
        return False
    return any(p.is_dir() and character_folders(p) for p in folder.iterdir())


def find_image_folders(folder: Path, max_depth: int = 5) -> dict[str, Path]:
    """The first folder of each name of :data:`FOLDERS` under ``folder`` (breadth first, at
    most ``max_depth`` levels down) that :func:`is_image_folder` accepts.

    Args:
        folder: where to search.
        max_depth: how many levels below ``folder`` to look.
    """
    found: dict[str, Path] = {}
    level = [folder]
    for _ in range(max_depth + 1):
        for candidate in level:
            if candidate.name not in found and is_image_folder(candidate):
                found[candidate.name] = candidate
        level = sorted(p for d in level if d.name not in found for p in d.iterdir() if p.is_dir())
    return found


def _nested_zips(folder: Path) -> list[Path]:
    """Archives named ``images_*.zip`` under ``folder`` (e.g. the repository's ``python/``)."""
    return sorted(p for p in folder.rglob("images_*.zip") if p.is_file() and is_archive(p))


def gather(sources: Sequence[Path | str], work: Path) -> dict[str, Path]:
    """Unpack (or find) the image folders of every source under ``work``.

    Args:
        sources: archives (``Path`` to a file), folders (``Path`` to a folder: searched, its
            ``images_*.zip`` archives unpacked) or URLs (``str``: downloaded, then unpacked).
        work: an empty scratch folder.

    Returns:
        Folder name (:data:`FOLDERS`) -> the folder found; the first source wins.
    """
    found: dict[str, Path] = {}
    for i, source in enumerate(sources):
        if isinstance(source, str):
            source = download(source, work / f"download{i}.zip")
        if source.is_dir():
            here = find_image_folders(source)
            nested = _nested_zips(source)
        else:
            extract(source, work / f"x{i}")
            here = find_image_folders(work / f"x{i}")
            nested = _nested_zips(work / f"x{i}")
        for j, inner in enumerate(nested):
            if inner.stem in FOLDERS and inner.stem not in here:
                extract(inner, work / f"x{i}-{j}")
                here.update({k: v for k, v in find_image_folders(work / f"x{i}-{j}").items()
                             if k not in here})  # fmt: skip
        for name, path in here.items():
            found.setdefault(name, path)
    return found


def prepare(
    sources: Sequence[Path | str],
    root: Path,
    force: bool = False,
    config: dict[str, int] | None = None,
) -> dict[str, int]:
    """Place Omniglot from archives, folders or URLs at ``root``; return the image counts.

    Args:
        sources: see :func:`gather`.
        root: where the data must end up (its parent is created if needed).
        force: replace an existing ``root`` that is not valid.
        config: ``omniglot`` loader overrides used to validate (e.g. ``{"n_alphabets": 20}``).
    """
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()  # an empty folder is as good as none
    if root.exists():
        try:
            counts = omniglot_counts(root, config)
        except DataFilesError as exc:
            if not force:
                raise PrepareError(
                    f"{root} exists but is not valid ({exc}); remove it or pass --force"
                ) from exc
        else:
            print(f"{root} already holds a valid Omniglot; nothing to do", file=sys.stderr)
            return counts
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=f".{root.name}-prepare-") as tmp:
        work = Path(tmp)
        (work / "scratch").mkdir()
        found = gather(sources, work / "scratch")
        missing = [name for name in FOLDERS if name not in found]
        if missing:
            raise PrepareError(
                f"{', '.join(map(str, sources))} hold no {' or '.join(missing)} folder of "
                "<Alphabet>/characterNN/ folders (the official Omniglot zips)"
            )
        out = work / "omniglot"
        for name, path in found.items():
            target = out / "omniglot-py" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_relative_to(work):
                path.rename(target)
            else:
                shutil.copytree(path, target)  # a user's folder (e.g. torchvision's) is kept
        counts = omniglot_counts(out, config)
        if root.exists():
            shutil.rmtree(root)
        out.rename(root)
    print(f"Omniglot is ready at {root}", file=sys.stderr)
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
    source.add_argument("--download", action="store_true", help="fetch the two official zips")
    source.add_argument(
        "--archive", type=Path, action="append", help="a zip or tar archive (repeatable)"
    )
    source.add_argument("--torchvision", type=Path, help="a torchvision root with omniglot-py/")
    parser.add_argument(
        "--root",
        "--dest",
        dest="root",
        type=Path,
        default=None,
        help="destination (default: $MTLREPRO_DATA_DIR/omniglot or <repo root>/data/omniglot)",
    )
    parser.add_argument("--force", action="store_true", help="replace an invalid existing root")
    parser.add_argument(
        "--n-alphabets", type=int, default=20, help="alphabets the validation needs (20)"
    )
    parser.add_argument("--n-characters", type=int, default=20, help="characters per alphabet (20)")
    args = parser.parse_args(argv)
    sources: list[Path | str]
    if args.download:
        sources = [OFFICIAL_URL.format(name) for name in FOLDERS]
    elif args.archive:
        sources = list(args.archive)
        bad = [str(p) for p in sources if not Path(p).is_file()]
        if bad:
            parser.error(f"--archive {bad[0]} is not a file")
    else:
        if not (args.torchvision / "omniglot-py").is_dir():
            parser.error(f"--torchvision {args.torchvision} holds no omniglot-py folder")
        sources = [args.torchvision / "omniglot-py"]
    root = omniglot_root(args.root)
    config = {"n_alphabets": args.n_alphabets, "n_characters": args.n_characters}
    try:
        counts = prepare(sources, root, args.force, config)
    except (PrepareError, DataFilesError, ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for split, n in counts.items():
        print(f"{split}: {n} images", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
