"""Tests of mtlrepro.plots: deterministic PNGs and the layout of every figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mtlrepro import plots
from mtlrepro.config import ConfigError


@pytest.fixture
def rng() -> np.random.Generator:
    """Seeded random numbers."""
    return np.random.default_rng(0)


def _history(rng: np.random.Generator, runs: tuple[str, ...] = ("equal", "pcgrad")) -> pd.DataFrame:
    """A long history frame: 3 epochs x 2 steps of train losses, one val metric per epoch."""
    rows = []
    for run in runs:
        for epoch in range(3):
            for task, metric in (("segmentation", "miou"), ("depth", "abs_err")):
                for step in range(2):
                    rows.append(dict(run=run, epoch=epoch, step=2 * epoch + step, split="train",
                                     task=task, metric="loss", value=float(rng.random())))
                for name in (metric, "loss"):
                    rows.append(dict(run=run, epoch=epoch, step=2 * epoch + 1, split="val",
                                     task=task, metric=name, value=float(rng.random())))
        rows.append(dict(run=run, epoch=0, step=0, split="train", task="all", metric="loss",
                         value=1.0))  # the loop's total loss: no validation rows
    return pd.DataFrame(rows)


def _batch(n: int = 3, size: int = 8) -> tuple[torch.Tensor, dict, dict, dict]:
    """Images, targets, predictions of two runs and task kinds for every plot kind."""
    gen = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(n, 3, size, size, generator=gen), dim=1)
    targets = {
        "segmentation": torch.randint(-1, 6, (n, size, size), generator=gen),
        "depth": torch.rand(n, 1, size, size, generator=gen) * 5,
        "normal": normals,
        "edge": torch.randint(0, 2, (n, 1, size, size), generator=gen).float(),
        "colour": torch.arange(n),
    }
    kinds = {"segmentation": "segmentation", "depth": "depth", "normal": "normal",
             "edge": "binary", "colour": "classification"}
    predictions = {
        "single-task": {t: v.clone() for t, v in targets.items()},
        "shared": {t: v.clone() for t, v in targets.items()},
    }
    predictions["shared"]["depth"] = predictions["shared"]["depth"] * 2
    images = torch.rand(n, 3, size, size, generator=gen)
    return images, targets, predictions, kinds


def test_save_figure_is_byte_identical_and_carries_no_version(tmp_path: Path,
                                                              rng: np.random.Generator) -> None:
    fig = plots.plot_training_curves(_history(rng))
    first = plots.save_figure(fig, tmp_path, "fig1_curves").read_bytes()
    second = plots.save_figure(plots.plot_training_curves(_history(np.random.default_rng(0))),
                               tmp_path, "fig1_curves").read_bytes()
    assert first == second
    assert first.startswith(b"\x89PNG") and b"matplotlib" not in first
    assert [p.name for p in tmp_path.iterdir()] == ["fig1_curves.png"]


def test_notebook_display_shows_the_saved_png(tmp_path: Path) -> None:
    fig = plots.plot_metric_bars(pd.DataFrame({"method": ["a", "b"], "miou": [1.0, 2.0]}))
    assert fig._repr_png_() == plots.save_figure(fig, tmp_path, "fig2_bars").read_bytes()


def test_save_figure_rejects_names_with_extension(tmp_path: Path) -> None:
    fig = plots.plot_metric_bars(pd.DataFrame({"method": ["a"], "miou": [1.0]}))
    with pytest.raises(ConfigError, match="file stem"):
        plots.save_figure(fig, tmp_path, "fig1.png")


def test_training_curves_have_two_panels_per_task_and_a_line_per_run(
    rng: np.random.Generator,
) -> None:
    history = _history(rng)
    fig = plots.plot_training_curves(history)
    axes = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_title() for ax in axes[0]] == ["segmentation", "depth"]
    assert all(len(ax.get_lines()) == 2 for ax in axes.ravel())
    assert axes[1, 0].get_ylabel() == "val miou"  # the first non-loss val metric
    train = history[(history.run == "equal") & (history.task == "segmentation")
                    & (history.split == "train")]
    expected = train.groupby("epoch")["value"].mean().to_numpy()
    np.testing.assert_allclose(axes[0, 0].get_lines()[0].get_ydata(), expected)  # exact mean
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["equal", "pcgrad"]


def test_training_curves_without_run_column_and_chosen_metric(rng: np.random.Generator) -> None:
    history = _history(rng, runs=("only",)).drop(columns="run")
    fig = plots.plot_training_curves(history, primary_metrics={"depth": "loss"},
                                     tasks=["depth"])
    assert len(fig.axes) == 2 and not fig.legends
    assert fig.axes[1].get_ylabel() == "val loss"


def test_training_curves_name_missing_columns() -> None:
    with pytest.raises(ConfigError, match="lacks column\\(s\\) metric, value"):
        plots.plot_training_curves(pd.DataFrame({"epoch": [0], "split": ["train"],
                                                 "task": ["depth"]}))


def test_sample_grid_has_image_target_and_prediction_columns() -> None:
    images, targets, predictions, kinds = _batch()
    fig = plots.plot_sample_predictions(images, targets, predictions, kinds, max_samples=2)
    columns = 1 + len(kinds) * (1 + len(predictions))
    assert len(fig.axes) == 2 * columns
    titles = [ax.get_title() for ax in fig.axes[:columns]]
    assert titles[:4] == ["image", "segmentation\ntarget", "segmentation\nsingle-task",
                          "segmentation\nshared"]


def test_sample_grid_colours_follow_fixed_conventions() -> None:
    images, targets, predictions, kinds = _batch(n=1, size=2)
    targets["segmentation"] = torch.tensor([[[-1, 0], [1, 0]]])
    targets["normal"] = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, -1.0]]).reshape(1, 3, 1, 2)
    predictions = {"run": {t: v.clone() for t, v in targets.items()}}
    fig = plots.plot_sample_predictions(images, targets, predictions, kinds)
    seg = np.asarray(fig.axes[1].images[0].get_array())
    assert seg[0, 0].tolist() == [0.0, 0.0, 0.0]  # ignore label is black
    assert np.array_equal(seg[0, 1], seg[1, 1]) and not np.array_equal(seg[0, 1], seg[1, 0])
    normal = np.asarray(fig.axes[5].images[0].get_array())
    np.testing.assert_allclose(normal[0], [[0.5, 0.5, 1.0], [0.5, 0.5, 0.0]])  # (n + 1) / 2
    depth_clims = {fig.axes[k].images[0].get_clim() for k in (3, 4)}
    assert len(depth_clims) == 1  # target and prediction share one colour range


def test_sample_grid_rejects_unknown_kind_and_missing_prediction() -> None:
    images, targets, predictions, kinds = _batch()
    with pytest.raises(ConfigError, match="unknown kind of task 'depth'"):
        plots.plot_sample_predictions(images, targets, predictions, {**kinds, "depth": "height"})
    del predictions["shared"]["edge"]
    with pytest.raises(ConfigError, match="no prediction for task 'edge'"):
        plots.plot_sample_predictions(images, targets, predictions, kinds)


def test_metric_bars_have_one_panel_per_metric() -> None:
    table = pd.DataFrame({"method": ["a", "b", "c"], "miou": [1.0, 2.0, 3.0],
                          "abs_err": [0.3, 0.2, 0.1]})
    fig = plots.plot_metric_bars(table)
    assert [ax.get_title() for ax in fig.axes] == ["miou", "abs_err"]
    assert [p.get_height() for p in fig.axes[1].patches] == pytest.approx([0.3, 0.2, 0.1])
    with pytest.raises(ConfigError, match="not in table"):
        plots.plot_metric_bars(table, metrics=["delta"])


def test_class_distribution_figure_has_a_panel_per_task_and_one_for_the_condition():
    rng = np.random.default_rng(0)
    labels = {"colour": rng.integers(0, 12, 300), "type": rng.integers(0, 11, 300)}
    fig = plots.plot_class_distributions(labels, condition=("colour", 3, "type"))
    assert len(fig.axes) == 3
    # the sorted class shares of a task add up to 100 %
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert sum(heights) == pytest.approx(100.0)


def test_min_angle_figure_draws_one_line_per_architecture_and_the_threshold():
    curves = pd.DataFrame({"epoch": [1, 2, 1, 2], "min_angle": [5.0, 9.0, 3.0, 4.0],
                           "architecture": ["A", "A", "B", "B"]})
    fig = plots.plot_min_angle_curves(curves, theta=30)
    assert len(fig.axes[0].lines) == 3
    with pytest.raises(ConfigError, match="lack columns"):
        plots.plot_min_angle_curves(curves.drop(columns="epoch"))
