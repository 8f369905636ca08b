"""Tests for mtlrepro.data.nyuv2 (and data_scripts/prepare_nyuv2.py) on a tiny on-disk fixture
in the MTAN layout: 3 train and 2 val images of 16x24, float64 like the release."""

from __future__ import annotations

import math
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

import mtlrepro
from mtlrepro.balancing import create_balancer
from mtlrepro.config import ConfigError
from mtlrepro.data import get_dataset
from mtlrepro.data.nyuv2 import (
    DATA_DIR_ENV,
    NYUV2_CLASSES,
    NYUV2_TASKS,
    DataFilesError,
    build_nyuv2,
    nyuv2_root,
)
from mtlrepro.models import create_model
from mtlrepro.tasks import make_tasks
from mtlrepro.train import TrainConfig, evaluate, fit

H, W = 16, 24
COUNTS = {"train": 3, "val": 2}
FIX = "python data_scripts/prepare_nyuv2.py"
SCRIPT = Path(mtlrepro.__file__).resolve().parents[1] / "data_scripts" / "prepare_nyuv2.py"
Arrays = dict[str, dict[str, list[np.ndarray]]]  # folder -> field -> per-image arrays


def fixture_arrays(seed: int = 0) -> Arrays:
    """Random arrays in the release's conventions, with ignored / invalid pixels at known
    places: label row 0 is -1, depth row 1 is 0, normal row 3 is all-zero."""
    rng = np.random.default_rng(seed)
    out: Arrays = {}
    for folder, n in COUNTS.items():
        fields: dict[str, list[np.ndarray]] = {"image": [], "label": [], "depth": [], "normal": []}
        for _ in range(n):
            label = rng.integers(0, len(NYUV2_CLASSES), (H, W)).astype(np.float64)
            label[0] = -1.0
            depth = rng.uniform(0.5, 10.0, (H, W, 1))
            depth[1] = 0.0
            normal = rng.normal(size=(H, W, 3))
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
            normal[3] = 0.0
            fields["image"].append(rng.random((H, W, 3)))
            fields["label"].append(label)
            fields["depth"].append(depth)
            fields["normal"].append(normal)
        out[folder] = fields
    return out


def write_layout(root: Path, arrays: Arrays) -> Path:
    """Write ``arrays`` as ``root/{folder}/{field}/{i}.npy``; return ``root``."""
    for folder, fields in arrays.items():
        for field, values in fields.items():
            (root / folder / field).mkdir(parents=True)
            for i, value in enumerate(values):
                np.save(root / folder / field / f"{i}.npy", value)
    return root


@pytest.fixture
def arrays() -> Arrays:
    """The fixture's source arrays (seed 0)."""
    return fixture_arrays()


@pytest.fixture
def root(tmp_path: Path, arrays: Arrays) -> Path:
    """The fixture written in the MTAN layout under ``tmp_path/nyuv2``."""
    return write_layout(tmp_path / "nyuv2", arrays)


def open_split(root: Path, split: str, **overrides: object) -> torch.utils.data.Dataset:
    """A split of the fixture at its native size (the ``paper`` preset)."""
    return get_dataset("nyuv2", split, "paper", root=str(root), **overrides)


def test_splits_have_the_folder_lengths_and_the_documented_dtypes_and_shapes(
    root: Path,
) -> None:
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        data = open_split(root, split)
        assert (data.name, data.split, len(data), data.image_size) == ("nyuv2", split, n, (H, W))
        assert list(data.task_specs) == list(NYUV2_TASKS)
        assert data.task_specs["segmentation"].num_classes == 13
        sample = data[n - 1]
        assert set(sample) == {"image", *NYUV2_TASKS}
        expected = {
            "image": (torch.float32, (3, H, W)),
            "segmentation": (torch.int64, (H, W)),
            "depth": (torch.float32, (1, H, W)),
            "normal": (torch.float32, (3, H, W)),
        }
        assert {k: (v.dtype, tuple(v.shape)) for k, v in sample.items()} == expected


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


@pytest.mark.parametrize("overrides", [{}, {"height": 8, "width": 12}])
def test_batch_equals_stacked_samples(root: Path, overrides: dict[str, object]) -> None:
    data = open_split(root, "train", **overrides)
    index = torch.tensor([2, 0, 2])
    batch = data.batch(index)
    assert set(batch) == {"image", *NYUV2_TASKS}
    for key, value in batch.items():
        expected = torch.stack([data[int(i)][key] for i in index])
        assert value.dtype == expected.dtype and torch.equal(value, expected), key


def test_tasks_override_selects_a_subset_and_needs_only_its_folders(root: Path) -> None:
    for folder in ("train", "val"):
        shutil.rmtree(root / folder / "label")
        shutil.rmtree(root / folder / "normal")
    data = open_split(root, "train", tasks=["depth"])  # YAML gives lists
    assert list(data.task_specs) == ["depth"]
    assert set(data[0]) == {"image", "depth"} and set(data.batch([1, 2])) == {"image", "depth"}
    with pytest.raises(DataFilesError, match=re.escape(str(root / "train" / "label"))):
        open_split(root, "train", tasks=("segmentation", "depth"))


def test_val_and_test_both_read_the_val_folder(root: Path, arrays: Arrays) -> None:
    val, test = open_split(root, "val"), open_split(root, "test")
    assert val.folder == test.folder == root / "val"
    both = [val.batch([0, 1]), test.batch([0, 1])]
    for key in both[0]:
        assert torch.equal(both[0][key], both[1][key]), key
    first_val_image = torch.from_numpy(arrays["val"]["image"][0]).permute(2, 0, 1).float()
    assert torch.equal(test[0]["image"], first_val_image)


def test_root_comes_from_the_override_then_the_env_var_then_the_repo_data_dir(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    repo_root = Path(mtlrepro.__file__).resolve().parents[1]
    assert nyuv2_root() == repo_root / "data" / "nyuv2"
    monkeypatch.setenv(DATA_DIR_ENV, str(root.parent))
    assert nyuv2_root() == root
    assert nyuv2_root("/elsewhere") == Path("/elsewhere")
    data = get_dataset("nyuv2", "train", "paper")  # found through the env var
    assert len(data) == 3 and data.config.root == str(root)  # the config names the folder read


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


def test_split_sizes_cap_the_split_and_more_than_available_is_rejected(root: Path) -> None:
    assert len(open_split(root, "train", n_train=2)) == 2
    assert len(open_split(root, "test", n_val=1)) == 2  # n_val does not cap the test split
    assert len(open_split(root, "test", n_test=1)) == 1
    with pytest.raises(ConfigError, match=r"first 4 images but .*train/image holds 3"):
        open_split(root, "train", n_train=4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"height": 8}, "height and width must both be set or both be None"),
        ({"tasks": ("depth", "edge")}, "unknown nyuv2 task 'edge'"),
        ({"tasks": ("depth", "depth")}, "tasks repeat a task"),
        ({"n_train": 0}, "n_train must be an integer in [1, inf)"),
        ({"root": ""}, "NYUv2Config.root must be a folder path"),
        ({"max_images": 3}, "unknown NYUv2Config parameter 'max_images'"),
    ],
)
def test_config_rejects_bad_values_naming_what_is_allowed(
    root: Path, overrides: dict[str, object], message: str
) -> None:
    overrides = {"root": str(root), **overrides}
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_nyuv2("train", "paper", **overrides)


def _remove(path: Path) -> Callable[[Path], Path]:
    def damage(root: Path) -> Path:
        shutil.rmtree(root / path)
        return root / path

    return damage


def _overwrite(path: str, value: np.ndarray | bytes) -> Callable[[Path], Path]:
    def damage(root: Path) -> Path:
        if isinstance(value, bytes):
            (root / path).write_bytes(value)
        else:
            np.save(root / path, value)
        return root / path

    return damage


def _delete_file(root: Path) -> Path:
    (root / "train" / "depth" / "2.npy").unlink()
    return root / "train" / "depth"


def _renumber_file(root: Path) -> Path:
    (root / "train" / "label" / "1.npy").rename(root / "train" / "label" / "7.npy")
    return root / "train" / "label" / "1.npy"


def _no_root(root: Path) -> Path:
    shutil.rmtree(root)
    return root


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_no_root, "does not exist"),
        (_remove(Path("val")), "does not exist"),
        (_remove(Path("train") / "normal"), "does not exist"),
        (_delete_file, "holds 2 .npy files but"),
        (_renumber_file, "is missing (files must be numbered 0.npy to 2.npy)"),
        (_overwrite("train/depth/1.npy", np.zeros((H, W - 1, 1))), f"has shape ({H}, {W - 1}, 1)"),
        (_overwrite("train/image/2.npy", np.zeros((H, W))), f"expected ({H}, {W}, 3)"),
        (_overwrite("train/normal/0.npy", np.zeros((H, W, 1))), f"expected ({H}, {W}, 3)"),
        (_overwrite("train/image/0.npy", np.zeros(H)), "expected (H, W, 3)"),
        (_overwrite("train/label/1.npy", np.full((H, W), "a")), "expected a number type"),
        (_overwrite("train/image/1.npy", b"not an npy file"), "is not a readable .npy file"),
    ],
    ids=[
        "missing-root",
        "missing-split-folder",
        "missing-subfolder",
        "count-mismatch",
        "non-contiguous-numbers",
        "wrong-depth-shape",
        "image-without-channels",
        "normal-with-one-channel",
        "first-image-not-an-image",
        "text-labels",
        "unreadable-file",
    ],
)
def test_bad_files_stop_with_one_error_naming_the_file_and_the_fix(
    root: Path, damage: Callable[[Path], Path], problem: str
) -> None:
    named = damage(root)
    split = "val" if named == root / "val" else "train"
    with pytest.raises(DataFilesError) as info:
        open_split(root, split)
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


def test_shared_training_loop_trains_and_evaluates_on_the_fixture(root: Path) -> None:
    train, test = open_split(root, "train"), open_split(root, "test")
    tasks = make_tasks(train.task_specs)
    torch.manual_seed(0)
    model = create_model("segnet", train.task_specs, widths=(4, 8))
    config = TrainConfig(epochs=1, batch_size=2, progress=False, device="cpu", seed=0)
    result = fit(model, tasks, train, test, create_balancer("equal", list(tasks)), config)
    assert (result.epochs, result.steps, result.interrupted) == (1, 1, False)
    scores = evaluate(model, tasks, test, batch_size=config.eval_batch_size)
    assert scores == result.final  # same model, split and batches: the same metrics
    for task, metrics in scores.items():
        assert set(metrics) == set(tasks[task].metric_names), task
        assert all(math.isfinite(v) for v in metrics.values()), task


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
