"""Tests for mtlrepro.data.glyphs: determinism, layout and labels (one task per alphabet, -1 for
the others), splits by drawing, alphabet styles that differ, distinct characters, the cache,
validation and speed."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mtlrepro.config import ConfigError, build_config
from mtlrepro.data import cache as data_cache
from mtlrepro.data import get_dataset, glyphs
from mtlrepro.data.base import SPLITS
from mtlrepro.data.glyphs import (
    GLYPHS_PRESETS,
    MIN_TEMPLATE_DIFFERENCE,
    GlyphsConfig,
    alphabet_styles,
    generate_glyphs,
    glyph_characters,
    glyphs_images_per_second,
    glyphs_task_specs,
    sample_tasks,
)
from mtlrepro.tasks import TaskSpec

SMOKE = build_config(GlyphsConfig, GLYPHS_PRESETS, "smoke")
# 5 alphabets, 4 drawings of each of their 20 characters: 400 images at 28x28.
STYLES = GlyphsConfig(n_alphabets=5, train_drawings=4)


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Cache generated data into a temporary directory (never the repository)."""
    monkeypatch.setenv(data_cache.CACHE_ENV, str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def smoke() -> dict[str, np.ndarray]:
    """The smoke training split (seed 0), uncached."""
    return generate_glyphs(SMOKE, "train")


@pytest.fixture(scope="module")
def styled() -> dict[str, np.ndarray]:
    """400 training images of 5 alphabets."""
    return generate_glyphs(STYLES, "train")


def test_presets() -> None:
    sizes = {}
    for profile in ("smoke", "cpu", "paper"):
        c = build_config(GlyphsConfig, GLYPHS_PRESETS, profile)
        drawings = (c.train_drawings, c.val_drawings, c.test_drawings)
        sizes[profile] = (c.height, c.n_alphabets, c.n_characters, drawings)
    assert sizes == {
        "smoke": (28, 3, 20, (2, 1, 1)),
        "cpu": (28, 5, 20, (10, 5, 15)),
        "paper": (105, 20, 20, (10, 4, 6)),  # paper D: 20 tasks, 20-way; 20 drawings
    }


def test_generation_is_deterministic_and_depends_on_seed_and_split(
    smoke: dict[str, np.ndarray],
) -> None:
    again = generate_glyphs(SMOKE, "train")
    for key, value in smoke.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)
    other_seed = generate_glyphs(dataclasses.replace(SMOKE, seed=1), "train")["image"]
    val = generate_glyphs(SMOKE, "val")["image"]
    assert (other_seed != smoke["image"]).mean() > 0.05
    assert (val != smoke["image"][: len(val)]).mean() > 0.05


def test_fewer_drawings_or_alphabets_are_a_prefix(smoke: dict[str, np.ndarray]) -> None:
    one = generate_glyphs(dataclasses.replace(SMOKE, train_drawings=1), "train")
    np.testing.assert_array_equal(one["image"], smoke["image"][: len(one["image"])])
    three, five = glyph_characters(0, 3, 20), glyph_characters(0, 5, 20)
    for key, value in three.items():
        np.testing.assert_array_equal(five[key][:3], value, err_msg=key)


def test_layout_dtypes_and_order(smoke: dict[str, np.ndarray]) -> None:
    n = 3 * 20 * 2
    assert smoke["image"].shape == (n, 1, 28, 28) and smoke["image"].dtype == np.uint8
    assert smoke["alphabet"].tolist() == [i % 3 for i in range(n)]  # alphabet fastest
    assert smoke["character"].tolist() == [i // 3 % 20 for i in range(n)]
    paper_white = (smoke["image"] == 255).mean()
    assert 0.75 < paper_white < 0.97  # dark strokes on white paper, as Omniglot


def test_dataset_samples_labels_and_tasks() -> None:
    data = get_dataset("glyphs", "train", "smoke")
    specs = {f"alphabet{a}": TaskSpec(f"alphabet{a}", "classification", 20) for a in range(3)}
    assert (data.name, len(data), data.image_size, data.task_specs) == ("glyphs", 120, (28, 28),
                                                                        specs)  # fmt: skip
    assert data.task_specs == glyphs_task_specs(3)
    assert data.config.tasks == tuple(specs)
    sample = data[4]
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 28, 28)
    assert torch.equal(sample["image"][0], sample["image"][2])
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) == 1.0
    assert [int(sample[t]) for t in specs] == [-1, 1, -1]  # sample 4: alphabet 1, character 1
    assert all(sample[t].dtype == torch.int64 for t in specs)
    assert sample_tasks(data).tolist() == [i % 3 for i in range(120)]
    index = torch.tensor([7, 0, 7, 119])
    batch = data.batch(index)
    for key, value in batch.items():
        expected = torch.stack([data[int(i)][key] for i in index])
        assert value.dtype == expected.dtype and torch.equal(value, expected), key


def test_every_class_of_every_alphabet_is_in_every_split() -> None:
    for split in SPLITS:
        data = get_dataset("glyphs", split, "smoke")
        owner = sample_tasks(data)
        for a, task in enumerate(data.task_specs):
            labels = data.tensors[task].long()
            assert set(labels[owner == a].tolist()) == set(range(20)), (split, task)
            assert bool((labels[owner != a] == -1).all()), (split, task)


def test_tasks_choose_the_alphabets_and_caps_the_first_images() -> None:
    full = get_dataset("glyphs", "val", "smoke")
    one = get_dataset("glyphs", "val", "smoke", tasks=["alphabet2"])  # YAML gives lists
    assert list(one.task_specs) == ["alphabet2"] and len(one) == 20
    assert int(one.tensors["alphabet2"].min()) == 0  # single-task data: nothing ignored
    assert torch.equal(one.tensors["image"], full.tensors["image"][2::3])
    two = get_dataset("glyphs", "val", "smoke", tasks=("alphabet2", "alphabet0"))
    assert sample_tasks(two).tolist() == [1, 0] * 20
    capped = get_dataset("glyphs", "val", "smoke", n_val=7)
    assert torch.equal(capped.tensors["image"], full.tensors["image"][:7])
    message = "glyphs val: asked for the first 61 images but the split holds 60"
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_dataset("glyphs", "val", "smoke", n_val=61)


def test_alphabets_differ_in_style(styled: dict[str, np.ndarray]) -> None:
    styles = alphabet_styles(0, 5)
    assert styles["width"].max() / styles["width"].min() > 1.5
    assert styles["curvature"].min() < 0.2 and styles["curvature"].max() > 0.8
    assert 0 < styles["snap"].sum() < 5  # some blocky alphabets, some not
    # Ink fraction per image: one-way analysis of variance over the alphabets.
    ink = 1 - styled["image"].reshape(len(styled["image"]), -1).mean(1) / 255
    groups = [ink[styled["alphabet"] == a] for a in range(5)]
    means = np.array([g.mean() for g in groups])
    within = np.mean([g.var(ddof=1) for g in groups])
    between = len(groups[0]) * means.var(ddof=1)
    assert between / within > 20, (means, within)
    assert means.max() / means.min() > 1.4


def test_characters_of_an_alphabet_are_distinct_and_recognisable(
    styled: dict[str, np.ndarray],
) -> None:
    templates = glyph_characters(0, 5, 20)["template"].reshape(5, 20, -1)
    for a in range(5):
        diff = np.abs(templates[a][:, None] - templates[a][None]).mean(-1)
        off_diagonal = diff[~np.eye(20, dtype=bool)]
        assert off_diagonal.min() >= MIN_TEMPLATE_DIFFERENCE, a
    # Nearest class mean (3 drawings per class) on the 4th drawing: far above chance (5 %),
    # but the drawings vary enough that it is not perfect.
    images = styled["image"].reshape(4, 5, 20, -1).astype(np.float32) / 255
    means = images[:3].mean(0)
    held_out = images[3]
    distance = ((held_out[:, :, None] - means[:, None, :]) ** 2).sum(-1)
    accuracy = (distance.argmin(-1) == np.arange(20)).mean()
    assert 0.4 < accuracy < 1.0, accuracy


def test_cache_round_trip_serves_every_task_subset(
    cache_in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = get_dataset("glyphs", "test", "smoke")
    assert len(list(cache_in_tmp.glob("glyphs-test-*.npz"))) == 1

    def fail(*args: object) -> None:
        raise AssertionError("generated although a cache file exists")

    monkeypatch.setattr(glyphs, "generate_glyphs", fail)
    again = get_dataset("glyphs", "test", "smoke", tasks=("alphabet1",), n_val=3, n_train=5)
    assert torch.equal(again.tensors["image"], first.tensors["image"][1::3])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_alphabets": 0}, "n_alphabets must be an integer in [1, 1000]; got 0"),
        ({"n_characters": 1}, "n_characters must be an integer in [2, 200]; got 1"),
        ({"train_drawings": 0}, "train_drawings must be an integer in [1, 100000]; got 0"),
        ({"test_drawings": 2.5}, "GlyphsConfig.test_drawings must be of type int; got 2.5"),
        ({"height": 8}, "height must be an integer in [12, 1024]; got 8"),
        ({"n_train": 0}, "n_train must be an integer in [1, inf); got 0"),
        ({"seed": -1}, "seed must be an integer in [0, 9223372036854775807]; got -1"),
        ({"tasks": ["alphabet3"]}, "unknown glyphs task 'alphabet3'; allowed: 'alphabet0', "),
        ({"tasks": []}, "number of tasks must be an integer in [1, 3]; got 0"),
        ({"tasks": ["alphabet1", "alphabet1"]}, "tasks repeat a task"),
        ({"drawings": 3}, "unknown GlyphsConfig parameter 'drawings'; allowed: height, width"),
    ],
)
def test_bad_overrides_stop_with_a_clear_message(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_dataset("glyphs", "train", "smoke", **overrides)


def test_generation_is_fast() -> None:
    # The cpu preset's 3,000 images take about 2 s on one core (1,500 / s); slack for load.
    assert glyphs_images_per_second(n_drawings=2) > 300
