"""Tests of mtlrepro.plots: deterministic PNGs and the layout of every figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest
import torch

from mtlrepro import plots
from mtlrepro.config import ConfigError
from mtlrepro.experiments.distinctiveness import figures as a_figures
from mtlrepro.experiments.group_sparsity import figures as b_figures


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
    assert axes[1, 0].get_ylabel() == "val mIoU (%)"  # the first non-loss val metric
    train = history[(history.run == "equal") & (history.task == "segmentation")
                    & (history.split == "train")]
    expected = train.groupby("epoch")["value"].mean().to_numpy()
    np.testing.assert_allclose(axes[0, 0].get_lines()[0].get_ydata(), expected)  # exact mean
    assert [t.get_text() for t in fig.subfigs[0].legends[0].get_texts()] == ["equal", "pcgrad"]


def test_training_curves_without_run_column_and_chosen_metric(rng: np.random.Generator) -> None:
    history = _history(rng, runs=("only",)).drop(columns="run")
    fig = plots.plot_training_curves(history, primary_metrics={"depth": "loss"},
                                     tasks=["depth"])
    assert len(fig.axes) == 2 and not fig.legends and not fig.subfigs[0].legends
    assert fig.axes[1].get_ylabel() == "val loss"


def test_training_curves_name_missing_columns() -> None:
    with pytest.raises(ConfigError, match="lacks column\\(s\\) metric, value"):
        plots.plot_training_curves(pd.DataFrame({"epoch": [0], "split": ["train"],
                                                 "task": ["depth"]}))


def test_sample_grid_has_image_target_and_prediction_columns() -> None:
    images, targets, predictions, kinds = _batch()
    fig = plots.plot_sample_predictions(images, targets, predictions, kinds, max_samples=2)
    columns = 1 + 1 + len(predictions) + 1  # image, target, runs, key
    assert len(fig.axes) == 2 * len(kinds) * columns  # one row per (sample, task)
    titles = [ax.get_title() for ax in fig.axes[:columns]]
    assert titles == ["sample 1", "target", "single-task", "shared", ""]
    second = [ax.get_title() for ax in fig.axes[len(kinds) * columns:][:columns]]
    assert second[0] == "sample 2"


def test_sample_grid_has_a_key_per_task_row() -> None:
    images, targets, predictions, kinds = _batch(n=1)
    fig = plots.plot_sample_predictions(images, targets, predictions, kinds)
    keys = dict(zip(kinds, np.array(fig.axes).reshape(len(kinds), -1)[:, -1], strict=True))
    legend = keys["segmentation"].get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[:2] == ["class 0", "class 1"] and labels[-1] == "ignored"
    depth_bar = keys["depth"].child_axes[0]
    assert depth_bar.get_ylabel() == "depth (m)"
    assert keys["edge"].child_axes[0].get_ylabel() == "probability"
    assert "RGB" in keys["normal"].child_axes[0].get_title()
    named = plots.plot_sample_predictions(images, targets, predictions, kinds,
                                          class_names={"segmentation": list("abcdef")})
    key = np.array(named.axes).reshape(len(kinds), -1)[0, -1]
    assert [t.get_text() for t in key.get_legend().get_texts()][:2] == ["a", "b"]


def test_sample_grid_colours_follow_fixed_conventions() -> None:
    images, targets, predictions, kinds = _batch(n=1, size=2)
    targets["segmentation"] = torch.tensor([[[-1, 0], [1, 0]]])
    targets["normal"] = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, -1.0]]).reshape(1, 3, 1, 2)
    predictions = {"run": {t: v.clone() for t, v in targets.items()}}
    fig = plots.plot_sample_predictions(images, targets, predictions, kinds)
    seg = np.asarray(fig.axes[1].images[0].get_array())
    assert seg[0, 0].tolist() == [0.0, 0.0, 0.0]  # ignore label is black
    assert np.array_equal(seg[0, 1], seg[1, 1]) and not np.array_equal(seg[0, 1], seg[1, 0])
    columns = 4  # image, target, run, key
    normal = np.asarray(fig.axes[2 * columns + 1].images[0].get_array())
    np.testing.assert_allclose(normal[0], [[0.5, 0.5, 1.0], [0.5, 0.5, 0.0]])  # (n + 1) / 2
    depth_clims = {fig.axes[columns + k].images[0].get_clim() for k in (1, 2)}
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
    fig = a_figures.plot_class_distributions(labels, condition=("colour", 3, "type"))
    assert len(fig.axes) == 3
    # the sorted class shares of a task add up to 100 %
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert sum(heights) == pytest.approx(100.0)


def test_min_angle_figure_draws_one_line_per_architecture_and_the_threshold():
    curves = pd.DataFrame({"epoch": [1, 2, 1, 2], "min_angle": [5.0, 9.0, 3.0, 4.0],
                           "architecture": ["A", "A", "B", "B"]})
    fig = a_figures.plot_min_angle_curves(curves, theta=30)
    assert len(fig.axes[0].lines) == 3
    with pytest.raises(ConfigError, match="lack columns"):
        a_figures.plot_min_angle_curves(curves.drop(columns="epoch"))


def test_min_angle_figure_gives_a_colour_per_architecture_and_a_style_per_run_kind():
    pruned = pd.DataFrame({"epoch": [1, 2, 1, 2], "min_angle": [5.0, 9.0, 3.0, 4.0],
                           "architecture": ["A", "A", "B", "B"], "run": "pruned"})
    unpruned = pd.DataFrame({"epoch": [1, 2], "min_angle": [6.0, 5.0], "architecture": ["B", "B"],
                             "run": "unpruned"})
    fig = a_figures.plot_min_angle_curves(pd.concat([pruned, unpruned]), theta=30)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    assert set(lines) == {"A · pruned", "B · pruned", "B · unpruned", "θ = 30°"}
    assert lines["B · pruned"].get_color() == lines["B · unpruned"].get_color()
    assert lines["A · pruned"].get_color() != lines["B · pruned"].get_color()
    assert lines["B · pruned"].get_linestyle() != lines["B · unpruned"].get_linestyle()
    assert ax.get_xlabel() == "epoch" and "°" in ax.get_ylabel()


def test_min_angle_figure_splits_panels_beyond_eight_series():
    frames = [
        pd.DataFrame({"epoch": [1, 2], "min_angle": [1.0, 2.0], "architecture": f"arch{i}",
                      "run": run})
        for i in range(5)
        for run in ("pruned", "unpruned")
    ]
    fig = a_figures.plot_min_angle_curves(pd.concat(frames))
    assert len(fig.axes) == 2
    assert all(len(ax.lines) <= a_figures.MAX_SERIES_PER_AXIS for ax in fig.axes)


# --------------------------------------------------------------------------- paper B figures
# Tolerances below (allclose/approx defaults, rtol=1e-9) only absorb float rounding of means,
# ratios and display transforms: every expected value is computed exactly from the inputs.

_LAMS = (0.0, 1e-5, 1e-4, 1e-3)


def _performance(rng: np.random.Generator) -> pd.DataFrame:
    """Three seeds x four λ x four (task, metric) pairs of random scores."""
    pairs = (("segmentation", "miou"), ("segmentation", "pixel_acc"), ("normal", "cosine"),
             ("depth", "abs_err"))
    return pd.DataFrame([dict(lam=lam, seed=seed, task=task, metric=metric,
                              value=float(rng.random()))
                         for lam in _LAMS for seed in range(3) for task, metric in pairs])


def _sparsity(rng: np.random.Generator) -> pd.DataFrame:
    """Three seeds per λ; sparsity grows with λ."""
    return pd.DataFrame([dict(lam=lam, seed=seed, group_sparsity=20.0 * k + rng.random(),
                              param_sparsity=22.0 * k + rng.random())
                         for k, lam in enumerate(_LAMS) for seed in range(3)])


def _sparsity_history(rng: np.random.Generator) -> pd.DataFrame:
    """Two seeds x five epochs per λ, λ listed in a shuffled order."""
    return pd.DataFrame([dict(lam=lam, seed=seed, epoch=epoch,
                              group_sparsity=min(100.0, 10.0 * k * epoch + rng.random()),
                              param_sparsity=min(100.0, 12.0 * k * epoch))
                         for k, lam in ((2, 1e-4), (0, 0.0), (3, 1e-3), (1, 1e-5))
                         for seed in range(2) for epoch in range(5)])


def _latency() -> pd.DataFrame:
    """Latency of two batch sizes on cpu and one on cuda; cost falls with λ."""
    rows = []
    for k, lam in enumerate(_LAMS):
        for device, batch, dense_ms in (("cpu", 1, 2.0), ("cpu", 16, 40.0), ("cuda", 16, 0.5)):
            rows.append(dict(lam=lam, batch_size=batch, device=device,
                             latency_ms=dense_ms * (1.0 - 0.2 * k),
                             latency_std_ms=np.nan if device == "cuda" else 0.1 * dense_ms,
                             flops=4e8 * (1.0 - 0.25 * k), group_sparsity=25.0 * k))
    return pd.DataFrame(rows)


def _masks(rng: np.random.Generator) -> dict[str, dict[str, object]]:
    """Three panels over four layers of 3, 8, 5 and 8 channels (numpy and torch masks)."""
    widths = {"conv1": 3, "layer1.conv": 8, "layer2.conv": 5, "layer3.conv": 8}
    return {
        "before training": {name: np.zeros(w, dtype=bool) for name, w in widths.items()},
        "segmentation (single-task)": {name: rng.random(w) < 0.5 for name, w in widths.items()},
        "all tasks (multi-task)": {name: torch.from_numpy(rng.random(w) < 0.7)
                                   for name, w in widths.items()},
    }


def _tick_labels(ax) -> list[str]:
    """The x tick labels of an axes (also where they are hidden below a shared axis)."""
    return ax.xaxis.get_major_formatter().format_ticks(ax.get_xticks())


def test_lambda_axis_puts_zero_one_decade_left_of_the_smallest_positive_lambda(
    rng: np.random.Generator,
) -> None:
    fig = b_figures.plot_sparsity_vs_lambda(_sparsity(rng))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "λ"
    assert _tick_labels(ax) == ["0", "1e-5", "1e-4", "1e-3"]
    x = ax.transData.transform(np.column_stack([_LAMS, np.zeros(len(_LAMS))]))[:, 0]
    gaps = np.diff(x)
    assert gaps.min() > 0
    np.testing.assert_allclose(gaps, gaps[0], rtol=1e-9)  # 0 -> 1e-5 is as wide as a decade
    low, high = ax.get_xlim()
    assert low < 0.0 and high > 1e-3  # both end points inside the view


def test_every_lambda_figure_shows_lambda_zero_as_a_tick(rng: np.random.Generator) -> None:
    axes = [*b_figures.plot_performance_vs_lambda(_performance(rng)).axes,
            *b_figures.plot_sparsity_vs_lambda(_sparsity(rng)).axes,
            *b_figures.plot_latency_vs_lambda(_latency()).axes]  # incl. the twin axis
    assert len(axes) == 4 + 1 + 4
    for ax in axes:
        assert ax.get_xscale() == "symlog"
        assert _tick_labels(ax)[0] == "0"


def test_performance_vs_lambda_has_a_panel_per_task_metric_with_the_seed_mean(
    rng: np.random.Generator,
) -> None:
    perf = _performance(rng)
    fig = b_figures.plot_performance_vs_lambda(perf, lower_is_better={"abs_err"})
    assert len(fig.axes) == 4  # 2 x 3 grid, the two unused slots removed
    assert [ax.get_title() for ax in fig.axes] == ["segmentation", "segmentation", "normal",
                                                   "depth"]
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "mIoU (%)", "pixel accuracy (%)", "cosine similarity (−1…1)",
        "abs. error (m)\nlower is better"]
    assert all(len(ax.get_lines()) == 1 and len(ax.collections) == 1 for ax in fig.axes)
    depth = perf[perf.task == "depth"]
    np.testing.assert_allclose(fig.axes[3].get_lines()[0].get_ydata(),
                               depth.groupby("lam")["value"].mean().to_numpy())
    # every panel's λ axis is labelled
    assert [ax.get_xlabel() for ax in fig.axes] == ["λ", "λ", "λ", "λ"]
    assert _tick_labels(fig.axes[2]) == ["0", "1e-5", "1e-4", "1e-3"]


def test_sparsity_vs_lambda_draws_group_and_parameter_sparsity_with_std_bands(
    rng: np.random.Generator,
) -> None:
    sparsity = _sparsity(rng)
    ax = b_figures.plot_sparsity_vs_lambda(sparsity).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["% group sparsity",
                                                                   "% parameter sparsity"]
    stats = sparsity.groupby("lam")["group_sparsity"].agg(["mean", "std"])
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), stats["mean"])
    band_top = ax.collections[0].get_paths()[0].vertices[:, 1].max()
    assert band_top == pytest.approx((stats["mean"] + stats["std"]).max())  # ±1 std band
    assert ax.get_ylim()[0] <= 0.0 and ax.get_ylim()[1] >= 100.0


def test_sparsity_over_training_draws_one_line_per_lambda_ordered_by_lambda(
    rng: np.random.Generator,
) -> None:
    history = _sparsity_history(rng)
    fig = b_figures.plot_sparsity_over_training(history)
    assert len(fig.axes) == 2  # group and parameter sparsity
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["λ = 0", "λ = 1e-5", "λ = 1e-4", "λ = 1e-3"]
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4 and len(fig.axes[1].get_lines()) == 4
    expected = history[history.lam == 1e-4].groupby("epoch")["group_sparsity"].mean()
    np.testing.assert_allclose(lines[2].get_ydata(), expected.to_numpy())
    # sequential palette: darker (lower luminance) with growing λ
    luminance = [np.dot(matplotlib.colors.to_rgb(line.get_color()), [0.2126, 0.7152, 0.0722])
                 for line in lines]
    assert luminance == sorted(luminance, reverse=True)
    single = b_figures.plot_sparsity_over_training(history.drop(columns="param_sparsity"))
    assert len(single.axes) == 1


def test_latency_vs_lambda_shows_absolute_ms_and_the_ratio_to_dense_per_setting() -> None:
    fig = b_figures.plot_latency_vs_lambda(_latency())
    ax_ms, ax_ratio, ax_cost, ax_sparsity = fig.axes
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "cpu, batch 1", "cpu, batch 16", "cuda, batch 16"]
    np.testing.assert_allclose(ax_ms.get_lines()[0].get_ydata(), [2.0, 1.6, 1.2, 0.8])
    assert ax_ms.get_ylabel() == "latency per batch (ms)"
    ratio_lines = ax_ratio.get_lines()
    assert len(ratio_lines) == 4  # three (device, batch) settings + the dotted dense reference
    for line in ratio_lines[:3]:
        np.testing.assert_allclose(line.get_ydata(), [1.0, 0.8, 0.6, 0.4])
    assert "dense" in ax_ratio.get_ylabel()
    styles = {(str(line.get_color()), line.get_linestyle()) for line in ratio_lines[:3]}
    assert len({c for c, _ in styles}) == 3 and len({ls for _, ls in styles}) == 3
    np.testing.assert_allclose(ax_cost.get_lines()[0].get_ydata(), [400.0, 300.0, 200.0, 100.0])
    # the per-λ panels use no setting's colour, so the legend does not claim them
    per_lambda = {str(ax.get_lines()[0].get_color()) for ax in (ax_cost, ax_sparsity)}
    legend_colours = {str(h.get_color()) for h in fig.legends[0].legend_handles}
    assert per_lambda == {b_figures.PER_LAMBDA_COLOUR} and not per_lambda & legend_colours
    np.testing.assert_allclose(ax_sparsity.get_lines()[0].get_ydata(), [0.0, 25.0, 50.0, 75.0])
    assert ax_sparsity.get_ylabel() == "group sparsity (%)"
    assert "MMAC" in ax_cost.get_ylabel() and "FLOP" not in ax_cost.get_ylabel()


def test_latency_vs_lambda_needs_a_dense_row_and_one_row_per_setting() -> None:
    latency = _latency()
    with pytest.raises(ConfigError, match="dense \\(lam = 0\\) row .* 'cuda', batch size 16"):
        missing = latency[~((latency.lam == 0) & (latency.device == "cuda"))]
        b_figures.plot_latency_vs_lambda(missing)
    with pytest.raises(ConfigError, match="one row per"):
        b_figures.plot_latency_vs_lambda(pd.concat([latency, latency.iloc[:1]]))


def test_heatmap_images_mark_exactly_the_zero_groups(rng: np.random.Generator) -> None:
    panels = _masks(rng)
    fig = b_figures.plot_sparsity_heatmaps(panels)
    assert len(fig.axes) == 3
    layers = list(panels["before training"])
    for ax, (title, masks) in zip(fig.axes, panels.items(), strict=True):
        image = ax.images[0].get_array()
        assert image.shape == (4, 8)
        for row, layer in enumerate(layers):
            mask = np.asarray(masks[layer])
            assert np.array_equal(image[row, : len(mask)].filled(-1) == 1, mask)  # 1 = zero
            assert not np.ma.getmaskarray(image)[row, : len(mask)].any()
            assert np.ma.getmaskarray(image)[row, len(mask):].all()  # padding: "no channel"
        share = 100.0 * sum(np.asarray(m).sum() for m in masks.values()) / 24
        assert ax.get_title() == f"{title}\n{share:.1f} % zero groups"
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == layers
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["active group", "zero group",
                                                                  "no channel"]
    unlabelled = b_figures.plot_sparsity_heatmaps(panels, layer_labels=False)
    assert "conv1" not in [t.get_text() for t in unlabelled.axes[0].get_yticklabels()]


def test_heatmaps_reject_mismatched_layers(rng: np.random.Generator) -> None:
    panels = _masks(rng)
    renamed = {**panels, "all tasks (multi-task)": {
        ("layer9.conv" if k == "layer3.conv" else k): v
        for k, v in panels["all tasks (multi-task)"].items()}}
    with pytest.raises(ConfigError, match="same layers in the same order"):
        b_figures.plot_sparsity_heatmaps(renamed)
    reordered = {**panels, "before training": dict(reversed(panels["before training"].items()))}
    with pytest.raises(ConfigError, match="same layers in the same order"):
        b_figures.plot_sparsity_heatmaps(reordered)
    narrower = {**panels, "before training": {**panels["before training"],
                                              "conv1": np.zeros(2, dtype=bool)}}
    with pytest.raises(ConfigError, match="'conv1' has 3 channels .* 2 in panel 'before training'"):
        b_figures.plot_sparsity_heatmaps(narrower)


@pytest.mark.parametrize(
    ("plot", "frame", "column"),
    [
        (b_figures.plot_performance_vs_lambda, _performance, "metric"),
        (b_figures.plot_sparsity_vs_lambda, _sparsity, "param_sparsity"),
        (b_figures.plot_sparsity_over_training, _sparsity_history, "epoch"),
        (b_figures.plot_latency_vs_lambda, lambda _: _latency(), "flops"),
    ],
)
def test_lambda_figures_name_a_missing_column_and_reject_negative_lambda(
    plot, frame, column, rng: np.random.Generator
) -> None:
    data = frame(rng)
    with pytest.raises(ValueError, match=f"lacks column\\(s\\) {column};"):
        plot(data.drop(columns=column))
    with pytest.raises(ConfigError, match="must be a finite number >= 0"):
        plot(data.assign(lam=-data["lam"] - 1e-6))


@pytest.mark.parametrize("name", ["perf", "sparsity", "history", "latency", "heatmaps"])
def test_paper_b_figures_save_as_png(name: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    fig = {
        "perf": lambda: b_figures.plot_performance_vs_lambda(_performance(rng)),
        "sparsity": lambda: b_figures.plot_sparsity_vs_lambda(_sparsity(rng)),
        "history": lambda: b_figures.plot_sparsity_over_training(_sparsity_history(rng)),
        "latency": lambda: b_figures.plot_latency_vs_lambda(_latency()),
        "heatmaps": lambda: b_figures.plot_sparsity_heatmaps(_masks(rng)),
    }[name]()
    path = plots.save_figure(fig, tmp_path, f"fig3_{name}")
    assert path.read_bytes().startswith(b"\x89PNG")


# --------------------------------------------------------------------------- readability


def test_metric_label_gives_units() -> None:
    assert plots.metric_label("miou") == "mIoU (%)"
    assert plots.metric_label("mean_angle", prefix="val") == "val mean angle (°)"
    assert plots.metric_label("abs_err") == "abs. error (m)"
    assert plots.metric_label("accuracy") == "accuracy (%)"
    assert plots.metric_label("loss", prefix="train") == "train loss"
    assert plots.metric_label("some_metric") == "some metric"
    from mtlrepro.metrics import METRIC_NAMES

    assert {m for names in METRIC_NAMES.values() for m in names} <= set(plots.METRIC_LABELS)


def test_series_styles_differ_in_colour_and_line_style() -> None:
    styles = plots.series_styles(8)
    assert len({tuple(s["color"]) for s in styles}) == 8
    pairs = {(tuple(s["color"]), str(s["linestyle"])) for s in plots.series_styles(24)}
    assert len(pairs) == 24


def _vehicle_history(rng: np.random.Generator, runs: int) -> pd.DataFrame:
    """Train loss per epoch, validation once at the end (as paper A's runs log it)."""
    rows = []
    for k in range(runs):
        for task in ("colour", "type"):
            for epoch in range(1, 5):
                rows.append(dict(run=f"run {k}", epoch=epoch, split="train", task=task,
                                 metric="loss", value=2.0 / epoch + float(rng.random())))
            rows.append(dict(run=f"run {k}", epoch=4, split="val", task=task,
                             metric="accuracy", value=50 + 40 * float(rng.random())))
    return pd.DataFrame(rows)


def test_training_curves_split_many_runs_into_groups_of_at_most_eight(
    rng: np.random.Generator,
) -> None:
    history = _vehicle_history(rng, 12)
    fig = plots.plot_training_curves(history)
    assert len(fig.subfigs) == 2  # 8 + 4 runs
    assert max(len(ax.get_lines()) for ax in fig.axes) == 8
    val = fig.subfigs[0].axes[2]  # validated once: one bar per run, runs named
    assert len(val.patches) == 8
    assert val.get_xlabel() == "final val accuracy (%)"
    assert [t.get_text() for t in val.get_yticklabels()][:2] == ["run 0", "run 1"]
    groups = {"a": ["run 0", "run 3"], "b": ["run 0", "run 5", "run 7"]}
    grouped = plots.plot_training_curves(history, run_groups=groups)
    assert [sf.get_suptitle() for sf in grouped.subfigs] == ["a", "b"]
    assert [len(sf.axes[0].get_lines()) for sf in grouped.subfigs] == [2, 3]
    with pytest.raises(ConfigError, match="run group 'c'"):
        plots.plot_training_curves(history, run_groups={"c": [f"run {k}" for k in range(9)]})
    with pytest.raises(ConfigError, match="unknown"):
        plots.plot_training_curves(history, run_groups={"c": ["nope"]})


def _figures(rng: np.random.Generator) -> dict[str, plots.NotebookFigure]:
    return {
        "curves": plots.plot_training_curves(_history(rng, runs=tuple("abcdefghij"))),
        "curves_once": plots.plot_training_curves(_vehicle_history(rng, 12)),
        "perf": b_figures.plot_performance_vs_lambda(_performance(rng)),
        "sparsity": b_figures.plot_sparsity_vs_lambda(_sparsity(rng)),
        "latency": b_figures.plot_latency_vs_lambda(_latency()),
        "min_angle": a_figures.plot_min_angle_curves(
            pd.DataFrame({"epoch": [1, 2, 3] * 6, "min_angle": 60 * rng.random(18),
                          "architecture": [f"net {k}" for k in range(6) for _ in range(3)]}),
            theta=30),
    }


def test_line_figures_are_readable(rng: np.random.Generator) -> None:
    """<= 8 data lines per axis, labelled axes with units, legends clear of the data."""
    for name, fig in _figures(rng).items():
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legends = [*fig.legends, *(lg for sf in fig.subfigs for lg in sf.legends),
                   *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
        for ax in fig.axes:
            data_lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]
            assert len(data_lines) <= plots.MAX_SERIES, name
            if not (data_lines or ax.patches):
                continue
            assert ax.get_xlabel(), (name, ax.get_title())
            ylabel = ax.get_ylabel() or (ax.get_yticklabels() and "categorical")
            assert ylabel, (name, ax.get_title())
            text = f"{ax.get_xlabel()} {ax.get_ylabel()}"
            assert "miou" not in text and "_" not in text, (name, text)
            if any(w in text for w in ("mIoU", "accuracy", "sparsity", "latency", "MMAC")):
                assert "(" in text, (name, text)
            for legend in legends:
                box = legend.get_window_extent(renderer)
                for line in data_lines:
                    points = line.get_transform().transform(line.get_xydata())
                    assert not any(box.contains(x, y) for x, y in points), (name, line.get_label())
