"""The contract every real (on-disk) dataset loader keeps, tested once over ``nyuv2``,
``cityscapes``, ``celebamask`` and ``vehiclex`` on the tiny fixtures of ``real_fixtures.py``.

Each loader is described by a :class:`Loader` (fixture builder, the overrides every test opens
it with, and what the contract expects of it); each test runs once per loader.  What only one
on-disk format has (NYU-v2's npy layout and value ranges, Cityscapes' label sets and
disparity, CelebAMask-HQ's part masks and attributes, Vehicle-X's XML labels) and the prepare
scripts are tested in ``test_nyuv2.py``, ``test_cityscapes.py``, ``test_celebamask.py`` and
``test_vehiclex.py``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from real_fixtures import (
    CELEBAMASK_IMAGES,
    attribute_text,
    write_celebamask,
    write_cityscapes,
    write_nyuv2,
    write_vehiclex,
)
from torch import Tensor

import mtlrepro
from mtlrepro.balancing import create_balancer
from mtlrepro.config import PROFILES, ConfigError
from mtlrepro.data import dataset_names, get_dataset
from mtlrepro.data.base import DATA_DIR_ENV, DATASETS, SPLITS, DataFilesError, LazyDataset
from mtlrepro.data.celebamask import CelebAMaskConfig, CelebAMaskDataset, celebamask_root
from mtlrepro.data.cityscapes import CityscapesConfig, cityscapes_root
from mtlrepro.data.nyuv2 import NpyFolderDataset, NYUv2Config, nyuv2_root
from mtlrepro.data.vehiclex import VehicleXConfig, VehicleXDataset, vehiclex_root
from mtlrepro.models import create_model
from mtlrepro.tasks import TaskSpec, make_tasks
from mtlrepro.train import TrainConfig, evaluate, fit

REPO = Path(mtlrepro.__file__).resolve().parents[1]
Damage = Callable[[Path], Path]
"""Damages a fixture root; returns the file or folder the loader's error must name."""


@dataclasses.dataclass(frozen=True)
class Loader:
    """One real dataset's fixture and what the shared contract expects of its loader.

    Attributes:
        name: the registered dataset name (also its folder under ``$MTLREPRO_DATA_DIR``).
        write: writes the fixture under the given folder and returns it.
        size: ``height`` / ``width`` overrides every test opens the fixture with (``{}`` =
            the files' size).
        image_size: ``(H, W)`` of the samples opened with ``size``.
        lengths: samples per split.
        task_specs: the full task specs, in the dataset's order.
        dataset_class: the class the registry's builder returns.
        config_class: the config dataclass (its name starts some config errors).
        root_of: the module's ``<name>_root`` function.
        prepare: the prepare command every file error names.
        release: what the file errors say to put at the root instead.
        layout: ``(entry, split)``: opening ``split`` needs ``entry`` (relative to the root).
        image_file: the file holding image ``i`` of an opened split.
        unreadable: the problem an unreadable image file is reported with.
        reads_images_when_opened: opening a split already reads every image file's header.
        cap_holder: what the too-large-cap error says holds the split's images.
        profile_sizes: profile -> ``(H, W)`` of the profile's preset.
        smoke_train_cap: the ``smoke`` preset's ``n_train``.
        task_files: task -> damage removing only that task's targets (none if every task's
            labels live in one file).
    """

    name: str
    write: Callable[[Path], Path]
    size: dict[str, int]
    image_size: tuple[int, int]
    lengths: dict[str, int]
    task_specs: dict[str, TaskSpec]
    dataset_class: type[LazyDataset]
    config_class: type
    root_of: Callable[..., Path]
    prepare: str
    release: str
    layout: tuple[tuple[str, str], ...]
    image_file: Callable[[LazyDataset, int], Path]
    unreadable: str
    reads_images_when_opened: bool
    cap_holder: Callable[[Path, str], str]
    profile_sizes: dict[str, tuple[int, int]]
    smoke_train_cap: int
    task_files: dict[str, Damage]

    def __repr__(self) -> str:
        return self.name


def _remove_folders(*paths: str) -> Damage:
    """Damage removing the given folders; the error must name the first."""

    def damage(root: Path) -> Path:
        for path in paths:
            shutil.rmtree(root / path)
        return root / paths[0]

    return damage


def _drop_male_column(root: Path) -> Path:
    path = root / "CelebAMask-HQ-attribute-anno.txt"
    path.write_text(attribute_text(CELEBAMASK_IMAGES).replace("Male", "Female", 1))
    return path


NYUV2 = Loader(
    name="nyuv2",
    write=write_nyuv2,
    size={},
    image_size=(16, 24),
    lengths={"train": 3, "val": 2, "test": 2},
    task_specs={
        "segmentation": TaskSpec("segmentation", "segmentation", 13),
        "depth": TaskSpec("depth", "depth"),
        "normal": TaskSpec("normal", "normal"),
    },
    dataset_class=NpyFolderDataset,
    config_class=NYUv2Config,
    root_of=nyuv2_root,
    prepare="python data_scripts/prepare_nyuv2.py",
    release="the MTAN-preprocessed NYU-v2",
    layout=(("train/image", "train"), ("train/normal", "train"), ("val", "test")),
    image_file=lambda data, i: data.folder / "image" / f"{i}.npy",
    unreadable="is not a readable .npy file",
    reads_images_when_opened=True,
    cap_holder=lambda root, split: str(root / ("train" if split == "train" else "val") / "image"),
    profile_sizes={"smoke": (72, 96), "cpu": (144, 192), "paper": (16, 24)},
    smoke_train_cap=16,
    task_files={
        "segmentation": _remove_folders("train/label", "val/label"),
        "normal": _remove_folders("train/normal", "val/normal"),
    },
)
CITYSCAPES = Loader(
    name="cityscapes",
    write=write_cityscapes,
    size={"height": 16, "width": 32},  # the files' size (the paper preset is 128x256)
    image_size=(16, 32),
    lengths={"train": 3, "val": 2, "test": 2},
    task_specs={
        "segmentation": TaskSpec("segmentation", "segmentation", 19),
        "depth": TaskSpec("depth", "depth"),
    },
    dataset_class=NpyFolderDataset,
    config_class=CityscapesConfig,
    root_of=cityscapes_root,
    prepare="python data_scripts/prepare_cityscapes.py --archive <path to the MTAN zip>",
    release="the MTAN-preprocessed Cityscapes",
    layout=(
        ("train/image", "train"),
        ("train/label_19", "train"),
        ("val/depth", "val"),
        ("val", "test"),
    ),
    image_file=lambda data, i: data.folder / "image" / f"{i}.npy",
    unreadable="is not a readable .npy file",
    reads_images_when_opened=True,
    cap_holder=lambda root, split: str(root / ("train" if split == "train" else "val") / "image"),
    profile_sizes={"smoke": (32, 64), "cpu": (64, 128), "paper": (128, 256)},
    smoke_train_cap=16,
    task_files={"segmentation": _remove_folders("train/label_19", "val/label_19")},
)
CELEBAMASK = Loader(
    name="celebamask",
    write=write_celebamask,
    size={"height": 16, "width": 16},
    image_size=(16, 16),
    lengths={"train": 6, "val": 2, "test": 2},
    task_specs={
        "segmentation": TaskSpec("segmentation", "segmentation", 3),
        "male": TaskSpec("male", "classification", 2),
        "smile": TaskSpec("smile", "classification", 2),
    },
    dataset_class=CelebAMaskDataset,
    config_class=CelebAMaskConfig,
    root_of=celebamask_root,
    prepare="python data_scripts/prepare_celebamask.py --archive <path to CelebAMask-HQ.zip>",
    release="the unpacked CelebAMask-HQ",
    layout=(
        ("CelebA-HQ-img", "train"),
        ("CelebAMask-HQ-mask-anno/0", "val"),
        ("CelebAMask-HQ-attribute-anno.txt", "test"),
    ),
    image_file=lambda data, i: data.root / "CelebA-HQ-img" / f"{data.image_ids[i]}.jpg",
    unreadable="is not a readable image",
    reads_images_when_opened=False,
    cap_holder=lambda root, split: "the split",
    profile_sizes={"smoke": (64, 64), "cpu": (128, 128), "paper": (256, 256)},
    smoke_train_cap=64,
    task_files={
        "segmentation": _remove_folders("CelebAMask-HQ-mask-anno/0"),
        "male": _drop_male_column,
    },
)
VEHICLEX = Loader(
    name="vehiclex",
    write=write_vehiclex,
    size={"height": 16, "width": 24},
    image_size=(16, 24),
    lengths={"train": 3, "val": 2, "test": 2},
    task_specs={
        "colour": TaskSpec("colour", "classification", 12),
        "type": TaskSpec("type", "classification", 11),
        "identity": TaskSpec("identity", "classification", 3),  # vehicles 1, 2 and 10005
        "camera": TaskSpec("camera", "classification", 3),  # c001 .. c003
    },
    dataset_class=VehicleXDataset,
    config_class=VehicleXConfig,
    root_of=vehiclex_root,
    prepare="python data_scripts/prepare_vehiclex.py",
    release="Vehicle-X",
    layout=(("val", "val"), ("finegrained_label.xml", "train")),
    image_file=lambda data, i: data.files[i],
    unreadable="is not a readable image",
    reads_images_when_opened=False,
    cap_holder=lambda root, split: str(root / split),
    profile_sizes={"smoke": (64, 64), "cpu": (64, 64), "paper": (256, 256)},
    smoke_train_cap=32,
    task_files={},  # every label is in the one XML file
)
LOADERS = (NYUV2, CITYSCAPES, CELEBAMASK, VEHICLEX)
IDS = [loader.name for loader in LOADERS]

DOCUMENTED: dict[str, tuple[torch.dtype, Callable[[int, int], tuple[int, ...]]]] = {
    "segmentation": (torch.int64, lambda h, w: (h, w)),
    "classification": (torch.int64, lambda h, w: ()),
    "depth": (torch.float32, lambda h, w: (1, h, w)),
    "normal": (torch.float32, lambda h, w: (3, h, w)),
}
"""Task kind -> dtype and shape of a sample's target (:mod:`mtlrepro.data.base`)."""


@pytest.fixture(params=LOADERS, ids=IDS)
def loader(request: pytest.FixtureRequest) -> Loader:
    """Each real dataset in turn."""
    return request.param


@pytest.fixture
def root(loader: Loader, tmp_path: Path) -> Path:
    """The loader's fixture under ``tmp_path / <name>`` (the layout of ``$MTLREPRO_DATA_DIR``)."""
    return loader.write(tmp_path / loader.name)


def open_split(loader: Loader, root: Path, split: str, **overrides: object) -> LazyDataset:
    """One split of the fixture through the registry, ``paper`` preset, at ``loader.size``."""
    return get_dataset(loader.name, split, "paper", root=str(root), **{**loader.size, **overrides})


def check_sample(sample: dict[str, Tensor], task_specs: dict[str, TaskSpec], size: tuple) -> None:
    """``sample`` holds the image and one target per task in the documented dtypes and shapes,
    class ids in ``-1 .. num_classes - 1`` and finite dense targets."""
    assert set(sample) == {"image", *task_specs}
    image = sample["image"]
    assert (image.dtype, tuple(image.shape)) == (torch.float32, (3, *size))
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    for task, spec in task_specs.items():
        value = sample[task]
        dtype, shape = DOCUMENTED[spec.kind]
        assert (value.dtype, tuple(value.shape)) == (dtype, shape(*size)), task
        if spec.num_classes:
            assert -1 <= int(value.min()) and int(value.max()) < spec.num_classes, task
        else:
            assert torch.isfinite(value).all(), task


def check_files_error(
    error: DataFilesError, loader: Loader, root: Path, named: Path, problem: str
) -> None:
    """One error naming the dataset, ``named`` and ``problem``, then the fix: the prepare
    command, what to put at ``root`` and how to read it from elsewhere."""
    assert isinstance(error, FileNotFoundError)
    what, fix = str(error).split("; run ", 1)
    assert what.startswith(f"{loader.name}: "), what
    assert str(named) in what and problem in what, what
    assert fix.startswith(f"`{loader.prepare}` or put {loader.release} at {root} ("), fix
    assert f"set ${DATA_DIR_ENV} or the `root` parameter" in fix, fix


# ---------------------------------------------------------------------- registry and samples


def test_each_split_is_registered_with_its_length_size_and_task_specs(
    loader: Loader, root: Path
) -> None:
    assert loader.name in dataset_names() and loader.name in DATASETS
    for split in SPLITS:
        data = open_split(loader, root, split)
        assert type(data) is loader.dataset_class and isinstance(data, LazyDataset)
        described = (data.name, data.split, len(data), data.image_size)
        assert described == (loader.name, split, loader.lengths[split], loader.image_size)
        assert list(data.task_specs.items()) == list(loader.task_specs.items())
        assert type(data.config) is loader.config_class and data.config.root == str(root)


@pytest.mark.parametrize("size", [None, (8, 12), (20, 12)], ids=["default", "shrunk", "grown"])
def test_samples_have_the_documented_dtypes_and_shapes_at_the_chosen_size(
    loader: Loader, root: Path, size: tuple[int, int] | None
) -> None:
    overrides = {} if size is None else {"height": size[0], "width": size[1]}
    data = open_split(loader, root, "train", **overrides)
    expected = loader.image_size if size is None else size
    assert data.image_size == expected
    for i in range(len(data)):
        check_sample(data[i], loader.task_specs, expected)


@pytest.mark.parametrize("size", [None, (8, 12)], ids=["default", "resized"])
def test_batch_equals_stacked_samples_and_indices_are_checked(
    loader: Loader, root: Path, size: tuple[int, int] | None
) -> None:
    overrides = {} if size is None else {"height": size[0], "width": size[1]}
    data = open_split(loader, root, "train", **overrides)
    n = len(data)
    index = torch.tensor([n - 1, 0, n - 1])
    batch = data.batch(index)
    assert set(batch) == {"image", *loader.task_specs}
    for key, value in batch.items():
        expected = torch.stack([data[int(i)][key] for i in index])
        assert value.dtype == expected.dtype and torch.equal(value, expected), key
    as_list = data.batch(index.tolist())
    assert all(torch.equal(as_list[key], batch[key]) for key in batch)
    assert len(data.batch(range(n))["image"]) == n
    last = data[-1]
    assert all(torch.equal(last[key], data[n - 1][key]) for key in last)
    for bad in (n, -n - 1):
        with pytest.raises(IndexError):
            data[bad]
    with pytest.raises(IndexError):
        data.batch([0, n])


# ---------------------------------------------------------------------------- config fields


def test_tasks_override_publishes_only_the_chosen_tasks_with_the_same_targets(
    loader: Loader, root: Path
) -> None:
    full = open_split(loader, root, "val")
    names = list(loader.task_specs)
    for subset in ([names[-1]], [names[1], names[0]]):  # lists, as YAML gives them
        data = open_split(loader, root, "val", tasks=subset)
        assert data.config.tasks == tuple(subset)
        assert data.task_specs == {task: loader.task_specs[task] for task in subset}
        sample, batch = data[1], data.batch([1, 0])
        assert set(sample) == set(batch) == {"image", *subset}
        for key in sample:
            assert torch.equal(sample[key], full[1][key]), key
            assert torch.equal(batch[key][0], sample[key]), key


@pytest.mark.parametrize("loader", [ld for ld in LOADERS if ld.task_files], ids=lambda ld: ld.name)
def test_a_split_needs_only_the_files_of_the_chosen_tasks(loader: Loader, root: Path) -> None:
    named = {task: damage(root) for task, damage in loader.task_files.items()}
    kept = [task for task in loader.task_specs if task not in named]
    data = open_split(loader, root, "train", tasks=kept)
    assert set(data.batch(range(len(data)))) == {"image", *kept}
    for task, path in named.items():
        with pytest.raises(DataFilesError) as info:
            open_split(loader, root, "train", tasks=[*kept, task])
        assert str(path) in str(info.value), (task, str(info.value))


@pytest.mark.parametrize("split", SPLITS)
def test_caps_keep_the_first_samples_of_their_own_split_only(
    loader: Loader, root: Path, split: str
) -> None:
    n = loader.lengths[split]
    whole = open_split(loader, root, split)
    capped = open_split(loader, root, split, **{f"n_{split}": n - 1})
    assert len(capped) == n - 1
    first, expected = capped.batch(range(n - 1)), whole.batch(range(n - 1))
    assert all(torch.equal(first[key], expected[key]) for key in expected)
    assert len(open_split(loader, root, split, **{f"n_{split}": n})) == n
    others = {f"n_{other}": 1 for other in SPLITS if other != split}
    assert len(open_split(loader, root, split, **others)) == n
    message = f"asked for the first {n + 1} images but {loader.cap_holder(root, split)} holds {n}"
    with pytest.raises(ConfigError, match=re.escape(message)):
        open_split(loader, root, split, **{f"n_{split}": n + 1})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"root": ""}, "{config}.root must be a folder path or None; got ''"),
        ({"height": 4, "width": 16}, "height must be an integer in [8, 4096]; got 4"),
        ({"height": 16, "width": 4097}, "width must be an integer in [8, 4096]; got 4097"),
        ({"n_train": 0}, "n_train must be an integer in [1, inf); got 0"),
        ({"n_val": 0}, "n_val must be an integer in [1, inf); got 0"),
        ({"n_test": -2}, "n_test must be an integer in [1, inf); got -2"),
        ({"tasks": ["edge"]}, "unknown {name} task 'edge'; allowed: '{first}'"),
        ({"tasks": ["{first}", "{first}"]}, "tasks repeat a task"),
        ({"tasks": []}, "number of tasks must be an integer in [1, {count}]; got 0"),
        ({"max_images": 3}, "unknown {config} parameter 'max_images'; allowed: root, height"),
    ],
    ids=[
        "empty-root",
        "small-height",
        "large-width",
        "zero-n_train",
        "zero-n_val",
        "negative-n_test",
        "unknown-task",
        "repeated-task",
        "no-task",
        "unknown-field",
    ],
)
def test_config_rejects_bad_values_naming_what_is_allowed(
    loader: Loader, root: Path, overrides: dict[str, object], message: str
) -> None:
    names = {
        "name": loader.name,
        "config": loader.config_class.__name__,
        "first": next(iter(loader.task_specs)),
        "count": len(loader.task_specs),
    }
    if "tasks" in overrides:
        overrides = {"tasks": [task.format(**names) for task in overrides["tasks"]]}
    with pytest.raises(ConfigError, match=re.escape(message.format(**names))):
        get_dataset(loader.name, "val", "smoke", **{"root": str(root), **overrides})


# ----------------------------------------------------------------------- root and profiles


def test_root_is_the_override_then_the_data_dir_variable_then_the_repo_data_folder(
    loader: Loader, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert loader.root_of() == loader.root_of(None) == REPO / "data" / loader.name
    assert loader.root_of("/elsewhere") == Path("/elsewhere")
    monkeypatch.setenv(DATA_DIR_ENV, str(root.parent))
    assert loader.root_of() == root
    assert loader.root_of("/elsewhere") == Path("/elsewhere")
    data = get_dataset(loader.name, "val", "paper", **loader.size)  # found through the variable
    assert data.config.root == str(root) and len(data) == loader.lengths["val"]
    check_sample(data[0], loader.task_specs, loader.image_size)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(DATA_DIR_ENV, str(empty))
    assert len(open_split(loader, root, "val")) == loader.lengths["val"]  # the override wins
    with pytest.raises(DataFilesError) as info:
        get_dataset(loader.name, "val", "paper", **loader.size)
    check_files_error(info.value, loader, empty / loader.name, empty / loader.name, "not exist")


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_reads_the_same_files_at_its_preset_size(
    loader: Loader, root: Path, profile: str
) -> None:
    size = loader.profile_sizes[profile]
    for split in SPLITS:
        data = get_dataset(loader.name, split, profile, root=str(root), **{f"n_{split}": None})
        assert (len(data), data.image_size) == (loader.lengths[split], size)
    check_sample(data[len(data) - 1], loader.task_specs, size)


def test_the_smoke_profile_caps_the_training_split(loader: Loader, root: Path) -> None:
    cap = loader.smoke_train_cap
    with pytest.raises(ConfigError, match=re.escape(f"asked for the first {cap} images but")):
        get_dataset(loader.name, "train", "smoke", root=str(root))
    n = loader.lengths["train"]
    assert len(get_dataset(loader.name, "train", "smoke", root=str(root), n_train=n)) == n


# ----------------------------------------------------------------------------------- errors


def _layout_cases() -> list[object]:
    cases: list[object] = []
    for ld in LOADERS:
        cases.append(pytest.param(ld, None, "train", id=f"{ld.name}-root"))
        cases += [pytest.param(ld, e, s, id=f"{ld.name}-{e}") for e, s in ld.layout]
    return cases


@pytest.mark.parametrize(("loader", "entry", "split"), _layout_cases())
def test_a_missing_root_or_layout_entry_stops_with_one_error_naming_it_and_the_fix(
    loader: Loader, root: Path, entry: str | None, split: str
) -> None:
    if entry is None:
        root = named = root.parent / "missing"
    elif (root / entry).is_dir():
        named = _remove_folders(entry)(root)
    else:
        named = root / entry
        named.unlink()
    with pytest.raises(DataFilesError) as info:
        open_split(loader, root, split)
    check_files_error(info.value, loader, root, named, "does not exist")


def test_an_unreadable_image_stops_when_read_with_one_error_naming_it(
    loader: Loader, root: Path
) -> None:
    data = open_split(loader, root, "val")
    path = loader.image_file(data, 1)
    path.write_bytes(b"not an image")
    check_sample(data[0], loader.task_specs, loader.image_size)  # the others still read
    for read in (lambda: data[1], lambda: data.batch([0, 1])):
        with pytest.raises(DataFilesError) as info:
            read()
        check_files_error(info.value, loader, root, path, loader.unreadable)
    if loader.reads_images_when_opened:
        with pytest.raises(DataFilesError) as info:
            open_split(loader, root, "val")
        check_files_error(info.value, loader, root, path, loader.unreadable)
    else:  # listing and labels are fine: the image is only decoded when read
        assert len(open_split(loader, root, "val")) == loader.lengths["val"]


# --------------------------------------------------------------------------------- training


def test_shared_training_loop_trains_and_evaluates_on_the_fixture(
    loader: Loader, root: Path
) -> None:
    train, test = open_split(loader, root, "train"), open_split(loader, root, "test")
    tasks = make_tasks(train.task_specs)
    torch.manual_seed(0)
    model = create_model("segnet", train.task_specs, widths=(4, 8))
    config = TrainConfig(epochs=1, batch_size=2, progress=False, device="cpu", seed=0)
    result = fit(model, tasks, train, test, create_balancer("equal", list(tasks)), config)
    steps = loader.lengths["train"] // config.batch_size
    assert (result.epochs, result.steps, result.interrupted) == (1, steps, False)
    scores = evaluate(model, tasks, test, batch_size=config.eval_batch_size)
    assert scores == result.final  # same model, split and batches: the same metrics
    assert set(scores) == set(loader.task_specs)
    for task, metrics in scores.items():
        assert set(metrics) == set(tasks[task].metric_names), task
        assert all(math.isfinite(v) for v in metrics.values()), task
