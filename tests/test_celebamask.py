"""Tests for mtlrepro.data.celebamask (and data_scripts/prepare_celebamask.py) on a tiny on-disk
fixture in the released layout: 10 JPEGs of 32x32, part masks of 16x16 in mask folder 0, the
attribute file with all 40 names and double spaces, and the mapping file."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

import mtlrepro
from mtlrepro.config import ConfigError
from mtlrepro.data import get_dataset
from mtlrepro.data.celebamask import (
    CELEBAMASK_CLASSES,
    CELEBAMASK_PARTS,
    CELEBAMASK_TASKS,
    PART_CLASSES,
    CelebAMaskDataset,
    build_celebamask,
    celebamask_root,
    read_face_mask,
    split_image_ids,
)
from mtlrepro.data.nyuv2 import DATA_DIR_ENV, DataFilesError
from mtlrepro.tasks import TaskSpec

N_IMAGES = 10
IMAGE_SIZE, MASK_SIZE = 32, 16
FIX = "python data_scripts/prepare_celebamask.py --archive <path to CelebAMask-HQ.zip>"
# fmt: off
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes",
    "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
# fmt: on
# Part rectangles (rows, cols) of every fixture image, in the release's painting order; ``hat``
# only on even images.  They overlap on purpose: hair over skin, hat over hair, neck over skin,
# cloth over neck.
RECTS: dict[str, tuple[slice, slice]] = {
    "skin": (slice(2, 14), slice(2, 14)),
    "nose": (slice(6, 9), slice(7, 9)),
    "hair": (slice(0, 6), slice(0, 16)),
    "hat": (slice(0, 3), slice(0, 8)),
    "neck": (slice(12, 16), slice(5, 11)),
    "cloth": (slice(14, 16), slice(0, 16)),
}


def colour(k: int) -> tuple[int, int, int]:
    """The solid RGB colour of fixture image ``k`` (distinct per image)."""
    return (20 * k + 10, 200 - 15 * k, 100 + 50 * (k % 3))


def male(k: int) -> int:
    """Fixture ``Male`` of image ``k`` as written (-1 / 1)."""
    return 1 if k % 2 == 0 else -1


def smiling(k: int) -> int:
    """Fixture ``Smiling`` of image ``k`` as written (-1 / 1)."""
    return 1 if k % 3 == 0 else -1


def parts_of(k: int) -> list[str]:
    """The parts present in fixture image ``k``, in painting order."""
    return [part for part in RECTS if part != "hat" or k % 2 == 0]


def expected_mask(k: int) -> np.ndarray:
    """The documented 3-class mask of image ``k`` at 16x16, painted from the rectangles with
    the classes written out here (skin, nose -> skin; hair -> hair; hat, neck, cloth ->
    background), later parts overwriting earlier ones."""
    classes = {"skin": 1, "nose": 1, "hair": 2, "hat": 0, "neck": 0, "cloth": 0}
    label = np.zeros((MASK_SIZE, MASK_SIZE), dtype=np.int64)
    for part in parts_of(k):
        label[RECTS[part]] = classes[part]
    return label


def attribute_text(count: int, names: tuple[str, ...] = ATTRIBUTES) -> str:
    """The attribute file of the fixture: values right-aligned in 2 characters, so that a ``1``
    after another value is preceded by two spaces, as in the release."""
    rng = np.random.default_rng(0)
    lines = [str(count), " ".join(names) + " "]
    for k in range(N_IMAGES):
        values = rng.choice([-1, 1], size=len(names))
        values[names.index("Male")] = male(k)
        values[names.index("Smiling")] = smiling(k)
        lines.append(f"{k}.jpg " + " ".join(f"{v:2d}" for v in values))
    return "\n".join(lines) + "\n"


def write_fixture(base: Path) -> Path:
    """The fixture in the released layout under ``base`` (returned)."""
    (base / "CelebA-HQ-img").mkdir(parents=True)
    masks = base / "CelebAMask-HQ-mask-anno" / "0"
    masks.mkdir(parents=True)
    for k in range(N_IMAGES):
        Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), colour(k)).save(
            base / "CelebA-HQ-img" / f"{k}.jpg", quality=95
        )
        for part in parts_of(k):
            pixels = np.zeros((MASK_SIZE, MASK_SIZE), dtype=np.uint8)
            pixels[RECTS[part]] = 255
            image = Image.fromarray(pixels)
            if part == "hair":  # the rule is any non-zero colour channel: test an RGB mask
                image = Image.merge(
                    "RGB", (Image.new("L", image.size), Image.new("L", image.size), image)
                )
            image.save(masks / f"{k:05d}_{part}.png")
    (base / "CelebAMask-HQ-attribute-anno.txt").write_text(attribute_text(N_IMAGES))
    mapping = ["idx orig_idx orig_file"]
    mapping += [f"{k} {1000 + k} {1000 + k:06d}.jpg" for k in range(N_IMAGES)]
    (base / "CelebA-HQ-to-CelebA-mapping.txt").write_text("\n".join(mapping) + "\n")
    return base


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The fixture under ``tmp_path / "celebamask"``."""
    return write_fixture(tmp_path / "celebamask")


def open_split(root: Path, split: str, **overrides: object) -> CelebAMaskDataset:
    """One split of the fixture through the registry, at the masks' 16x16 by default."""
    size = {"height": MASK_SIZE, "width": MASK_SIZE}
    return get_dataset("celebamask", split, "paper", root=str(root), **{**size, **overrides})


def test_task_specs_and_classes_are_the_faces_conventions(root: Path) -> None:
    data = open_split(root, "train")
    assert (data.name, data.split, data.image_size) == ("celebamask", "train", (16, 16))
    assert CELEBAMASK_TASKS == ("segmentation", "male", "smile")
    assert CELEBAMASK_CLASSES == ("background", "skin", "hair")
    assert data.task_specs == {
        "segmentation": TaskSpec("segmentation", "segmentation", 3),
        "male": TaskSpec("male", "classification", 2),
        "smile": TaskSpec("smile", "classification", 2),
    }


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
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (6, 3, 16, 16)
    assert batch["segmentation"].dtype == torch.int64 and batch["segmentation"].shape == (6, 16, 16)
    for i, k in enumerate(data.image_ids):
        # Solid colours survive JPEG, draft decoding and the resize (JPEG error <= 3 / 255).
        mean = batch["image"][i].mean((1, 2)) * 255
        np.testing.assert_allclose(mean.numpy(), colour(k), atol=3.0)
        assert torch.equal(batch["segmentation"][i], torch.from_numpy(expected_mask(k))), k
        # -1 -> 0 and 1 -> 1
        assert int(batch["male"][i]) == (male(k) + 1) // 2, k
        assert int(batch["smile"][i]) == (smiling(k) + 1) // 2, k
        assert batch["male"].dtype == torch.int64 and batch["smile"].dtype == torch.int64


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


def test_caps_keep_the_first_images_of_the_split(root: Path) -> None:
    whole = open_split(root, "train")
    first = open_split(root, "train", n_train=3, tasks=["male"])
    assert first.image_ids == whole.image_ids[:3]
    assert torch.equal(first.targets["male"], whole.targets["male"][:3])
    assert set(first[0]) == {"image", "male"}
    with pytest.raises(ConfigError, match="asked for the first 7 images but the split holds 6"):
        open_split(root, "train", n_train=7)


def test_batch_equals_stacked_samples(root: Path) -> None:
    data = open_split(root, "train", height=12, width=20)
    index = torch.tensor([5, 0, 5])
    batch = data.batch(index)
    assert set(batch) == {"image", *CELEBAMASK_TASKS}
    for key, value in batch.items():
        expected = torch.stack([data[int(i)][key] for i in index])
        assert value.dtype == expected.dtype and torch.equal(value, expected), key
    assert torch.equal(data[-1]["image"], data[5]["image"])
    with pytest.raises(IndexError):
        data[6]
    with pytest.raises(IndexError):
        data.batch([0, 6])


def test_registry_builds_the_smoke_profile_and_the_default_root_follows_the_variable(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = get_dataset("celebamask", "train", "smoke", root=str(root), n_train=None)
    assert isinstance(data, CelebAMaskDataset) and data.image_size == (64, 64)
    assert data[0]["image"].shape == (3, 64, 64) and data[0]["segmentation"].shape == (64, 64)
    # the smoke preset's caps exceed the fixture's splits: one clear error
    with pytest.raises(ConfigError, match="asked for the first 64 images"):
        get_dataset("celebamask", "train", "smoke", root=str(root))
    monkeypatch.setenv(DATA_DIR_ENV, str(root.parent))
    assert celebamask_root() == root
    built = build_celebamask("val", "cpu")
    assert built.config.root == str(root) and built.image_size == (128, 128) and len(built) == 2
    monkeypatch.delenv(DATA_DIR_ENV)
    repo = Path(mtlrepro.__file__).resolve().parents[1]
    assert celebamask_root() == repo / "data" / "celebamask"


def _break(root: Path, how: str) -> Path:
    """Damage the fixture one way; return the file or folder the error must name."""
    attributes = root / "CelebAMask-HQ-attribute-anno.txt"
    if how == "no root":
        return root / "elsewhere"
    if how == "no image folder":
        (root / "CelebA-HQ-img").rename(root / "images")
        return root / "CelebA-HQ-img"
    if how == "no attribute file":
        attributes.unlink()
        return attributes
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
    if how == "no mask folder":
        (root / "CelebAMask-HQ-mask-anno" / "0").rename(root / "CelebAMask-HQ-mask-anno" / "x")
        return root / "CelebAMask-HQ-mask-anno" / "0"
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "problem"),
    [
        ("no root", "does not exist"),
        ("no image folder", "does not exist"),
        ("no attribute file", "does not exist"),
        ("no Male column", "has no Male column"),
        ("wrong column count", "line 6 has 40 columns, expected 41"),
        ("row count mismatch", "declares 11 images on line 1 but has 10 rows"),
        ("value not +-1", "gives image 0.jpg Male='0', expected -1 or 1"),
        ("missing image", "is missing (1 of the 10 images"),
        ("no mask folder", "does not exist"),
    ],
)
def test_missing_or_malformed_files_stop_with_one_clear_error(
    root: Path, how: str, problem: str
) -> None:
    named = _break(root, how)
    target = named if how == "no root" else root
    with pytest.raises(DataFilesError) as info:
        open_split(target, "train")
    message = str(info.value)
    assert str(named) in message and problem in message and FIX in message, message
    assert DATA_DIR_ENV in message


def test_only_the_chosen_tasks_columns_and_masks_are_needed(root: Path) -> None:
    _break(root, "no Male column")
    _break(root, "no mask folder")
    data = open_split(root, "val", tasks=("smile",))
    assert set(data.batch([0, 1])) == {"image", "smile"}
    with pytest.raises(DataFilesError, match="has no Male column"):
        open_split(root, "val", tasks=("smile", "male"))


def test_unreadable_files_fail_when_loaded_naming_the_file(root: Path) -> None:
    data = open_split(root, "val")
    k = data.image_ids[0]
    image = root / "CelebA-HQ-img" / f"{k}.jpg"
    image.write_bytes(b"not a jpeg")
    with pytest.raises(DataFilesError, match=re.escape(str(image)) + ".*not a readable image"):
        data[0]
    masks = root / "CelebAMask-HQ-mask-anno" / "0"
    other = data.image_ids[1]
    for path in masks.glob(f"{other:05d}_*.png"):
        path.unlink()
    with pytest.raises(DataFilesError, match=f"image {other} has no part mask in"):
        data.batch([1])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"split_seed": -1}, "split_seed must be an integer in [0, inf)"),
        ({"root": ""}, "CelebAMaskConfig.root must be a folder path or None"),
        ({"height": 4}, "height must be an integer in [8, 4096]"),
        ({"tasks": ("male", "depth")}, "unknown celebamask task 'depth'; allowed: 'segmentation'"),
        ({"n_val": 0}, "n_val must be an integer in [1,"),
        ({"colour": 1}, "unknown CelebAMaskConfig parameter 'colour'"),
    ],
)
def test_config_rejects_bad_values_naming_what_is_allowed(
    root: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_dataset("celebamask", "val", "smoke", **{"root": str(root), **overrides})


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
