"""Tests of the real Omniglot loader (``omniglot``, torchvision's layout) and
data_scripts/prepare_omniglot.py, on the tiny fixture of ``real_fixtures.py``.

``omniglot`` is not in ``test_real_datasets.py``'s shared contract: there a ``tasks`` subset
keeps every sample and the shared loop trains on every target, while here a task is an
alphabet, choosing tasks chooses the images, and the other alphabets' targets are ``-1``.
The same promises (errors naming the file and the fix, caps, root resolution) are tested here.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image
from real_fixtures import (
    OMNIGLOT_CHARACTERS,
    OMNIGLOT_CHOSEN,
    OMNIGLOT_SIZE,
    write_omniglot,
)

from mtlrepro.config import ConfigError
from mtlrepro.data import get_dataset
from mtlrepro.data.base import DATA_DIR_ENV, SPLITS, DataFilesError, LazyDataset
from mtlrepro.data.glyphs import sample_tasks
from mtlrepro.data.omniglot import OmniglotDataset, drawer_splits, omniglot_root
from mtlrepro.tasks import TaskSpec

FIX = "python data_scripts/prepare_omniglot.py"
SMALL = {"n_alphabets": 3, "n_characters": OMNIGLOT_CHARACTERS}
LENGTHS = {"train": 18, "val": 9, "test": 18}  # drawers 2 / 1 / 2 of 5, x 3 characters x 3


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The Omniglot fixture under ``tmp_path / "omniglot"``."""
    return write_omniglot(tmp_path / "omniglot")


def open_split(root: Path, split: str, **overrides: object) -> OmniglotDataset:
    """One split of the fixture, ``paper`` preset at the files' 12x12, 3 alphabets of 3
    characters."""
    size = {"height": OMNIGLOT_SIZE, "width": OMNIGLOT_SIZE}
    fields = {"root": str(root), **SMALL, **size, **overrides}
    return get_dataset("omniglot", split, "paper", **fields)


def described(path: Path) -> tuple[int, int, int]:
    """(alphabet position among the chosen, character position, drawer) from a file's path."""
    alphabet = OMNIGLOT_CHOSEN.index(path.parent.parent.name)
    character = int(path.parent.name.removeprefix("character")) - 1
    return alphabet, character, int(path.stem.split("_")[1])


def test_splits_have_the_documented_samples_labels_and_order(root: Path) -> None:
    specs = {f"alphabet{a}": TaskSpec(f"alphabet{a}", "classification", 3) for a in range(3)}
    drawers = set()
    for split in SPLITS:
        data = open_split(root, split)
        assert isinstance(data, LazyDataset) and data.alphabet_names == OMNIGLOT_CHOSEN
        assert (len(data), data.image_size, data.task_specs) == (LENGTHS[split], (12, 12), specs)
        assert data.config.tasks == tuple(specs) and data.config.root == str(root)
        assert not drawers & set(data.drawers)
        drawers |= set(data.drawers)
        batch = data.batch(range(len(data)))
        assert batch["image"].dtype == torch.float32 and batch["image"].shape[1:] == (3, 12, 12)
        assert torch.equal(batch["image"][:, 0], batch["image"][:, 2])  # grey repeated
        keys = [described(path) for path in data.files]
        assert keys == sorted(keys, key=lambda k: (k[2], k[1], k[0]))  # drawer, character, alph.
        assert {k[2] for k in keys} == set(data.drawers)
        tasks = sample_tasks(data)
        for i, (alphabet, character, _) in enumerate(keys):
            assert int(tasks[i]) == alphabet
            for a, task in enumerate(specs):
                assert int(batch[task][i]) == (character if a == alphabet else -1)
            pixels = np.asarray(Image.open(data.files[i]).convert("L"), dtype=np.float32) / 255
            assert np.array_equal(batch["image"][i, 1].numpy(), pixels)
    assert drawers == {1, 2, 3, 4, 5}
    assert len({(k, v) for k, v in drawer_splits([1, 2, 3, 4, 5], 0).items()}) == 3


def test_the_split_is_deterministic_and_follows_the_seed(root: Path) -> None:
    for split in SPLITS:
        assert open_split(root, split).files == open_split(root, split).files
    assert drawer_splits(list(range(1, 21)), 0) == drawer_splits(list(range(1, 21)), 0)
    sizes = {split: len(d) for split, d in drawer_splits(list(range(1, 21)), 0).items()}
    assert sizes == {"train": 10, "val": 4, "test": 6}  # 50 / 20 / 30 % of Omniglot's 20
    seeds = {drawer_splits(list(range(1, 21)), seed)["test"] for seed in range(5)}
    assert len(seeds) == 5


def test_size_tasks_and_caps(root: Path) -> None:
    data = open_split(root, "train", height=28, width=20)
    assert data.image_size == (28, 20) and data[0]["image"].shape == (3, 28, 20)
    one = open_split(root, "train", tasks=["alphabet2"])
    assert list(one.task_specs) == ["alphabet2"] and len(one) == LENGTHS["train"] // 3
    assert all(p.parent.parent.name == "Latin" for p in one.files)
    assert int(one.targets["alphabet2"].min()) == 0  # single-task data: no ignored target
    two = open_split(root, "test", tasks=["alphabet2", "alphabet0"])
    assert list(two.task_specs) == ["alphabet2", "alphabet0"] and len(two) == 12
    assert sample_tasks(two).tolist() == [1, 0] * 6  # Angelic (alphabet0) first per character
    capped = open_split(root, "val", n_val=4)
    assert capped.files == open_split(root, "val").files[:4]
    message = "omniglot val: asked for the first 10 images but the split holds 9"
    with pytest.raises(ConfigError, match=re.escape(message)):
        open_split(root, "val", n_val=10)
    smoke = get_dataset("omniglot", "train", "smoke", root=str(root), **SMALL, n_train=18)
    assert smoke.image_size == (28, 28) and len(smoke) == 18


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"root": ""}, "OmniglotConfig.root must be a folder path or None; got ''"),
        ({"height": 4}, "height must be an integer in [8, 4096]; got 4"),
        ({"n_train": 0}, "n_train must be an integer in [1, inf); got 0"),
        ({"n_alphabets": 0}, "n_alphabets must be an integer in [1, 50]; got 0"),
        ({"n_characters": 1}, "n_characters must be an integer in [2, 55]; got 1"),
        ({"tasks": ["alphabet3"]}, "unknown omniglot task 'alphabet3'; allowed: 'alphabet0'"),
        ({"tasks": ["alphabet0", "alphabet0"]}, "tasks repeat a task"),
        ({"max_images": 3}, "unknown OmniglotConfig parameter 'max_images'; allowed: root"),
    ],
)
def test_config_rejects_bad_values(root: Path, overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_dataset("omniglot", "val", "paper", **{"root": str(root), **SMALL, **overrides})


def check_error(error: DataFilesError, root: Path, named: Path | str, problem: str) -> None:
    """The error names the dataset, ``named`` and ``problem``, then the prepare command, the
    layout expected at ``root`` and how to read it from elsewhere."""
    what, fix = str(error).split("; run ", 1)
    assert what.startswith("omniglot: ") and str(named) in what and problem in what, what
    assert fix.startswith(f"`{FIX}` or put Omniglot at {root} ("), fix
    assert "<root>/omniglot-py/{images_background,images_evaluation}/<Alphabet>/" in fix
    assert f"set ${DATA_DIR_ENV} or the `root` parameter" in fix


@pytest.mark.parametrize(
    "missing", ["", "omniglot-py", "omniglot-py/images_background", "omniglot-py/images_evaluation"]
)
def test_missing_data_stop_with_one_error_naming_the_folder_and_the_fix(
    root: Path, tmp_path: Path, missing: str
) -> None:
    if missing:
        named = root / missing
        shutil.rmtree(named)
    else:
        root = named = tmp_path / "nowhere"
    with pytest.raises(DataFilesError) as info:
        open_split(root, "train")
    check_error(info.value, root, named, "does not exist")


def test_too_few_alphabets_or_unreadable_images_are_named(root: Path) -> None:
    with pytest.raises(DataFilesError) as info:
        open_split(root, "train", n_alphabets=4)
    check_error(info.value, root, root / "omniglot-py", "holds 3 alphabets with at least 3")
    data = open_split(root, "val")
    data.files[1].write_bytes(b"not a png")
    assert data[0]["image"].shape == (3, 12, 12)  # the others still read
    with pytest.raises(DataFilesError) as info:
        data.batch([0, 1])
    check_error(info.value, root, data.files[1], "is not a readable image")


def test_root_is_the_override_then_the_data_dir_variable(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(root.parent))
    assert omniglot_root() == root and omniglot_root("/elsewhere") == Path("/elsewhere")
    data = get_dataset("omniglot", "test", "cpu", **SMALL)
    assert data.config.root == str(root) and data.image_size == (28, 28)
    assert len(data) == LENGTHS["test"]


# ---------------------------------------------------------------- data_scripts/prepare_omniglot


@pytest.fixture
def prepare_script(load_data_script: Callable[[str], ModuleType]) -> ModuleType:
    """``data_scripts/prepare_omniglot.py`` imported as a module."""
    return load_data_script("prepare_omniglot")


def _small(argv: list[str]) -> list[str]:
    return [*argv, "--n-alphabets", "3", "--n-characters", "3"]


def test_prepare_places_the_official_zips_and_a_torchvision_folder(
    root: Path,
    tmp_path: Path,
    prepare_script: ModuleType,
    capsys: pytest.CaptureFixture[str],
    zip_folder: Callable[[Path, Path, str], Path],
) -> None:
    zips = [
        zip_folder(root / "omniglot-py" / name, tmp_path / f"{name}.zip", name)
        for name in ("images_background", "images_evaluation")
    ]
    dest = tmp_path / "data" / "omniglot"
    argv = ["--archive", str(zips[0]), "--archive", str(zips[1]), "--root", str(dest)]
    assert prepare_script.main(_small(argv)) == 0
    assert "train: 18 images" in capsys.readouterr().err
    assert open_split(dest, "test").alphabet_names == OMNIGLOT_CHOSEN
    assert [p.name for p in dest.parent.iterdir()] == ["omniglot"]  # no temporary leftovers
    assert prepare_script.main(_small(argv)) == 0
    assert "already holds a valid Omniglot" in capsys.readouterr().err
    # torchvision's root: one folder unpacked, the other still a zip; the source is kept.
    vision = tmp_path / "vision"
    (vision / "omniglot-py").mkdir(parents=True)
    (root / "omniglot-py" / "images_background").rename(
        vision / "omniglot-py" / "images_background"
    )
    zips[1].rename(vision / "omniglot-py" / "images_evaluation.zip")
    other = tmp_path / "other"
    assert prepare_script.main(_small(["--torchvision", str(vision), "--root", str(other)])) == 0
    assert open_split(other, "val").files[0].stat().st_size > 0
    assert (vision / "omniglot-py" / "images_background" / "Greek").is_dir()


def test_prepare_rejects_an_archive_without_both_folders(
    root: Path,
    tmp_path: Path,
    prepare_script: ModuleType,
    capsys: pytest.CaptureFixture[str],
    zip_folder: Callable[[Path, Path, str], Path],
) -> None:
    only = zip_folder(
        root / "omniglot-py" / "images_background", tmp_path / "bg.zip", "x/images_background"
    )
    dest = tmp_path / "dest"
    assert prepare_script.main(_small(["--archive", str(only), "--root", str(dest)])) == 1
    assert "hold no images_evaluation folder" in capsys.readouterr().err
    assert not dest.exists()
    both = zip_folder(root, tmp_path / "both.zip", "omniglot")
    argv = ["--archive", str(both), "--root", str(dest), "--n-alphabets", "4"]
    assert prepare_script.main([*argv, "--n-characters", "3"]) == 1
    assert "holds 3 alphabets with at least 3 characters, 4 needed" in capsys.readouterr().err
    assert not dest.exists()
