"""Tests for mtlrepro.data.decathlon: presets, determinism, layout and labels (one task per
domain, -1 for the others), every class in every split, domains that differ, task subsets and
caps, the cache, validation and speed."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mtlrepro.config import ConfigError, build_config
from mtlrepro.data import cache as data_cache
from mtlrepro.data import decathlon, get_dataset
from mtlrepro.data.base import SPLITS
from mtlrepro.data.decathlon import (
    DECATHLON_DOMAINS,
    DECATHLON_PRESETS,
    DECATHLON_TASKS,
    NO_FLIP_DOMAINS,
    DecathlonConfig,
    decathlon_images_per_second,
    decathlon_task_specs,
    generate_decathlon,
    generate_domain,
)
from mtlrepro.data.glyphs import sample_tasks
from mtlrepro.data.visual_decathlon import VISUAL_DECATHLON_DOMAINS
from mtlrepro.tasks import TaskSpec

SMOKE = build_config(DecathlonConfig, DECATHLON_PRESETS, "smoke")
SMOKE_SIZES = {  # per split: max(classes, round(0.05 * count)) per domain
    "train": [100, 24, 68, 40, 50, 17],
    "val": [15, 16, 27, 40, 10, 17],
    "test": [30, 16, 27, 40, 25, 17],
}


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Cache generated data into a temporary directory (never the repository)."""
    monkeypatch.setenv(data_cache.CACHE_ENV, str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def smoke() -> dict[str, np.ndarray]:
    """The smoke training split (seed 0), uncached."""
    return generate_decathlon(SMOKE, "train")


def test_domains_and_presets() -> None:
    assert DECATHLON_TASKS == ("pedestrian", "textures", "signs", "glyphs", "digits", "flowers")
    classes = [info.classes for info in DECATHLON_DOMAINS.values()]
    assert classes == [2, 16, 27, 40, 10, 17]
    for info in DECATHLON_DOMAINS.values():  # each stands for a real Decathlon domain
        assert info.stands_for in VISUAL_DECATHLON_DOMAINS
    assert set(NO_FLIP_DOMAINS) < set(DECATHLON_TASKS)
    sizes = {}
    for profile in ("smoke", "cpu", "paper"):
        c = build_config(DecathlonConfig, DECATHLON_PRESETS, profile)
        totals = [sum(c.domain_size(d, s) for d in DECATHLON_TASKS) for s in SPLITS]
        sizes[profile] = (c.height, c.width, totals)
    assert sizes == {
        "smoke": (32, 32, [299, 125, 155]),
        "cpu": (32, 32, [5354, 1152, 2700]),
        "paper": (64, 64, [10708, 2304, 5400]),
    }
    cpu = build_config(DecathlonConfig, DECATHLON_PRESETS, "cpu")
    train = [cpu.domain_size(d, "train") for d in DECATHLON_TASKS]
    assert min(train) >= 200 and max(train) <= 2000 and max(train) / min(train) > 9
    for split, expected in SMOKE_SIZES.items():
        assert [SMOKE.domain_size(d, split) for d in DECATHLON_TASKS] == expected


def test_generation_is_deterministic_and_depends_on_seed_and_split(
    smoke: dict[str, np.ndarray],
) -> None:
    again = generate_decathlon(SMOKE, "train")
    for key, value in smoke.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)
    other_seed = generate_domain(dataclasses.replace(SMOKE, seed=1), "train", "signs")
    signs = smoke["image"][smoke["domain"] == 2]
    val = generate_domain(SMOKE, "val", "signs")
    assert (other_seed != signs).mean() > 0.5
    assert (val != signs[: len(val)]).mean() > 0.5


def test_a_smaller_scale_is_a_prefix_of_every_domain() -> None:
    small = dataclasses.replace(SMOKE, scale=0.01)
    for domain in ("pedestrian", "digits"):
        big = generate_domain(SMOKE, "test", domain)
        few = generate_domain(small, "test", domain)
        assert len(few) < len(big)
        np.testing.assert_array_equal(few, big[: len(few)], err_msg=domain)


def test_layout_dtypes_and_round_robin_order(smoke: dict[str, np.ndarray]) -> None:
    n = sum(SMOKE_SIZES["train"])
    assert smoke["image"].shape == (n, 3, 32, 32) and smoke["image"].dtype == np.uint8
    assert smoke["domain"].dtype == np.int8 and smoke["label"].dtype == np.int16
    domain, label = smoke["domain"].astype(int), smoke["label"].astype(int)
    assert domain[:6].tolist() == list(range(6))  # the first image of every domain
    for d, (name, info) in enumerate(DECATHLON_DOMAINS.items()):
        rows = np.flatnonzero(domain == d)
        assert len(rows) == SMOKE_SIZES["train"][d], name
        assert label[rows].tolist() == [j % info.classes for j in range(len(rows))], name
    # Round robin: the j-th image of each domain comes before any (j + 1)-th one.
    rank = np.concatenate([np.flatnonzero(domain == d).argsort().argsort() for d in range(6)])
    order = np.concatenate([np.flatnonzero(domain == d) for d in range(6)])
    by_row = np.empty(n, dtype=int)
    by_row[order] = rank
    assert (np.diff(by_row) >= 0).all()


def test_dataset_samples_labels_and_tasks() -> None:
    data = get_dataset("decathlon", "train", "smoke")
    specs = {d: TaskSpec(d, "classification", i.classes) for d, i in DECATHLON_DOMAINS.items()}
    assert (data.name, len(data), data.image_size) == ("decathlon", 299, (32, 32))
    assert data.task_specs == specs == decathlon_task_specs()
    assert data.config.tasks == DECATHLON_TASKS
    owner = sample_tasks(data)
    assert owner[:12].tolist() == list(range(6)) * 2
    sample = data[9]  # the second image of glyphs: class 1
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 32, 32)
    assert [int(sample[t]) for t in specs] == [-1, -1, -1, 1, -1, -1]
    assert all(sample[t].dtype == torch.int64 for t in specs)
    index = torch.tensor([7, 0, 7, 298])
    batch = data.batch(index)
    for key, value in batch.items():
        expected = torch.stack([data[int(i)][key] for i in index])
        assert value.dtype == expected.dtype and torch.equal(value, expected), key


def test_every_class_of_every_domain_is_in_every_split_and_labels_are_in_range() -> None:
    for split in SPLITS:
        data = get_dataset("decathlon", split, "smoke")
        owner = sample_tasks(data)
        for d, (task, spec) in enumerate(data.task_specs.items()):
            labels = data.tensors[task].long()
            assert set(labels[owner == d].tolist()) == set(range(spec.num_classes)), (split, task)
            assert bool((labels[owner != d] == -1).all()), (split, task)
            assert int(labels.max()) < spec.num_classes


def test_domains_differ_in_colour_and_brightness(smoke: dict[str, np.ndarray]) -> None:
    image = smoke["image"].astype(np.float32) / 255
    domain = smoke["domain"]
    spread = (image.max(1) - image.min(1)).mean((1, 2))  # colourfulness per image
    brightness = image.mean((1, 2, 3))
    for d, (name, info) in enumerate(DECATHLON_DOMAINS.items()):
        if info.grey:
            assert spread[domain == d].max() == 0, name
        else:
            assert spread[domain == d].mean() > 0.1, name
    # One-way analysis of variance of the brightness over the domains.
    groups = [brightness[domain == d] for d in range(6)]
    means = np.array([g.mean() for g in groups])
    within = np.mean([g.var(ddof=1) for g in groups])
    between = np.var(means, ddof=1) * np.mean([len(g) for g in groups])
    assert between / within > 20, (means, within)
    assert means[3] > 0.75  # glyphs: dark ink on white paper


def test_raw_pixels_already_carry_the_class() -> None:
    # Nearest class mean on raw pixels, 10 / 6 training images per class: above chance although
    # positions, colours and phases vary (a small CNN reaches 95 % / 49 %, see the module doc).
    config = dataclasses.replace(SMOKE, scale=0.2)
    accuracy = {}
    for domain in ("signs", "textures"):
        classes = DECATHLON_DOMAINS[domain].classes
        train = generate_domain(config, "train", domain).reshape(-1, 3 * 32 * 32) / 255.0
        test = generate_domain(config, "test", domain).reshape(-1, 3 * 32 * 32) / 255.0
        means = np.stack([train[c::classes].mean(0) for c in range(classes)])
        guess = ((test[:, None] - means[None]) ** 2).sum(-1).argmin(1)
        accuracy[domain] = (guess == np.arange(len(test)) % classes).mean() * classes
    assert accuracy["signs"] > 3 and accuracy["textures"] > 2, accuracy  # times chance


def test_tasks_choose_the_domains_and_caps_the_first_images() -> None:
    full = get_dataset("decathlon", "val", "smoke")
    owner = sample_tasks(full)
    one = get_dataset("decathlon", "val", "smoke", tasks=["flowers"])  # YAML gives lists
    assert list(one.task_specs) == ["flowers"] and len(one) == 17
    assert int(one.tensors["flowers"].min()) == 0  # single-task data: nothing ignored
    assert torch.equal(one.tensors["image"], full.tensors["image"][owner == 5])
    two = get_dataset("decathlon", "val", "smoke", tasks=("flowers", "pedestrian"))
    rows = (owner == 0) | (owner == 5)
    assert list(two.task_specs) == ["flowers", "pedestrian"] and len(two) == int(rows.sum())
    assert torch.equal(two.tensors["image"], full.tensors["image"][rows])  # order kept
    assert torch.equal(two.tensors["pedestrian"], full.tensors["pedestrian"][rows])
    capped = get_dataset("decathlon", "val", "smoke", n_val=7)
    assert torch.equal(capped.tensors["image"], full.tensors["image"][:7])
    message = "decathlon val: asked for the first 126 images but the split holds 125"
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_dataset("decathlon", "val", "smoke", n_val=126)


def test_cache_round_trip_serves_every_task_subset(
    cache_in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = get_dataset("decathlon", "test", "smoke")
    assert len(list(cache_in_tmp.glob("decathlon-test-*.npz"))) == 1

    def fail(*args: object) -> None:
        raise AssertionError("generated although a cache file exists")

    monkeypatch.setattr(decathlon, "generate_decathlon", fail)
    again = get_dataset("decathlon", "test", "smoke", tasks=("signs",), n_val=3, n_train=5)
    owner = sample_tasks(first)
    assert torch.equal(again.tensors["image"], first.tensors["image"][owner == 2])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"height": 8}, "height must be an integer in [16, 512]; got 8"),
        ({"width": 1024}, "width must be an integer in [16, 512]; got 1024"),
        ({"scale": 0}, "scale must be a number in (0.0, 100.0]; got 0"),
        ({"scale": "big"}, "DecathlonConfig.scale must be of type float; got 'big'"),
        ({"n_train": 0}, "n_train must be an integer in [1, inf); got 0"),
        ({"seed": -1}, "seed must be an integer in [0, 9223372036854775807]; got -1"),
        ({"tasks": ["dtd"]}, "unknown decathlon task 'dtd'; allowed: 'pedestrian', 'textures'"),
        ({"tasks": []}, "number of tasks must be an integer in [1, 6]; got 0"),
        ({"tasks": ["signs", "signs"]}, "tasks repeat a task"),
        ({"domains": ["signs"]}, "unknown DecathlonConfig parameter 'domains'; allowed: height"),
    ],
)
def test_bad_overrides_stop_with_a_clear_message(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_dataset("decathlon", "train", "smoke", **overrides)


def test_generation_is_fast() -> None:
    # The cpu preset's 9,206 images take about 3 s on one core (~3,000 / s); slack for load.
    assert decathlon_images_per_second(scale=0.1) > 500
