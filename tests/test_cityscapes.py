"""Tests of what only Cityscapes' MTAN layout has (label sets, disparity as depth) and
data_scripts/prepare_cityscapes.py, on the tiny fixture of ``real_fixtures.py``: 3 train and 2
val images of 16x32.  The contract every real-data loader keeps (splits, dtypes, batches, caps,
tasks, root, profiles, missing files, training) is tested in ``test_real_datasets.py``."""

from __future__ import annotations

import re
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from real_fixtures import (
    CITYSCAPES_DEPTH_RANGE,
    CITYSCAPES_HEIGHT,
    CITYSCAPES_WIDTH,
    NyuArrays,
    cityscapes_arrays,
    write_cityscapes,
)

from mtlrepro.config import ConfigError
from mtlrepro.data import get_dataset
from mtlrepro.data.base import DataFilesError
from mtlrepro.data.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PRESETS,
    CityscapesConfig,
    build_cityscapes,
)
from mtlrepro.metrics import DepthMeter
from mtlrepro.tasks import make_tasks

H, W = CITYSCAPES_HEIGHT, CITYSCAPES_WIDTH
FIX = "python data_scripts/prepare_cityscapes.py --archive <path to the MTAN zip>"
Arrays = NyuArrays
NOTE = "depth is disparity (inverse depth) >= 0, 0 = invalid"


@pytest.fixture
def arrays() -> Arrays:
    """The fixture's source arrays (seed 0)."""
    return cityscapes_arrays()


@pytest.fixture
def root(tmp_path: Path, arrays: Arrays) -> Path:
    """The fixture written in the MTAN layout under ``tmp_path/cityscapes``."""
    return write_cityscapes(tmp_path / "cityscapes", arrays)


def open_split(root: Path, split: str, **overrides: object) -> torch.utils.data.Dataset:
    """A split of the fixture at its native size (the ``paper`` preset's 128x256 overridden)."""
    size = {"height": None, "width": None}
    return get_dataset("cityscapes", split, "paper", root=str(root), **{**size, **overrides})


# --------------------------------------------------------------------------------- samples


@pytest.mark.parametrize("classes", [19, 7, 2])
def test_samples_hold_the_chosen_label_set_and_the_stored_disparity_unchanged(
    root: Path, arrays: Arrays, classes: int
) -> None:
    data = open_split(root, "train", classes=classes)
    assert data.task_specs["segmentation"].num_classes == classes
    assert data.config.classes == classes
    for i in range(len(data)):
        sample = data[i]
        src = {k: torch.from_numpy(v[i]) for k, v in arrays["train"].items()}
        assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, H, W)
        assert torch.equal(sample["image"], src["image"].permute(2, 0, 1))
        assert sample["segmentation"].dtype == torch.int64
        assert torch.equal(sample["segmentation"], src[f"label_{classes}"].long())
        assert sample["depth"].dtype == torch.float32 and sample["depth"].shape == (1, H, W)
        assert torch.equal(sample["depth"], src["depth"].permute(2, 0, 1))  # not inverted


def test_default_label_set_is_19_classes_with_the_trainid_names() -> None:
    assert CityscapesConfig().classes == 19
    assert len(CITYSCAPES_CLASSES[19]) == 19 and len(CITYSCAPES_CLASSES[7]) == 7


def test_labels_keep_the_ignore_value_and_stay_in_range(root: Path) -> None:
    for classes in (19, 7):
        seg = open_split(root, "val", classes=classes).batch([0, 1])["segmentation"]
        assert (seg[:, 0] == -1).all()  # row 0 is ignored in the fixture
        assert (seg[:, 1:] >= 0).all() and int(seg.max()) < classes


def test_invalid_disparity_stays_zero_and_valid_disparity_positive(root: Path) -> None:
    depth = open_split(root, "val").batch([0, 1])["depth"][:, 0]
    invalid = torch.zeros(H, W, dtype=torch.bool)
    invalid[1] = True
    invalid[5, 3] = True
    assert (depth[:, invalid] == 0).all()
    low, high = CITYSCAPES_DEPTH_RANGE
    assert (depth[:, ~invalid] >= low).all() and (depth[:, ~invalid] <= high).all()


def test_depth_metrics_and_loss_apply_to_disparity_and_skip_invalid_pixels(root: Path) -> None:
    data = open_split(root, "val")
    target = data.batch([0, 1])["depth"]
    meter = DepthMeter()
    meter.update(target.clone(), target)  # a perfect prediction
    assert meter.compute() == {
        "abs_err": 0.0,
        "rel_err": 0.0,
        "delta1": 100.0,
        "delta2": 100.0,
        "delta3": 100.0,
    }
    wrong = torch.where(target > 0, target, torch.full_like(target, 5.0))  # off on invalid only
    meter.reset()
    meter.update(wrong, target)
    assert meter.compute()["abs_err"] == 0.0
    loss = make_tasks(data.task_specs)["depth"].loss(wrong, target)
    assert torch.equal(loss, torch.zeros(2))


def test_a_split_reads_only_the_chosen_label_folder(root: Path) -> None:
    for label in ("label_19", "label_2"):
        shutil.rmtree(root / "train" / label)
    data = open_split(root, "train", classes=7)
    assert data.batch([0, 1, 2])["segmentation"].shape == (3, H, W)
    with pytest.raises(DataFilesError, match=re.escape(f"{root / 'train' / 'label_19'} does")):
        open_split(root, "train")
    depth_only = open_split(root, "train", tasks=["depth"], classes=2)
    assert set(depth_only[0]) == {"image", "depth"}


def test_val_and_test_both_read_the_val_folder(root: Path, arrays: Arrays) -> None:
    val, test = open_split(root, "val"), open_split(root, "test")
    assert val.folder == test.folder == root / "val"
    assert open_split(root, "train").folder == root / "train"
    both = [val.batch([0, 1]), test.batch([0, 1])]
    for key in both[0]:
        assert torch.equal(both[0][key], both[1][key]), key
    first_val_image = torch.from_numpy(arrays["val"]["image"][0]).permute(2, 0, 1)
    assert torch.equal(test[0]["image"], first_val_image)


def test_reading_is_deterministic_across_opens_and_reads(root: Path) -> None:
    first = open_split(root, "train", height=8, width=16).batch([2, 0, 1])
    again = open_split(root, "train", height=8, width=16)
    for batch in (again.batch([2, 0, 1]), again.batch([2, 0, 1])):
        assert all(torch.equal(batch[key], first[key]) for key in first)


def test_resize_samples_targets_by_nearest_neighbour_and_keeps_invalid_pixels(
    root: Path, arrays: Arrays
) -> None:
    data = open_split(root, "val", height=H // 2, width=W // 2)
    sample = data[0]
    src = {k: torch.from_numpy(v[0]) for k, v in arrays["val"].items()}
    # halving with "nearest-exact" samples source pixel 2i + 1 in each direction
    picked = {k: v[1::2, 1::2] for k, v in src.items()}
    assert torch.equal(sample["segmentation"], picked["label_19"].long())
    assert torch.equal(sample["depth"], picked["depth"].permute(2, 0, 1))
    assert (sample["depth"][0, 0] == 0).all()  # source row 1 (invalid) is output row 0
    assert sample["depth"][0, 2, 1] == 0  # source pixel (5, 3), invalid
    assert (sample["segmentation"] >= 0).all()  # source row 0 (ignored) is never picked


def test_presets_read_all_images_at_128x256_for_the_paper() -> None:
    assert CITYSCAPES_PRESETS["paper"] == {"height": 128, "width": 256}
    assert CITYSCAPES_PRESETS["cpu"] == {"height": 64, "width": 128}
    smoke = CITYSCAPES_PRESETS["smoke"]
    assert (smoke["height"], smoke["width"], smoke["n_train"]) == (32, 64, 16)


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"classes": 5}, "CityscapesConfig.classes must be one of 2, 7, 19"),
        ({"classes": 20}, "CityscapesConfig.classes must be one of 2, 7, 19"),
        ({"classes": "7"}, "CityscapesConfig.classes must be of type int; got '7'"),
        ({"classes": 7.0}, "CityscapesConfig.classes must be of type int; got 7.0"),
        ({"classes": True}, "CityscapesConfig.classes must be of type int; got True"),
        ({"height": 64}, "CityscapesConfig.height and width must both be set or both be None"),
        ({"tasks": ["normal"]}, "unknown cityscapes task 'normal'"),
        ({"label_set": 7}, "unknown CityscapesConfig parameter 'label_set'"),
    ],
)
def test_bad_overrides_are_config_errors(
    root: Path, overrides: dict[str, object], message: str
) -> None:
    overrides = {"height": None, "width": None, **overrides}  # the files' size unless set
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_cityscapes("train", "paper", root=str(root), **overrides)


@pytest.mark.parametrize("classes", [5, 7.0, False])
def test_a_config_built_directly_checks_the_label_set(classes: object) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"got {classes!r}")):
        CityscapesConfig(classes=classes)  # type: ignore[arg-type]


def test_missing_data_names_the_folder_and_the_prepare_script(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "cityscapes"
    with pytest.raises(DataFilesError) as info:
        get_dataset("cityscapes", "train", "smoke", root=str(missing))
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert message.startswith(f"cityscapes: folder {missing} does not exist; run `{FIX}`")
    assert f"put the MTAN-preprocessed Cityscapes at {missing}" in message
    assert "{train,val}/{image,depth,label_2,label_7,label_19}/<i>.npy" in message


def _overwrite(path: str, value: np.ndarray) -> Callable[[Path], Path]:
    def damage(root: Path) -> Path:
        np.save(root / path, value)
        return root / path

    return damage


def _delete_file(root: Path) -> Path:
    (root / "train" / "depth" / "2.npy").unlink()
    return root / "train" / "depth"


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_delete_file, "holds 2 .npy files but"),
        (_overwrite("train/depth/1.npy", np.zeros((H, W, 3))), f"expected ({H}, {W}, 1) or"),
        (_overwrite("train/label_19/2.npy", np.zeros((H, W, 1))), f"expected ({H}, {W})"),
        (_overwrite("train/image/0.npy", np.zeros((H, W))), "expected (H, W, 3)"),
        (_overwrite("train/image/2.npy", np.zeros((2 * H, 2 * W, 3))), f"expected ({H}, {W}, 3)"),
    ],
    ids=["count-mismatch", "depth-3-channels", "label-with-channel", "image-2d", "image-size"],
)
def test_bad_files_stop_when_opened_with_one_error_naming_the_file_and_the_fix(
    root: Path, damage: Callable[[Path], Path], problem: str
) -> None:
    named = damage(root)
    with pytest.raises(DataFilesError) as info:
        open_split(root, "train")
    what, fix = str(info.value).split("; run ", 1)
    assert str(named) in what and problem in what, what
    assert fix.startswith(f"`{FIX}` or put the MTAN-preprocessed Cityscapes at {root}"), fix


@pytest.mark.parametrize(
    ("path", "value", "classes", "problem"),
    [
        ("train/label_7/2.npy", np.full((H, W), 7.0), 7, "labels outside the integers -1..6"),
        ("train/label_19/2.npy", np.full((H, W), -2.0), 19, "labels outside the integers -1..18"),
        (
            "train/depth/2.npy",
            np.full((H, W, 1), -0.1),
            19,
            f"negative depths (down to -0.1; {NOTE})",
        ),
        ("train/depth/2.npy", np.full((H, W, 1), np.inf), 19, "NaN or infinite values"),
        ("train/image/2.npy", np.full((H, W, 3), 2.0), 19, "image values in [2, 2]"),
    ],
)
def test_bad_values_stop_when_the_sample_is_read_naming_the_file(
    root: Path, path: str, value: np.ndarray, classes: int, problem: str
) -> None:
    np.save(root / path, value)
    data = open_split(root, "train", classes=classes)  # headers are fine
    assert data[0]["image"].shape == (3, H, W)  # a good sample still reads
    with pytest.raises(DataFilesError, match=re.escape(f"{root / path} holds {problem}")):
        data.batch([0, 2])


def test_depth_given_without_a_channel_axis_is_accepted(root: Path, arrays: Arrays) -> None:
    np.save(root / "train" / "depth" / "0.npy", arrays["train"]["depth"][0][..., 0])
    depth = open_split(root, "train")[0]["depth"]
    assert torch.equal(depth, torch.from_numpy(arrays["train"]["depth"][0]).permute(2, 0, 1))


# -------------------------------------------------------------- data_scripts/prepare_cityscapes


@pytest.fixture
def prepare_script(load_data_script: Callable[[str], ModuleType]) -> ModuleType:
    """``data_scripts/prepare_cityscapes.py`` imported as a module."""
    return load_data_script("prepare_cityscapes")


def test_prepare_script_places_an_archive_at_the_root_and_validates_it(
    root: Path,
    tmp_path: Path,
    prepare_script: ModuleType,
    capsys: pytest.CaptureFixture[str],
    zip_folder: Callable[[Path, Path, str], Path],
) -> None:
    archive = zip_folder(root, tmp_path / "cityscapes2.zip", "cityscapes2")
    dest = tmp_path / "data" / "cityscapes"
    assert prepare_script.main(["--archive", str(archive), "--root", str(dest)]) == 0
    err = capsys.readouterr().err
    assert f"{dest / 'train'}: 3 images of {H}x{W} (the release has 2975)" in err
    assert "label sets: label_2, label_7, label_19" in err and "warning" not in err
    assert len(open_split(dest, "train")) == 3 and len(open_split(dest, "test")) == 2
    assert [p.name for p in dest.parent.iterdir()] == ["cityscapes"]  # no temporary leftovers
    # a second run finds the valid data and leaves it alone
    assert prepare_script.main(["--archive", str(archive), "--root", str(dest)]) == 0
    assert "already holds a valid Cityscapes" in capsys.readouterr().err


def test_prepare_script_unpacks_a_nested_archive_and_warns_without_label_19(
    root: Path,
    tmp_path: Path,
    prepare_script: ModuleType,
    capsys: pytest.CaptureFixture[str],
    zip_folder: Callable[[Path, Path, str], Path],
) -> None:
    for folder in ("train", "val"):
        shutil.rmtree(root / folder / "label_19")
    inner = zip_folder(root, tmp_path / "cityscapes.zip", "cityscapes")
    outer = tmp_path / "mtan.tar.gz"
    with tarfile.open(outer, "w:gz") as tf:
        tf.add(inner, "mtan/cityscapes.zip")
    dest = tmp_path / "out"
    assert prepare_script.main(["--archive", str(outer), "--root", str(dest)]) == 0
    assert "warning: no label_19" in capsys.readouterr().err
    data = open_split(dest, "val", classes=7)
    assert torch.equal(data[1]["depth"], open_split(root, "val", classes=7)[1]["depth"])


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
    (root / "val" / "label_7" / "1.npy").unlink()  # a label set present but incomplete
    broken = zip_folder(root, tmp_path / "broken.zip", "cityscapes")
    assert prepare_script.main(["--archive", str(broken), "--root", str(dest)]) == 1
    assert "label_7 holds 1 .npy files but" in capsys.readouterr().err
    assert not dest.exists()
