"""Tests of what only CelebAMask-HQ's released layout has -- part masks, attributes, the random
split -- (and data_scripts/prepare_celebamask.py), on the tiny fixture of ``real_fixtures.py``:
10 JPEGs of 32x32, part masks of 16x16 in mask folder 0, the attribute file with all 40 names
and double spaces, and the mapping file.  The contract every real-data loader keeps (splits,
dtypes, batches, caps, tasks, root, profiles, missing files, training) is tested in
``test_real_datasets.py``."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from real_fixtures import (
    ATTRIBUTES,
    CELEBAMASK_IMAGES,
    CELEBAMASK_MASK_SIZE,
    attribute_text,
    expected_mask,
    face_colour,
    male,
    smiling,
    write_celebamask,
)

from mtlrepro.config import ConfigError
from mtlrepro.data import get_dataset
from mtlrepro.data.base import DATA_DIR_ENV, DataFilesError
from mtlrepro.data.celebamask import (
    CELEBAMASK_CLASSES,
    CELEBAMASK_PARTS,
    CELEBAMASK_TASKS,
    PART_CLASSES,
    CelebAMaskDataset,
    read_face_mask,
    split_image_ids,
)

N_IMAGES = CELEBAMASK_IMAGES
MASK_SIZE = CELEBAMASK_MASK_SIZE
FIX = "python data_scripts/prepare_celebamask.py --archive <path to CelebAMask-HQ.zip>"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The fixture under ``tmp_path / "celebamask"``."""
    return write_celebamask(tmp_path / "celebamask")


def open_split(root: Path, split: str, **overrides: object) -> CelebAMaskDataset:
    """One split of the fixture through the registry, at the masks' 16x16 by default."""
    size = {"height": MASK_SIZE, "width": MASK_SIZE}
    return get_dataset("celebamask", split, "paper", root=str(root), **{**size, **overrides})


def test_tasks_and_classes_are_the_faces_conventions() -> None:
    assert CELEBAMASK_TASKS == ("segmentation", "male", "smile")
    assert CELEBAMASK_CLASSES == ("background", "skin", "hair")


def test_part_classes_follow_the_documented_grouping() -> None:
    skin = {"skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear"}
    skin |= {"mouth", "u_lip", "l_lip"}
    assert len(CELEBAMASK_PARTS) == 18 and set(PART_CLASSES) == set(CELEBAMASK_PARTS)
    assert {p for p, c in PART_CLASSES.items() if c == 1} == skin
    assert {p for p, c in PART_CLASSES.items() if c == 2} == {"hair"}
    assert PART_CLASSES["neck"] == 0 and PART_CLASSES["hat"] == 0 and PART_CLASSES["ear_r"] == 0


def test_samples_hold_the_image_mask_and_attributes_of_their_image_id(root: Path) -> None:
    data = open_split(root, "train")
    batch = data.batch(torch.arange(len(data)))
    for i, k in enumerate(data.image_ids):
        # Solid colours survive JPEG, draft decoding and the resize (JPEG error <= 3 / 255).
        mean = batch["image"][i].mean((1, 2)) * 255
        np.testing.assert_allclose(mean.numpy(), face_colour(k), atol=3.0)
        assert torch.equal(batch["segmentation"][i], torch.from_numpy(expected_mask(k))), k
        # -1 -> 0 and 1 -> 1
        assert int(batch["male"][i]) == (male(k) + 1) // 2, k
        assert int(batch["smile"][i]) == (smiling(k) + 1) // 2, k


def test_mask_precedence_later_parts_overwrite_earlier_ones(root: Path) -> None:
    even, odd = (read_face_mask(root, k, "fix") for k in (0, 1))
    assert even.dtype == np.uint8 and even.shape == (MASK_SIZE, MASK_SIZE)
    assert even[1, 3] == 0  # hat over hair -> background
    assert odd[1, 3] == 2  # hair without a hat
    assert even[4, 10] == 2  # hair over skin -> hair
    assert even[7, 7] == 1  # nose inside skin -> skin
    assert even[12, 6] == 0  # neck over skin -> background (the neck is not skin)
    assert even[12, 12] == 1  # skin only
    assert even[15, 6] == 0 and even[9, 0] == 0  # cloth over neck; no part at all
    for k, mask in ((0, even), (1, odd)):
        np.testing.assert_array_equal(mask, expected_mask(k))


@pytest.mark.parametrize(("height", "width"), [(8, 8), (48, 48), (8, 48)])
def test_masks_are_resized_with_nearest_neighbour_only(root: Path, height: int, width: int) -> None:
    data = open_split(root, "train", height=height, width=width)
    masks = data.batch(range(len(data)))["segmentation"]
    assert masks.shape == (len(data), height, width)
    assert set(masks.unique().tolist()) == {0, 1, 2}
    # Nearest samples source pixel floor((x + 0.5) * 16 / size); sizes 8 and 48 have no
    # rounding ties.  A bilinear resize would put 1 between 0 and 2 and fail the equality.
    rows, cols = (
        np.floor((np.arange(n) + 0.5) * MASK_SIZE / n).astype(int) for n in (height, width)
    )
    for i, k in enumerate(data.image_ids):
        expected = expected_mask(k)[np.ix_(rows, cols)]
        assert torch.equal(masks[i], torch.from_numpy(expected)), k


def test_split_is_60_20_20_disjoint_deterministic_and_covers_every_image(root: Path) -> None:
    ids = {split: open_split(root, split).image_ids for split in ("train", "val", "test")}
    assert [len(ids[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert sorted(ids["train"] + ids["val"] + ids["test"]) == list(range(N_IMAGES))
    assert all(list(v) == sorted(v) for v in ids.values())
    assert open_split(root, "train").image_ids == ids["train"]  # same seed, same split
    assert open_split(root, "train", split_seed=1).image_ids != ids["train"]
    full = split_image_ids(range(30000), seed=0)
    assert [len(full[s]) for s in ("train", "val", "test")] == [18000, 6000, 6000]
    assert set(full["train"]) | set(full["val"]) | set(full["test"]) == set(range(30000))
    assert full == split_image_ids(list(reversed(range(30000))), seed=0)  # order of ids is moot


def _break(root: Path, how: str) -> Path:
    """Damage the fixture one way; return the file or folder the error must name."""
    attributes = root / "CelebAMask-HQ-attribute-anno.txt"
    if how == "no Male column":
        attributes.write_text(attribute_text(N_IMAGES).replace("Male", "Female", 1))
        return attributes
    if how == "wrong column count":
        lines = attribute_text(N_IMAGES).splitlines()
        lines[5] = lines[5].rsplit(" ", 1)[0]  # drop the last value of image 3
        attributes.write_text("\n".join(lines) + "\n")
        return attributes
    if how == "row count mismatch":
        attributes.write_text(attribute_text(N_IMAGES + 1))
        return attributes
    if how == "value not +-1":
        lines = attribute_text(N_IMAGES).splitlines()
        fields = lines[2].split()
        fields[1 + ATTRIBUTES.index("Male")] = "0"
        lines[2] = " ".join(fields)
        attributes.write_text("\n".join(lines) + "\n")
        return attributes
    if how == "missing image":
        (root / "CelebA-HQ-img" / "7.jpg").unlink()
        return root / "CelebA-HQ-img" / "7.jpg"
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "problem"),
    [
        ("no Male column", "has no Male column"),
        ("wrong column count", "line 6 has 40 columns, expected 41"),
        ("row count mismatch", "declares 11 images on line 1 but has 10 rows"),
        ("value not +-1", "gives image 0.jpg Male='0', expected -1 or 1"),
        ("missing image", "is missing (1 of the 10 images"),
    ],
)
def test_missing_or_malformed_files_stop_with_one_clear_error(
    root: Path, how: str, problem: str
) -> None:
    named = _break(root, how)
    with pytest.raises(DataFilesError) as info:
        open_split(root, "train")
    message = str(info.value)
    assert str(named) in message and problem in message and FIX in message, message
    assert DATA_DIR_ENV in message


def test_an_image_without_part_masks_fails_when_loaded_naming_the_mask_folder(
    root: Path,
) -> None:
    data = open_split(root, "val")
    masks = root / "CelebAMask-HQ-mask-anno" / "0"
    k = data.image_ids[1]
    for path in masks.glob(f"{k:05d}_*.png"):
        path.unlink()
    assert data[0]["segmentation"].shape == (MASK_SIZE, MASK_SIZE)  # the others still read
    message = f"image {k} has no part mask in {masks}"
    with pytest.raises(DataFilesError, match=re.escape(message)):
        data.batch([0, 1])


def test_split_seed_must_be_a_non_negative_integer(root: Path) -> None:
    message = "split_seed must be an integer in [0, inf)"
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_dataset("celebamask", "val", "smoke", root=str(root), split_seed=-1)


# ------------------------------------------------------------------ prepare_celebamask.py


@pytest.fixture
def prepare_script(load_data_script: Callable[[str], ModuleType]) -> ModuleType:
    """``data_scripts/prepare_celebamask.py`` imported as a module."""
    return load_data_script("prepare_celebamask")


def test_prepare_script_places_the_zipped_release_and_validates_it(
    root: Path,
    tmp_path: Path,
    prepare_script: ModuleType,
    capsys: pytest.CaptureFixture[str],
    zip_folder: Callable[[Path, Path, str], Path],
) -> None:
    (root / "README.txt").write_text("CelebAMask-HQ")
    archive = zip_folder(root, tmp_path / "CelebAMask-HQ.zip", "CelebAMask-HQ")
    dest = tmp_path / "data" / "celebamask"
    assert prepare_script.main(["--archive", str(archive), "--dest", str(dest)]) == 0
    err = capsys.readouterr().err
    assert "10 images (the release has 30000)" in err and "train: 6 images" in err
    assert (dest / "CelebA-HQ-to-CelebA-mapping.txt").is_file()
    assert open_split(dest, "train").image_ids == open_split(root, "train").image_ids
    assert [p.name for p in dest.parent.iterdir()] == ["celebamask"]  # no temporary leftovers
    assert prepare_script.main(["--archive", str(archive), "--dest", str(dest)]) == 0
    assert "already holds a valid CelebAMask-HQ" in capsys.readouterr().err


def test_prepare_script_rejects_bad_archives_and_leaves_the_dest_alone(
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
    assert prepare_script.main(["--archive", str(empty), "--dest", str(dest)]) == 1
    assert "holds no folder with CelebA-HQ-img" in capsys.readouterr().err
    assert not dest.exists()
    _break(root, "row count mismatch")  # layout fine, attribute file not
    broken = zip_folder(root, tmp_path / "broken.zip", "CelebAMask-HQ")
    assert prepare_script.main(["--archive", str(broken), "--dest", str(dest)]) == 1
    assert "declares 11 images on line 1" in capsys.readouterr().err
    assert not dest.exists()
