"""Tests of what only Vehicle-X's released layout has -- XML labels, their encodings and
classes -- (and data_scripts/prepare_vehiclex.py), on the tiny fixture of ``real_fixtures.py``:
3 train, 2 val and 2 test JPEGs of 40x40 with one ``finegrained_label.xml``.  The contract
every real-data loader keeps (splits, dtypes, batches, caps, tasks, root, profiles, missing
files, training) is tested in ``test_real_datasets.py``."""

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
from real_fixtures import VEHICLEX_ITEMS, item_xml, write_vehiclex, write_xml

from mtlrepro.config import ConfigError
from mtlrepro.data import get_dataset
from mtlrepro.data.base import DataFilesError
from mtlrepro.data.stats import conditional_distribution, label_distribution
from mtlrepro.data.vehiclex import VehicleXDataset

FIX = "python data_scripts/prepare_vehiclex.py"
ITEMS = VEHICLEX_ITEMS
SIZE = {"height": 16, "width": 24}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The fixture layout under ``tmp_path / "vehiclex"``; the XML is declared ``gb2312``
    (as the AI City Challenge files) and holds a Chinese attribute."""
    return write_vehiclex(tmp_path / "vehiclex")


def open_split(root: Path, split: str, **overrides: object) -> VehicleXDataset:
    """One split of the fixture at 16x24 through the registry."""
    return get_dataset("vehiclex", split, "paper", root=str(root), **{**SIZE, **overrides})


def test_loader_reads_the_labels_and_image_of_each_file_sorted_by_name(root: Path) -> None:
    data = open_split(root, "train")
    assert [p.name for p in data.files] == sorted(name for name, *_ in ITEMS["train"])
    batch = data.batch(torch.arange(3))
    by_name = {name: row for name, *row in ITEMS["train"]}
    for i, path in enumerate(data.files):
        colour, vtype, rgb = by_name[path.name]
        assert int(batch["colour"][i]) == colour and int(batch["type"][i]) == vtype
        # Solid colours survive JPEG and the resize in RGB order (JPEG error <= 3 / 255).
        mean = batch["image"][i].mean((1, 2)) * 255
        np.testing.assert_allclose(mean.numpy(), rgb, atol=3.0)


def test_identity_and_camera_classes_are_contiguous_and_shared_by_all_splits(root: Path) -> None:
    expected_id = {"0001": 0, "0002": 1, "10005": 2}  # sorted ids 1, 2, 10005 -> 0, 1, 2
    for split in ("train", "val", "test"):
        data = open_split(root, split)
        assert data.vehicle_ids == (1, 2, 10005)
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


def test_label_helpers_work_on_the_lazy_dataset(root: Path) -> None:
    data = open_split(root, "train")
    share = label_distribution(data, "colour")
    assert share[4] == pytest.approx(1 / 3) and share[11] == pytest.approx(1 / 3)
    given = conditional_distribution(data, "colour", 11, "type")
    assert given.tolist() == [0, 0, 0, 1.0] + [0] * 7


def _break(root: Path, how: str) -> Path:
    """Damage the fixture one way; return the file or folder the error must name."""
    xml = root / "finegrained_label.xml"
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
    with pytest.raises(DataFilesError) as info:
        open_split(root, "train")
    message = str(info.value)
    assert str(named) in message and problem in message and FIX in message, message


def test_label_base_must_be_zero_or_one(root: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown label_base 2; allowed: 0, 1")):
        get_dataset("vehiclex", "val", "smoke", root=str(root), label_base=2)


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
