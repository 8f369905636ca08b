"""Paper B's figures: performance, sparsity and latency against λ (Fig. 3 (a)-(d)) and the
sparsity heatmaps."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, NullLocator

from mtlrepro.config import ConfigError
from mtlrepro.experiments.group_sparsity.units import lambda_label
from mtlrepro.plots import (
    NotebookFigure,
    check_frame,
    draw_mean_std,
    metric_label,
    new_figure,
    ordered,
    percent_axis,
    seed_stats,
    series_styles,
    theme,
    to_numpy,
)

if TYPE_CHECKING:
    from torch import Tensor

_PERFORMANCE_COLUMNS = ("lam", "seed", "task", "metric", "value")
_SPARSITY_COLUMNS = ("lam", "seed", "group_sparsity", "param_sparsity")
_SPARSITY_HISTORY_COLUMNS = ("lam", "seed", "epoch", "group_sparsity")
_LATENCY_COLUMNS = (
    "lam",
    "batch_size",
    "device",
    "latency_ms",
    "latency_std_ms",
    "flops",
    "group_sparsity",
)
_SPARSITY_LABELS = {"group_sparsity": "% group sparsity", "param_sparsity": "% parameter sparsity"}


def _lambda_axis(ax: Axes, lams: Iterable[float]) -> None:
    """Turn the x axis of ``ax`` into the λ axis of paper B, Fig. 3 (a)–(d).

    Positive λ are on a log scale and λ = 0 sits one decade left of the smallest positive λ:
    a symlog scale whose linear part ends at the smallest positive λ and is one decade wide
    (``linscale = 1 - 1/base``).  Major ticks are exactly the given λ, labelled ``0``,
    ``1e-5``, ... as ``params.yaml`` and the unit files write them (:func:`lambda_label`); there are
    no minor ticks.

    Args:
        ax: the axes.
        lams: the λ values drawn (every panel of a figure passes the same values).
    """
    values = sorted({float(v) for v in lams})
    positive = [v for v in values if v > 0]
    linthresh = positive[0] if positive else 1.0
    ax.set_xscale("symlog", base=10, linthresh=linthresh, linscale=0.9)
    # limits: 5 % margins in the symlog coordinates (autoscaling may predate the scale change)
    scale = ax.xaxis.get_transform()
    low, high = scale.transform(np.array([values[0], values[-1]]))
    pad = 0.05 * (high - low) if high > low else linthresh
    ax.set_xlim(*scale.inverted().transform(np.array([low - pad, high + pad])))
    rotated = len(values) > 4  # half-decade neighbours (1e-3, 3e-3) would overlap
    ax.set_xticks(
        values,
        [lambda_label(v) for v in values],
        rotation=45 if rotated else 0,
        ha="right" if rotated else "center",
    )
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("λ")


def plot_performance_vs_lambda(
    perf: pd.DataFrame, *, lower_is_better: Collection[str] = ()
) -> NotebookFigure:
    """Test performance vs λ, mean ± std over seeds, one panel per (task, metric) (paper B,
    Fig. 3 (a)).

    Panels are in order of first appearance, at most three per row; all share the λ axis
    (λ = 0 left of the smallest positive λ, see :func:`_lambda_axis`).

    Args:
        perf: tidy frame with columns ``lam`` (float >= 0), ``seed``, ``task``, ``metric``,
            ``value``.
        lower_is_better: metrics whose y label gets "lower is better".
    """
    check_frame(perf, "perf", _PERFORMANCE_COLUMNS)
    pairs = list(dict.fromkeys(zip(perf["task"], perf["metric"], strict=True)))
    tasks = ordered(perf["task"])
    colours = dict(zip(tasks, sns.color_palette("colorblind", len(tasks)), strict=True))
    ncols = min(len(pairs), 3)
    nrows = math.ceil(len(pairs) / ncols)
    with theme():
        fig = new_figure(3.2 * ncols + 0.4, 2.8 * nrows + 0.4)
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True).ravel()
        for ax in axes[len(pairs) :]:
            ax.remove()
        for ax, (task, metric) in zip(axes, pairs, strict=False):
            part = perf[(perf["task"] == task) & (perf["metric"] == metric)]
            draw_mean_std(ax, seed_stats(part, "value"), colour=colours[task], label=None)
            _lambda_axis(ax, perf["lam"])
            ax.set_title(task)
            label = metric_label(metric)
            ax.set_ylabel(f"{label}\nlower is better" if metric in lower_is_better else label)
            ax.xaxis.set_tick_params(labelbottom=True)  # every panel's λ axis is labelled
    return fig


def plot_sparsity_vs_lambda(sparsity: pd.DataFrame) -> NotebookFigure:
    """% group and % parameter sparsity of the shared backbone vs λ, mean ± std over seeds
    (paper B, Fig. 3 (b)).

    Args:
        sparsity: tidy frame with columns ``lam`` (float >= 0), ``seed``, ``group_sparsity``
            and ``param_sparsity`` (both in %).
    """
    check_frame(sparsity, "sparsity", _SPARSITY_COLUMNS)
    columns = ("group_sparsity", "param_sparsity")
    with theme():
        fig = new_figure(4.6, 3.4)
        ax = fig.subplots()
        for colour, column in zip(sns.color_palette("colorblind", 2), columns, strict=True):
            stats = seed_stats(sparsity, column)
            draw_mean_std(ax, stats, colour=colour, label=_SPARSITY_LABELS[column])
        _lambda_axis(ax, sparsity["lam"])
        percent_axis(ax, "sparsity of the shared backbone (%)")
        ax.legend(fontsize="small", loc="upper left")
    return fig


def plot_sparsity_over_training(history: pd.DataFrame) -> NotebookFigure:
    """% group sparsity vs epoch, one line per λ (mean over seeds) (paper B, Fig. 3 (c)).

    Lines use a sequential palette ordered by λ (light = small λ).  If ``history`` has a
    ``param_sparsity`` column, a second panel shows % parameter sparsity the same way.

    Args:
        history: tidy frame with columns ``lam`` (float >= 0), ``seed``, ``epoch``,
            ``group_sparsity`` (%) and optionally ``param_sparsity`` (%).
    """
    check_frame(history, "history", _SPARSITY_HISTORY_COLUMNS)
    columns = ["group_sparsity"] + (["param_sparsity"] if "param_sparsity" in history else [])
    frame = history.assign(lam=history["lam"].astype(float))
    lams = sorted(set(frame["lam"]))
    colours = sns.color_palette("crest", len(lams))
    with theme():
        fig = new_figure(4.2 * len(columns) + 1.2, 3.4)
        axes = fig.subplots(1, len(columns), squeeze=False, sharex=True)[0]
        for ax, column in zip(axes, columns, strict=True):
            for colour, lam in zip(colours, lams, strict=True):
                per_seed = frame[frame["lam"] == lam].groupby(["epoch", "seed"])[column].mean()
                curve = per_seed.groupby(level="epoch", sort=True).mean()
                ax.plot(
                    curve.index.to_numpy(),
                    curve.to_numpy(),
                    color=colour,
                    marker="o",
                    markersize=2.5,
                    label=f"λ = {lambda_label(lam)}",
                )
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            percent_axis(ax, _SPARSITY_LABELS[column])
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize="small")
    return fig


PER_LAMBDA_COLOUR = "#404040"
"""Colour of Fig. 3 (d)'s per-λ panels (cost, sparsity): dark grey, outside the settings'
palette, so that no reader takes them for one of the legend's settings."""


def plot_latency_vs_lambda(latency: pd.DataFrame) -> NotebookFigure:
    """Backbone inference time and cost vs λ (paper B, Fig. 3 (d)), four panels.

    Top left: latency per batch in ms, as the paper shows it, one line per (device, batch
    size) with a ± std band (log scale when the settings span more than a factor 20).  Top
    right: the same relative to the dense (λ = 0) backbone of the same setting, with a dotted
    line at 1.  Bottom: millions of multiply–accumulates (MMAC) per image of the slimmed
    backbone, and its % group sparsity: one value per λ, the same for every setting, so drawn
    in :data:`PER_LAMBDA_COLOUR`, a colour no setting uses.  The settings' legend is below the
    figure.

    Args:
        latency: tidy frame with one row per (``lam``, ``device``, ``batch_size``) and columns
            ``lam`` (float >= 0, λ = 0 required per setting), ``batch_size``, ``device``,
            ``latency_ms`` (per batch), ``latency_std_ms`` (may be NaN), ``flops``
            (multiply–accumulates per image) and ``group_sparsity`` (%).
    """
    check_frame(latency, "latency", _LATENCY_COLUMNS)
    frame = latency.assign(lam=latency["lam"].astype(float))
    if frame.duplicated(["lam", "device", "batch_size"]).any():
        raise ConfigError("latency must have exactly one row per (lam, device, batch_size)")
    devices = ordered(frame["device"])
    settings = sorted(
        set(zip(frame["device"], frame["batch_size"], strict=True)),
        key=lambda s: (devices.index(s[0]), s[1]),
    )
    curves: list[tuple[str, pd.DataFrame, pd.DataFrame]] = []
    for device, batch in settings:
        part = frame[(frame["device"] == device) & (frame["batch_size"] == batch)]
        part = part.set_index("lam").sort_index()
        if 0.0 not in part.index or not part.at[0.0, "latency_ms"] > 0:
            raise ConfigError(
                f"latency needs a dense (lam = 0) row with latency_ms > 0 for device {device!r},"
                f" batch size {batch}: latencies are shown relative to it"
            )
        dense = float(part.at[0.0, "latency_ms"])
        absolute = pd.DataFrame(
            {"mean": part["latency_ms"], "std": part["latency_std_ms"].fillna(0.0)}
        )
        curves.append((f"{device}, batch {batch}", absolute, absolute / dense))
    cost = frame.groupby("lam", sort=True)[["flops", "group_sparsity"]].mean()
    lam = cost.index.to_numpy(dtype=float)
    with theme():
        fig = new_figure(8.6, 6.4)
        axes = fig.subplots(2, 2, sharex=True)
        (ax_ms, ax_ratio), (ax_cost, ax_sparsity) = axes
        for style, (label, absolute, relative) in zip(
            series_styles(len(curves)), curves, strict=True
        ):
            for ax, stats in ((ax_ms, absolute), (ax_ratio, relative)):
                draw_mean_std(ax, stats, colour=style["color"], label=label)
                ax.get_lines()[-1].set(linestyle=style["linestyle"], marker=style["marker"])
        times = frame["latency_ms"].to_numpy(dtype=float)
        times = times[np.isfinite(times) & (times > 0)]
        if times.size and times.max() / times.min() > 20:
            ax_ms.set_yscale("log")
        ax_ms.set_ylabel("latency per batch (ms)")
        ax_ms.set_title("backbone inference time")
        ax_ratio.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        ax_ratio.set_ylabel("relative latency (× dense λ = 0)")
        ax_ratio.set_title("relative to the dense backbone")
        ax_cost.plot(
            lam, cost["flops"].to_numpy(dtype=float) / 1e6, color=PER_LAMBDA_COLOUR, marker="o",
            markersize=3,
        )
        ax_cost.set_ylim(bottom=0.0)
        ax_cost.set_ylabel("MMAC per image (10⁶ multiply–accumulates)")
        ax_cost.set_title("slimmed backbone cost (every setting)")
        ax_sparsity.plot(
            lam, cost["group_sparsity"].to_numpy(dtype=float), color=PER_LAMBDA_COLOUR,
            marker="o", markersize=3,
        )
        percent_axis(ax_sparsity, "group sparsity (%)")
        ax_sparsity.set_title("zero channel groups (every setting)")
        for ax in axes.ravel():
            _lambda_axis(ax, frame["lam"])
            ax.xaxis.set_tick_params(labelbottom=True)
        handles, labels = ax_ms.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4),
                   fontsize="small", title="device, batch size", title_fontsize="small")
    return fig


_HEATMAP_COLOURS = {"active group": "#08306b", "zero group": "#ffffff", "no channel": "#d0d0d0"}
_HEATMAP_CMAP = ListedColormap(
    [_HEATMAP_COLOURS["active group"], _HEATMAP_COLOURS["zero group"]]
).with_extremes(bad=_HEATMAP_COLOURS["no channel"])


def _zero_mask(panel: str, layer: str, value: Any) -> np.ndarray:
    """One layer's zero-group mask as a 1-D bool array, validated."""
    mask = to_numpy(value)
    if mask.ndim != 1 or mask.size == 0:
        raise ConfigError(
            f"mask of layer {layer!r} in panel {panel!r} must be a non-empty 1-D array;"
            f" got shape {mask.shape}"
        )
    if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
        raise ConfigError(f"mask of layer {layer!r} in panel {panel!r} must be boolean")
    return mask.astype(bool)


def plot_sparsity_heatmaps(
    panels: Mapping[str, Mapping[str, np.ndarray | Tensor]], *, layer_labels: bool = True
) -> NotebookFigure:
    """Zero / active channel groups of every conv layer of the shared backbone, one matrix per
    panel, side by side (paper B, Fig. 3 heatmaps).

    Rows are layers (first layer at the top), columns input channels; narrower layers are
    padded with "no channel" (light grey).  Zero groups are white, active groups dark blue;
    each title gives the panel's % zero groups (of all real channel groups).

    Args:
        panels: panel title (e.g. ``"before training"``, ``"all tasks (multi-task)"``) ->
            ordered mapping layer name -> 1-D bool array or tensor over the layer's input
            channels, ``True`` = the group is zero (see
            :func:`mtlrepro.methods.group_sparsity.zero_group_mask`).  Every panel needs the
            same layers in the same order, with the same number of channels each.
        layer_labels: label the rows with the layer names (else with layer indices).
    """
    if not panels:
        raise ConfigError("panels is empty: nothing to plot")
    masks = {
        title: {layer: _zero_mask(title, layer, m) for layer, m in layers.items()}
        for title, layers in panels.items()
    }
    titles = list(masks)
    reference = masks[titles[0]]
    layers = list(reference)
    if not layers:
        raise ConfigError(f"panel {titles[0]!r} has no layers")
    for title in titles[1:]:
        if list(masks[title]) != layers:
            raise ConfigError(
                f"panel {title!r} has layers {list(masks[title])} but panel {titles[0]!r} has"
                f" {layers}: every panel needs the same layers in the same order"
            )
        for layer in layers:
            if len(masks[title][layer]) != len(reference[layer]):
                raise ConfigError(
                    f"layer {layer!r} has {len(masks[title][layer])} channels in panel"
                    f" {title!r} but {len(reference[layer])} in panel {titles[0]!r}"
                )
    width = max(len(m) for m in reference.values())
    with theme():
        fig = new_figure(
            4.0 * len(titles) + (2.2 if layer_labels else 0.6), max(3.0, 0.3 * len(layers) + 1.6)
        )
        axes = fig.subplots(1, len(titles), squeeze=False, sharey=True)[0]
        for ax, title in zip(axes, titles, strict=True):
            matrix = np.ma.masked_array(np.zeros((len(layers), width)), mask=True)
            for row, layer in enumerate(layers):
                matrix[row, : len(masks[title][layer])] = masks[title][layer]
            share = 100.0 * matrix.sum() / matrix.count()
            ax.imshow(
                matrix,
                cmap=_HEATMAP_CMAP,
                vmin=0.0,
                vmax=1.0,
                aspect="auto",
                interpolation="nearest",
            )
            ax.grid(False)
            ax.set_title(f"{title}\n{share:.1f} % zero groups")
            ax.set_xlabel("input channel (index)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if layer_labels:
            fontsize = "medium" if len(layers) <= 24 else "small"
            axes[0].set_yticks(range(len(layers)), layers, fontsize=fontsize)
        else:
            axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
            axes[0].set_ylabel("conv layer (first at the top)")
        handles = [
            Patch(facecolor=colour, edgecolor="grey", label=name)
            for name, colour in _HEATMAP_COLOURS.items()
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize="small")
    return fig
