"""Tests for mtlrepro.data.vehiclex (and data_scripts/prepare_vehiclex.py) on a tiny on-disk
fixture in the released layout: 3 train, 2 val and 2 test JPEGs of 40x40 with one
``finegrained_label.xml``."""

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
from mtlrepro.data.nyuv2 import DATA_DIR_ENV, DataFilesError
from mtlrepro.data.vehicles import conditional_distribution, label_distribution
from mtlrepro.data.vehiclex import (
    VEHICLEX_TASKS,
    VehicleXDataset,
    build_vehiclex,
    vehiclex_root,
)

FIX = "python data_scripts/prepare_vehiclex.py"
SCRIPT = Path(mtlrepro.__file__).resolve().parents[1] / "data_scripts" / "prepare_vehiclex.py"
# split -> (image name, colorID, typeID, solid RGB colour of the image)
ITEMS: dict[str, list[tuple[str, int, int, tuple[int, int, int]]]] = {
    "train": [
        ("0001_c001_1.jpg", 4, 0, (200, 30, 30)),
        ("0002_c003_7.jpg", 11, 3, (240, 140, 180)),
        ("10005_c002_12.jpg", 6, 10, (235, 235, 235)),
    ],
    "val": [("0002_c001_3.jpg", 11, 3, (30, 60, 200)), ("10005_c003_2.jpg", 6, 10, (20, 160, 40))],
    "test": [("0001_c002_5.jpg", 4, 0, (90, 90, 90)), ("0002_c002_9.jpg", 11, 3, (10, 10, 10))],
}
SIZE = {"height": 16, "width": 24}


def item_xml(name: str, colour: int, vtype: int, extra: str = "") -> str:
    """One ``<Item>`` as in Vehicle-X (vehicle and camera ids repeated from the name)."""
    vid, cam = name.split("_")[:2]
    return (
        f'<Item imageName="{name}" vehicleID="{vid}" cameraID="{cam}" colorID="{colour}" '
        f'typeID="{vtype}" orientation="12.5" lightInt="0.8" camHei="9.1" {extra}/>'
    )


def write_xml(path: Path, items: list[str], encoding: str = "utf-8") -> Path:
    """A label file in the released structure with the given items."""
    text = (
        f'<?xml version="1.0" encoding="{encoding}"?>\n<TrainingImages Version="1.0">\n'
        f'<Items number="{len(items)}">\n' + "\n".join(items) + "\n</Items>\n</TrainingImages>\n"
    )
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The fixture layout under ``tmp_path / "vehiclex"``; the XML is declared ``gb2312``
    (as the AI City Challenge files) and holds a Chinese attribute."""
    base = tmp_path / "vehiclex"
    items = []
    for split, rows in ITEMS.items():
        (base / split).mkdir(parents=True)
        for name, colour, vtype, rgb in rows:
            Image.new("RGB", (40, 40), rgb).save(base / split / name, quality=95)
            items.append(item_xml(name, colour, vtype, 'note="车辆"'))
    write_xml(base / "finegrained_label.xml", items, "gb2312")
    return base


def open_split(root: Path, split: str, **overrides: object) -> VehicleXDataset:
    """One split of the fixture at 16x24 through the registry."""
    return get_dataset("vehiclex", split, "paper", root=str(root), **{**SIZE, **overrides})


def test_loader_reads_images_and_labels_in_the_documented_layout(root: Path) -> None:
    data = open_split(root, "train")
    assert (data.name, data.split, len(data), data.image_size) == ("vehiclex", "train", 3, (16, 24))
    assert list(data.task_specs) == list(VEHICLEX_TASKS)
    assert [p.name for p in data.files] == sorted(name for name, *_ in ITEMS["train"])
    batch = data.batch(torch.arange(3))
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (3, 3, 16, 24)
    by_name = {name: row for name, *row in ITEMS["train"]}
    for i, path in enumerate(data.files):
        colour, vtype, rgb = by_name[path.name]
        assert int(batch["colour"][i]) == colour and int(batch["type"][i]) == vtype
        # Solid colours survive JPEG and the resize in RGB order (JPEG error <= 3 / 255).
        mean = batch["image"][i].mean((1, 2)) * 255
        np.testing.assert_allclose(mean.numpy(), rgb, atol=3.0)
    for task in VEHICLEX_TASKS:
        assert batch[task].dtype == torch.int64, task


def test_identity_and_camera_classes_are_contiguous_and_shared_by_all_splits(root: Path) -> None:
    expected_id = {"0001": 0, "0002": 1, "10005": 2}  # sorted ids 1, 2, 10005 -> 0, 1, 2
    for split in ("train", "val", "test"):
        data = open_split(root, split)
        assert data.vehicle_ids == (1, 2, 10005)
        assert data.task_specs["identity"].num_classes == 3
        assert data.task_specs["camera"].num_classes == 3  # c001..c003
        assert data.task_specs["colour"].num_classes == 12
        assert data.task_specs["type"].num_classes == 11
        for i, path in enumerate(data.files):
            vid, cam = path.name.split("_")[:2]
            assert int(data.targets["identity"][i]) == expected_id[vid], path.name
            assert int(data.targets["camera"][i]) == int(cam[1:]) - 1, path.name


def test_per_split_label_file_takes_precedence(root: Path) -> None:
    name = ITEMS["train"][0][0]
    write_xml(root / "train_label.xml", [item_xml(n, 7, 2) for n, *_ in ITEMS["train"]])
    train = open_split(root, "train")
    assert train.targets["colour"][[p.name for p in train.files].index(name)] == 7
    assert set(train.targets["type"].tolist()) == {2}
    val = open_split(root, "val")  # still the fine-grained file
    assert val.targets["colour"].tolist() == [11, 6]


def test_label_base_one_shifts_colours_and_types(root: Path) -> None:
    zero = open_split(root, "test")
    one = open_split(root, "val", label_base=1)
    assert zero.targets["colour"].tolist() == [4, 11]
    assert one.targets["colour"].tolist() == [10, 5] and one.targets["type"].tolist() == [2, 9]


def test_samples_equal_batches_and_limits_select_a_prefix(root: Path) -> None:
    data = open_split(root, "train", tasks=["type", "identity"])
    batch = data.batch([2, 0])
    assert set(batch) == {"image", "type", "identity"}
    for j, i in enumerate([2, 0]):
        sample = data[i]
        for key, value in sample.items():
            assert torch.equal(value, batch[key][j]), key
    assert torch.equal(data[-1]["image"], data[2]["image"])
    with pytest.raises(IndexError):
        data[3]
    with pytest.raises(IndexError):
        data.batch([0, 5])
    first_two = open_split(root, "train", n_train=2)
    assert first_two.files == data.files[:2]
    with pytest.raises(ConfigError, match="asked for the first 4 images but .* holds 3"):
        open_split(root, "train", n_train=4)


def test_label_helpers_work_on_the_lazy_dataset(root: Path) -> None:
    data = open_split(root, "train")
    share = label_distribution(data, "colour")
    assert share[4] == pytest.approx(1 / 3) and share[11] == pytest.approx(1 / 3)
    given = conditional_distribution(data, "colour", 11, "type")
    assert given.tolist() == [0, 0, 0, 1.0] + [0] * 7


def _break(root: Path, how: str) -> Path:
    """Damage the fixture one way; return the file or folder the error must name."""
    xml = root / "finegrained_label.xml"
    if how == "no root":
        return root / "elsewhere"
    if how == "no split folder":
        (root / "train").rename(root / "training")
        return root / "train"
    if how == "no label file":
        xml.unlink()
        return xml
    if how == "malformed xml":
        xml.write_text("<TrainingImages><Items><Item imageName=")
        return xml
    if how == "image without item":
        Image.new("RGB", (8, 8)).save(root / "train" / "0003_c001_1.jpg")
        return root / "train" / "0003_c001_1.jpg"
    if how == "colour out of range":
        write_xml(xml, [item_xml(n, 12 if i == 0 else 1, 0) for i, n in enumerate(_names())])
        return xml
    if how == "id disagrees with name":
        items = [item_xml(n, 1, 0) for n in _names()]
        items[0] = items[0].replace('vehicleID="0001"', 'vehicleID="0009"')
        write_xml(xml, items)
        return xml
    if how == "badly named image":
        Image.new("RGB", (8, 8)).save(root / "train" / "car.jpg")
        return root / "train" / "car.jpg"
    raise AssertionError(how)


def _names() -> list[str]:
    """Every image name of the fixture, sorted."""
    return sorted(name for rows in ITEMS.values() for name, *_ in rows)


@pytest.mark.parametrize(
    ("how", "problem"),
    [
        ("no root", "does not exist"),
        ("no split folder", "does not exist"),
        ("no label file", "does not exist"),
        ("malformed xml", "is not a readable XML file"),
        ("image without item", "has no <Item> in"),
        ("colour out of range", "colorID=12, allowed: 0..11"),
        ("id disagrees with name", "gives vehicleID='0009' for image '0001_c001_1.jpg'"),
        ("badly named image", "is not named VVVV_cCCC_NN.jpg"),
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


def test_unreadable_image_fails_when_loaded_naming_the_file(root: Path) -> None:
    path = root / "val" / ITEMS["val"][0][0]
    path.write_bytes(b"not a jpeg")
    data = open_split(root, "val")  # listing and labels are fine
    assert len(data) == 2
    with pytest.raises(DataFilesError, match=re.escape(str(path)) + ".*not a readable image"):
        data[0]


def test_default_root_follows_the_data_dir_variable(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(root.parent))
    assert vehiclex_root() == root
    data = build_vehiclex("val", "smoke", n_val=2)
    assert data.config.root == str(root) and data.image_size == (64, 64)
    monkeypatch.delenv(DATA_DIR_ENV)
    repo = Path(mtlrepro.__file__).resolve().parents[1]
    assert vehiclex_root() == repo / "data" / "vehiclex"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"label_base": 2}, "unknown label_base 2; allowed: 0, 1"),
        ({"root": ""}, "VehicleXConfig.root must be a folder path or None"),
        ({"height": 4}, "height must be an integer in [8, 4096]"),
        ({"tasks": ("colour", "depth")}, "unknown vehiclex task 'depth'; allowed: 'colour'"),
        ({"n_val": 0}, "n_val must be an integer in [1,"),
    ],
)
def test_config_rejects_bad_values_naming_what_is_allowed(
    root: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_dataset("vehiclex", "val", "smoke", **{"root": str(root), **overrides})


# ------------------------------------------------------------------ data_scripts/prepare_vehiclex


@pytest.fixture
def prepare_script(load_data_script: Callable[[str], ModuleType]) -> ModuleType:
    """``data_scripts/prepare_vehiclex.py`` imported as a module."""
    return load_data_script("prepare_vehiclex")


def test_prepare_script_places_an_archive_at_the_root_and_validates_it(
    root: Path,
    tmp_path: Path,
    prepare_script: ModuleType,
    capsys: pytest.CaptureFixture[str],
    zip_folder: Callable[[Path, Path, str], Path],
) -> None:
    archive = zip_folder(root, tmp_path / "vehiclex.zip", "VehicleX/data")
    dest = tmp_path / "data" / "vehiclex"
    assert prepare_script.main(["--archive", str(archive), "--root", str(dest)]) == 0
    assert "(paper A has 45438)" in capsys.readouterr().err
    assert len(open_split(dest, "test")) == 2
    assert [p.name for p in dest.parent.iterdir()] == ["vehiclex"]  # no temporary leftovers
    assert prepare_script.main(["--archive", str(archive), "--root", str(dest)]) == 0
    assert "already holds a valid Vehicle-X" in capsys.readouterr().err


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
    assert "holds no folder with train/, val/, test/" in capsys.readouterr().err
    assert not dest.exists()
    good = zip_folder(root, tmp_path / "good.zip", "vx")
    # Read as 1-based, the fixture's typeID 0 is out of range: the option reaches the loader.
    assert (
        prepare_script.main(["--archive", str(good), "--root", str(dest), "--label-base", "1"]) == 1
    )
    assert "typeID=0, allowed: 1..11" in capsys.readouterr().err
    assert not dest.exists()
    (root / "test" / ITEMS["test"][0][0]).write_bytes(b"broken")  # layout fine, image not
    broken = zip_folder(root, tmp_path / "broken.zip", "vx")
    assert prepare_script.main(["--archive", str(broken), "--root", str(dest)]) == 1
    assert "not a readable image" in capsys.readouterr().err
    assert not dest.exists()
