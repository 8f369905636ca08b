"""Tests for mtlrepro.data: registry, get_dataset, TensorDataset and the disk cache."""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import mtlrepro
from mtlrepro.config import ConfigError
from mtlrepro.data import DATASETS, TensorDataset, dataset_names, get_dataset, scenes
from mtlrepro.data import cache as data_cache
from mtlrepro.data.base import LazyDataset, check_real_dataset_config
from mtlrepro.data.scenes import SCENES_TASKS
from mtlrepro.tasks import TaskSpec

TARGET_DTYPES = {
    "segmentation": torch.int64,
    "depth": torch.float32,
    "normal": torch.float32,
    "edge": torch.float32,
    "saliency": torch.float32,
    "parts": torch.int64,
}


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test caches into its own temporary directory (never the repository)."""
    monkeypatch.setenv(data_cache.CACHE_ENV, str(tmp_path))
    return tmp_path


def _fail(*args: object, **kwargs: object) -> None:
    """Stands in for the generator to prove that data came from the cache."""
    raise AssertionError("generated although a cache file exists")


def test_registry_holds_exactly_the_expected_datasets() -> None:
    expected = ["celebamask", "cityscapes", "decathlon", "faces", "glyphs", "nyuv2", "omniglot",
                "scenes", "vehicles", "vehiclex", "visual_decathlon"]  # fmt: skip
    assert dataset_names() == expected
    assert list(DATASETS) == expected


def test_get_dataset_returns_documented_dtypes_and_shapes() -> None:
    data = get_dataset("scenes", "train", "smoke")
    assert (data.name, data.split, len(data), data.image_size) == ("scenes", "train", 48, (24, 32))
    assert list(data.task_specs) == list(SCENES_TASKS)
    assert data.config.height == 24
    sample = data[3]
    assert set(sample) == {"image", *SCENES_TASKS}
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 24, 32)
    assert 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    assert sample["segmentation"].shape == (24, 32) and sample["depth"].shape == (1, 24, 32)
    assert sample["normal"].shape == (3, 24, 32)
    for task, dtype in TARGET_DTYPES.items():
        assert sample[task].dtype == dtype, task


def test_batch_equals_stacked_samples() -> None:
    data = get_dataset("scenes", "val", "smoke")
    index = torch.tensor([5, 0, 5, 11])
    batch = data.batch(index)
    for key, value in batch.items():
        expected = torch.stack([data[int(i)][key] for i in index])
        assert value.dtype == expected.dtype and torch.equal(value, expected), key


def test_tasks_override_selects_a_subset() -> None:
    data = get_dataset("scenes", "test", "smoke", tasks=["depth", "edge"])  # YAML gives lists
    assert list(data.task_specs) == ["depth", "edge"]
    assert set(data.tensors) == {"image", "depth", "edge"}
    assert set(data.batch(torch.arange(2))) == {"image", "depth", "edge"}


def test_cache_round_trip_returns_identical_tensors(
    cache_in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = get_dataset("scenes", "train", "smoke")
    files = list(cache_in_tmp.glob("scenes-train-*.npz"))
    assert len(files) == 1 and not list(cache_in_tmp.glob("*.tmp"))  # atomic: no leftovers
    monkeypatch.setattr(scenes, "generate_scenes", _fail)
    second = get_dataset("scenes", "train", "smoke")
    for key in first.tensors:
        assert torch.equal(first.tensors[key], second.tensors[key]), key
    # A task subset is served from the same file.
    subset = get_dataset("scenes", "train", "smoke", tasks=("parts",))
    assert torch.equal(subset.tensors["parts"], first.tensors["parts"])


def test_corrupt_cache_file_is_regenerated_with_one_warning(
    cache_in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = get_dataset("scenes", "val", "smoke")
    (path,) = cache_in_tmp.glob("scenes-val-*.npz")
    path.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable.*regenerating"):
        repaired = get_dataset("scenes", "val", "smoke")
    assert torch.equal(repaired.tensors["depth"], original.tensors["depth"])
    path.write_bytes(b"corrupt again")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same file does not warn twice
        get_dataset("scenes", "val", "smoke")
    monkeypatch.setattr(scenes, "generate_scenes", _fail)
    reloaded = get_dataset("scenes", "val", "smoke")  # the rewritten file is valid
    assert torch.equal(reloaded.tensors["image"], original.tensors["image"])


def test_interrupted_write_leaves_no_partial_file(
    cache_in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted_savez(file: object, **arrays: object) -> None:
        file.write(b"half a file")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        get_dataset("scenes", "test", "smoke")
    assert os.listdir(cache_in_tmp) == []


def test_cache_file_name_depends_on_dataset_split_config_and_version() -> None:
    config = {"height": 24, "seed": 0}
    base = data_cache.cache_path("scenes", "train", config, 1)
    assert base == data_cache.cache_path("scenes", "train", dict(config), 1)  # stable
    others = [
        data_cache.cache_path("other", "train", config, 1),
        data_cache.cache_path("scenes", "val", config, 1),
        data_cache.cache_path("scenes", "train", {**config, "seed": 1}, 1),
        data_cache.cache_path("scenes", "train", config, 2),
    ]
    assert len({base, *others}) == 5


def test_cache_of_a_split_ignores_other_splits_sizes(cache_in_tmp: Path) -> None:
    get_dataset("scenes", "train", "smoke", n_val=20)
    get_dataset("scenes", "train", "smoke", n_val=30, tasks=("depth",))
    assert len(list(cache_in_tmp.glob("scenes-train-*.npz"))) == 1
    get_dataset("scenes", "train", "smoke", n_train=20)
    assert len(list(cache_in_tmp.glob("scenes-train-*.npz"))) == 2


def test_default_cache_dir_is_under_the_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data_cache.CACHE_ENV)
    repo_root = Path(mtlrepro.__file__).resolve().parents[1]
    assert data_cache.cache_dir() == repo_root / ".cache" / "data"


@pytest.mark.parametrize(
    ("args", "overrides", "message"),
    [
        (
            ("mnist", "train", "smoke"),
            {},
            "unknown dataset 'mnist'; allowed: 'celebamask', ",
        ),
        (("scenes", "dev", "smoke"), {}, "unknown split 'dev'; allowed: 'train', 'val', 'test'"),
        (("scenes", "train", "gpu"), {}, "unknown profile 'gpu'; allowed: 'smoke', 'cpu'"),
        (("scenes", "train", "smoke"), {"tasks": ("depth", "colour")}, "unknown scenes task"),
        (("scenes", "train", "smoke"), {"n_images": 3}, "parameter 'n_images'; allowed: height"),
        (("scenes", "train", "smoke"), {"noise_std": 2.0}, "noise_std must be a number in [0.0"),
        (("scenes", "train", "smoke"), {"height": "24"}, "ScenesConfig.height must be of type int"),
    ],
)
def test_get_dataset_rejects_bad_arguments_naming_what_is_allowed(
    args: tuple[str, str, str], overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_dataset(*args, **overrides)


def test_tensor_dataset_rejects_inconsistent_tensors() -> None:
    specs = {"depth": TaskSpec("depth", "depth")}
    image = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="no tensor for task"):
        TensorDataset("toy", "train", {"image": image}, specs, None)
    with pytest.raises(ValueError, match="lengths differ"):
        TensorDataset(
            "toy", "train", {"image": image, "depth": torch.ones(3, 1, 2, 2)}, specs, None
        )
    with pytest.raises(ValueError, match="'image'"):
        TensorDataset("toy", "train", {"depth": torch.ones(4, 1, 2, 2)}, specs, None)


def test_tensor_dataset_converts_compact_storage() -> None:
    specs = {"segmentation": TaskSpec("segmentation", "segmentation", 3)}
    image = torch.tensor([[[[0, 255]]]], dtype=torch.uint8).expand(1, 3, 1, 2)
    labels = torch.tensor([[[-1, 2]]], dtype=torch.int8)
    data = TensorDataset("toy", "train", {"image": image, "segmentation": labels}, specs, None)
    batch = data.batch([0])
    assert torch.equal(batch["image"][0, 0], torch.tensor([[0.0, 1.0]]))  # uint8 / 255
    assert batch["segmentation"].dtype == torch.int64
    assert batch["segmentation"].tolist() == [[[-1, 2]]]  # ignore label survives the cast


class _ToyLazy(LazyDataset):
    """A lazy dataset whose sample ``i`` is built from ``i`` (records what it loaded)."""

    def __init__(self, n: int) -> None:
        self.name, self.split, self.config = "toy", "val", None
        self.task_specs = {"segmentation": TaskSpec("segmentation", "segmentation", 3)}
        self._size = (2, 3)
        self.n = n
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return self.n

    def _sample(self, i: int) -> dict[str, torch.Tensor]:
        self.loaded.append(i)
        return {
            "segmentation": torch.full((2, 3), i % 3, dtype=torch.int64),
            "image": torch.full((3, 2, 3), i / 10),
        }


def test_lazy_dataset_stacks_samples_and_checks_indices() -> None:
    data = _ToyLazy(5)
    batch = data.batch(torch.tensor([4, 0, 4]))
    assert list(batch) == ["image", "segmentation"]  # image first, then the tasks in order
    assert batch["image"].shape == (3, 3, 2, 3) and data.loaded == [4, 0, 4]
    assert batch["segmentation"][:, 0, 0].tolist() == [1, 0, 1]
    assert torch.equal(data[-1]["image"], data[4]["image"])  # negative index counts from the end
    with pytest.raises(IndexError, match="index 5 out of range for 5 samples"):
        data[5]
    with pytest.raises(IndexError, match=re.escape("indices [-1, 7] out of range")):
        data.batch([0, -1, 7])
    assert data.image_size == (2, 3)
    assert repr(data) == "_ToyLazy('val', n=5, tasks=[segmentation])"


@dataclasses.dataclass(frozen=True)
class _ToyRealConfig:
    root: str | None = None
    height: int | None = 16
    width: int | None = 16
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    tasks: tuple[str, ...] = ("depth",)


@pytest.mark.parametrize(
    ("fields", "optional_size", "message"),
    [
        ({"root": ""}, False, "_ToyRealConfig.root must be a folder path or None; got ''"),
        ({"height": 4}, False, "height must be an integer in [8, 4096]"),
        ({"width": 5000}, True, "width must be an integer in [8, 4096]"),
        ({"height": None, "width": None}, False, "height must be an integer"),
        ({"height": None}, True, "_ToyRealConfig.height and width must both be set or both"),
        ({"n_test": 0}, False, "n_test must be an integer in [1, inf)"),
        ({"tasks": ("depth", "edge")}, False, "unknown toy task 'edge'"),
    ],
)
def test_real_dataset_config_check_rejects_bad_shared_fields(
    fields: dict[str, object], optional_size: bool, message: str
) -> None:
    check_real_dataset_config(_ToyRealConfig(), "toy", ("depth", "normal"))  # defaults are valid
    config = dataclasses.replace(_ToyRealConfig(), **fields)
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_real_dataset_config(config, "toy", ("depth", "normal"), optional_size=optional_size)


def test_real_dataset_config_check_allows_native_size_only_when_optional() -> None:
    native = _ToyRealConfig(height=None, width=None, n_train=1, tasks=("normal", "depth"))
    check_real_dataset_config(native, "toy", ("depth", "normal"), optional_size=True)
