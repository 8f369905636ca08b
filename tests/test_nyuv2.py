"""Tests of what only NYU-v2's MTAN layout has (and data_scripts/prepare_nyuv2.py), on the
tiny fixture of ``real_fixtures.py``: 3 train and 2 val images of 16x24, float64 like the
release.  The contract every real-data loader keeps (splits, dtypes, batches, caps, tasks,
root, profiles, missing files, training) is tested in ``test_real_datasets.py``."""

from __future__ import annotations

import re
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from real_fixtures import NYUV2_HEIGHT, NYUV2_WIDTH, NyuArrays, nyuv2_arrays, write_nyuv2

from mtlrepro.config import ConfigError
from mtlrepro.data import get_dataset
from mtlrepro.data.base import DataFilesError
from mtlrepro.data.nyuv2 import build_nyuv2

H, W = NYUV2_HEIGHT, NYUV2_WIDTH
FIX = "python data_scripts/prepare_nyuv2.py"
Arrays = NyuArrays


@pytest.fixture
def arrays() -> Arrays:
    """The fixture's source arrays (seed 0)."""
    return nyuv2_arrays()


@pytest.fixture
def root(tmp_path: Path, arrays: Arrays) -> Path:
    """The fixture written in the MTAN layout under ``tmp_path/nyuv2``."""
    return write_nyuv2(tmp_path / "nyuv2", arrays)


def open_split(root: Path, split: str, **overrides: object) -> torch.utils.data.Dataset:
    """A split of the fixture at its native size (the ``paper`` preset)."""
    return get_dataset("nyuv2", split, "paper", root=str(root), **overrides)


def test_channels_first_conversion_preserves_every_value(root: Path, arrays: Arrays) -> None:
    data = open_split(root, "train")
    for i in range(len(data)):
        sample = data[i]
        src = {k: torch.from_numpy(v[i]) for k, v in arrays["train"].items()}
        assert torch.equal(sample["image"], src["image"].permute(2, 0, 1).float())
        assert torch.equal(sample["segmentation"], src["label"].long())
        assert torch.equal(sample["depth"], src["depth"].permute(2, 0, 1).float())
        assert torch.equal(sample["normal"], src["normal"].permute(2, 0, 1).float())


def test_ignored_and_invalid_pixels_keep_their_conventions(root: Path) -> None:
    sample = open_split(root, "val")[1]
    assert (sample["segmentation"][0] == -1).all() and (sample["segmentation"][1:] >= 0).all()
    assert (sample["depth"][0, 1] == 0).all() and (sample["depth"][0, 2:] > 0).all()
    norms = sample["normal"].norm(dim=0)
    assert (norms[3] == 0).all()
    # valid normals are unit vectors up to the float64 -> float32 rounding
    assert torch.allclose(norms[4:], torch.ones_like(norms[4:]), atol=1e-6)


def test_val_and_test_both_read_the_val_folder(root: Path, arrays: Arrays) -> None:
    val, test = open_split(root, "val"), open_split(root, "test")
    assert val.folder == test.folder == root / "val"
    both = [val.batch([0, 1]), test.batch([0, 1])]
    for key in both[0]:
        assert torch.equal(both[0][key], both[1][key]), key
    first_val_image = torch.from_numpy(arrays["val"]["image"][0]).permute(2, 0, 1).float()
    assert torch.equal(test[0]["image"], first_val_image)


def test_resize_samples_targets_by_nearest_neighbour_and_keeps_invalid_pixels(
    root: Path, arrays: Arrays
) -> None:
    data = open_split(root, "val", height=H // 2, width=W // 2)
    assert data.image_size == (H // 2, W // 2)
    sample = data[0]
    src = {k: torch.from_numpy(v[0]) for k, v in arrays["val"].items()}
    # halving with "nearest-exact" samples source pixel 2i + 1 in each direction
    picked = {k: v[1::2, 1::2] for k, v in src.items()}
    assert torch.equal(sample["segmentation"], picked["label"].long())
    assert torch.equal(sample["depth"], picked["depth"].permute(2, 0, 1).float())
    assert torch.equal(sample["normal"], picked["normal"].permute(2, 0, 1).float())
    assert (sample["depth"][0, 0] == 0).all()  # source row 1 (invalid) is output row 0
    assert (sample["segmentation"] >= 0).all()  # source row 0 (ignored) is never picked
    assert sample["image"].shape == (3, H // 2, W // 2)
    # the antialiased bilinear image is a weighted mean: inside the source range, mean kept
    # to within the spread of a few random pixels (loose: 0.1 on values in [0, 1])
    assert src["image"].min() <= sample["image"].min() <= sample["image"].max() <= 1.0
    assert abs(sample["image"].mean() - src["image"].float().mean()) < 0.1


@pytest.mark.parametrize("overrides", [{"height": 8}, {"width": 12}])
def test_height_and_width_must_both_be_set_or_both_be_none(
    root: Path, overrides: dict[str, object]
) -> None:
    message = "NYUv2Config.height and width must both be set or both be None"
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_nyuv2("train", "paper", root=str(root), **overrides)


def _overwrite(path: str, value: np.ndarray) -> Callable[[Path], Path]:
    def damage(root: Path) -> Path:
        np.save(root / path, value)
        return root / path

    return damage


def _delete_file(root: Path) -> Path:
    (root / "train" / "depth" / "2.npy").unlink()
    return root / "train" / "depth"


def _renumber_file(root: Path) -> Path:
    (root / "train" / "label" / "1.npy").rename(root / "train" / "label" / "7.npy")
    return root / "train" / "label" / "1.npy"


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_delete_file, "holds 2 .npy files but"),
        (_renumber_file, "is missing (files must be numbered 0.npy to 2.npy)"),
        (_overwrite("train/depth/1.npy", np.zeros((H, W - 1, 1))), f"has shape ({H}, {W - 1}, 1)"),
        (_overwrite("train/image/2.npy", np.zeros((H, W))), f"expected ({H}, {W}, 3)"),
        (_overwrite("train/normal/0.npy", np.zeros((H, W, 1))), f"expected ({H}, {W}, 3)"),
        (_overwrite("train/image/0.npy", np.zeros(H)), "expected (H, W, 3)"),
        (_overwrite("train/label/1.npy", np.full((H, W), "a")), "expected a number type"),
    ],
    ids=[
        "count-mismatch",
        "non-contiguous-numbers",
        "wrong-depth-shape",
        "image-without-channels",
        "normal-with-one-channel",
        "first-image-not-an-image",
        "text-labels",
    ],
)
def test_bad_files_stop_with_one_error_naming_the_file_and_the_fix(
    root: Path, damage: Callable[[Path], Path], problem: str
) -> None:
    named = damage(root)
    with pytest.raises(DataFilesError) as info:
        open_split(root, "train")
    what, fix = str(info.value).split("; run ", 1)
    assert isinstance(info.value, FileNotFoundError)
    assert str(named) in what and problem in what, what
    assert fix.startswith(f"`{FIX}` or put the MTAN-preprocessed NYU-v2 at {root}"), fix


def test_depth_given_without_a_channel_axis_is_accepted(root: Path, arrays: Arrays) -> None:
    np.save(root / "train" / "depth" / "0.npy", arrays["train"]["depth"][0][..., 0])
    depth = open_split(root, "train")[0]["depth"]
    assert torch.equal(
        depth, torch.from_numpy(arrays["train"]["depth"][0]).permute(2, 0, 1).float()
    )


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("train/label/2.npy", np.full((H, W), 13.0), "labels outside the integers -1..12"),
        ("train/label/2.npy", np.full((H, W), 0.5), "labels outside the integers -1..12"),
        ("train/depth/2.npy", np.full((H, W, 1), np.nan), "NaN or infinite values"),
    ],
)
def test_bad_values_stop_when_the_sample_is_read_naming_the_file(
    root: Path, path: str, value: np.ndarray, problem: str
) -> None:
    np.save(root / path, value)
    data = open_split(root, "train")  # headers are fine: values are checked on reading
    assert data[0]["image"].shape == (3, H, W)  # a good sample still reads
    with pytest.raises(DataFilesError, match=re.escape(f"{root / path} holds {problem}")):
        data.batch([0, 2])


# ------------------------------------------------------------------- data_scripts/prepare_nyuv2


@pytest.fixture
def prepare_script(load_data_script: Callable[[str], ModuleType]) -> ModuleType:
    """``data_scripts/prepare_nyuv2.py`` imported as a module."""
    return load_data_script("prepare_nyuv2")


def test_prepare_script_places_an_archive_at_the_root_and_validates_it(
    root: Path,
    tmp_path: Path,
    prepare_script: ModuleType,
    capsys: pytest.CaptureFixture[str],
    zip_folder: Callable[[Path, Path, str], Path],
) -> None:
    archive = zip_folder(root, tmp_path / "nyuv2.zip", "nyuv2")
    dest = tmp_path / "data" / "nyuv2"
    assert prepare_script.main(["--archive", str(archive), "--root", str(dest)]) == 0
    assert "(the release has 795)" in capsys.readouterr().err
    assert len(open_split(dest, "train")) == 3 and len(open_split(dest, "val")) == 2
    assert [p.name for p in dest.parent.iterdir()] == ["nyuv2"]  # no temporary leftovers
    # a second run finds the valid data and leaves it alone
    assert prepare_script.main(["--archive", str(archive), "--root", str(dest)]) == 0
    assert "already holds a valid NYU-v2" in capsys.readouterr().err


def test_prepare_script_unpacks_an_archive_nested_in_a_folder_tarball(
    root: Path,
    tmp_path: Path,
    prepare_script: ModuleType,
    zip_folder: Callable[[Path, Path, str], Path],
) -> None:
    inner = zip_folder(root, tmp_path / "nyuv2.zip", "nyuv2")
    outer = tmp_path / "mtan.tar.gz"
    with tarfile.open(outer, "w:gz") as tf:
        tf.add(inner, "mtan/nyuv2.zip")
    dest = tmp_path / "out"
    assert prepare_script.main(["--archive", str(outer), "--root", str(dest)]) == 0
    assert torch.equal(open_split(dest, "val")[1]["depth"], open_split(root, "val")[1]["depth"])


def test_prepare_script_rejects_bad_archives_and_leaves_the_root_alone(
    root: Path,
    tmp_path: Path,
    prepare_script: ModuleType,
    capsys: pytest.CaptureFixture[str],
    zip_folder: Callable[[Path, Path, str], Path],
) -> None:
    empty = tmp_path / "other.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "no data here")
    dest = tmp_path / "dest"
    assert prepare_script.main(["--archive", str(empty), "--root", str(dest)]) == 1
    assert "holds no folder with train/ and val/" in capsys.readouterr().err
    assert not dest.exists()
    (root / "val" / "depth" / "1.npy").unlink()  # the layout is there but a file is missing
    broken = zip_folder(root, tmp_path / "broken.zip", "nyuv2")
    assert prepare_script.main(["--archive", str(broken), "--root", str(dest)]) == 1
    assert "holds 1 .npy files but" in capsys.readouterr().err
    assert not dest.exists()


def test_direct_url_turns_dropbox_share_links_into_downloads(prepare_script: ModuleType) -> None:
    url = prepare_script.direct_url("https://www.dropbox.com/sh/abc/XYZ?dl=0")
    assert url == "https://www.dropbox.com/sh/abc/XYZ?dl=1"
    other = "https://example.org/nyuv2.zip?dl=0"
    assert prepare_script.direct_url(other) == other
