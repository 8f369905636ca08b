"""Every figure of the notebooks: training curves, sample predictions, metric bars.

Each function returns a :class:`NotebookFigure` (a matplotlib ``Figure`` rendered with Agg,
not registered with pyplot), so a notebook cell ending in the figure shows it exactly once,
as the same PNG :func:`save_figure` writes.  Styling is seaborn's ``whitegrid`` theme, applied
per figure (the global matplotlib state is not touched).  PNGs are deterministic: fixed dpi,
no ``Software`` version string, written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, NullLocator

from mtlrepro.config import ConfigError, check_choice
from mtlrepro.report import atomic_write_bytes

if TYPE_CHECKING:
    from torch import Tensor

DPI = 120
"""Resolution of every saved and displayed PNG."""

PLOT_KINDS = ("segmentation", "depth", "normal", "binary", "classification")
_HISTORY_COLUMNS = ("epoch", "split", "task", "metric", "value")
# Fixed categorical palette for class maps: 60 distinct colours, reused cyclically beyond.
_SEGMENTATION_PALETTE = np.array(
    [c for name in ("tab20", "tab20b", "tab20c") for c in matplotlib.colormaps[name].colors]
)
_IGNORE_RGB = np.zeros(3)  # ignored pixels (label -1) are black
_DEPTH_CMAP = matplotlib.colormaps["viridis"].with_extremes(bad="black")
_BINARY_CMAP = matplotlib.colormaps["gray"].with_extremes(bad="tab:red")


class NotebookFigure(Figure):
    """A matplotlib figure that shows itself in Jupyter as the PNG :func:`save_figure` writes.

    It does not need pyplot or the inline backend, and is not kept alive by pyplot.
    """

    def _repr_png_(self) -> bytes:
        """PNG for IPython's display machinery."""
        return figure_png(self)


@contextmanager
def _theme() -> Iterator[None]:
    """The seaborn theme of all figures, as a temporary rc context."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.8):
        yield


def _new_figure(width: float, height: float) -> NotebookFigure:
    """An empty :class:`NotebookFigure` with an Agg canvas and constrained layout."""
    fig = NotebookFigure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, *, dpi: int = DPI) -> bytes:
    """Render a figure to PNG bytes, deterministically (no version metadata, fixed dpi).

    Args:
        fig: the figure.
        dpi: resolution in dots per inch.
    """
    buffer = io.BytesIO()
    with _theme():
        fig.savefig(
            buffer,
            format="png",
            dpi=dpi,
            metadata={"Software": None},
            bbox_inches="tight",
            facecolor="white",
        )
    return buffer.getvalue()


def save_figure(fig: Figure, out_dir: str | Path, name: str, *, dpi: int = DPI) -> Path:
    """Write ``<out_dir>/<name>.png`` atomically; the same inputs give the same bytes.

    Args:
        fig: the figure.
        out_dir: the output folder (see :func:`mtlrepro.report.resolve_output_dir`).
        name: file stem named after the paper item, e.g. ``"fig3_training_curves"``.
        dpi: resolution in dots per inch.
    """
    if not name or "/" in name or name.endswith(".png"):
        raise ConfigError(f"figure name {name!r} must be a file stem such as 'fig3_curves'")
    return atomic_write_bytes(Path(out_dir) / f"{name}.png", figure_png(fig, dpi=dpi))


def _to_numpy(x: Any) -> np.ndarray:
    """A torch tensor (any device) or array-like as a NumPy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _ordered(values: pd.Series) -> list[Any]:
    """Unique values in order of first appearance."""
    return list(dict.fromkeys(values.tolist()))


# --------------------------------------------------------------------------- training curves


def plot_training_curves(
    history: pd.DataFrame,
    *,
    primary_metrics: Mapping[str, str] | None = None,
    tasks: Sequence[str] | None = None,
    loss_metric: str = "loss",
) -> NotebookFigure:
    """Training loss (top row) and validation primary metric (bottom row) per task vs epoch.

    One column per task; one line per run if ``history`` has a ``run`` column.  Values
    logged several times per epoch are averaged per epoch.

    Args:
        history: long frame with columns ``epoch, split, task, metric, value`` (``step`` and
            ``run`` optional), as logged by the training loop.
        primary_metrics: task -> the validation metric to plot; default: the first non-loss
            validation metric logged for the task.
        tasks: tasks to plot, in order; default: the tasks with validation rows (so not the
            training loop's total-loss task ``"all"``), in order of first appearance.
        loss_metric: the metric name of training losses.
    """
    missing = [c for c in _HISTORY_COLUMNS if c not in history.columns]
    if missing:
        raise ConfigError(
            f"history lacks column(s) {', '.join(missing)}; needs {', '.join(_HISTORY_COLUMNS)}"
        )
    if history.empty:
        raise ConfigError("history is empty: nothing to plot")
    if tasks is None:
        with_val = history.loc[history["split"] == "val", "task"]
        tasks = _ordered(with_val if not with_val.empty else history["task"])
    tasks = list(tasks)
    runs = _ordered(history["run"]) if "run" in history.columns else [None]
    colours = sns.color_palette("colorblind", len(runs))
    primary = dict(primary_metrics or {})
    with _theme():
        fig = _new_figure(3.0 * len(tasks) + 0.6, 5.2)
        axes = fig.subplots(2, len(tasks), squeeze=False, sharex=True)
        for j, task in enumerate(tasks):
            rows = history[history["task"] == task]
            val_rows = rows[(rows["split"] == "val") & (rows["metric"] != loss_metric)]
            metric = primary.get(task) or next(iter(_ordered(val_rows["metric"])), None)
            panels = (
                (axes[0, j], rows[(rows["split"] == "train") & (rows["metric"] == loss_metric)]),
                (axes[1, j], val_rows[val_rows["metric"] == metric]),
            )
            for ax, part in panels:
                _draw_curves(ax, part, runs, colours)
            axes[0, j].set_title(task)
            axes[0, j].set_ylabel(f"train {loss_metric}")
            axes[1, j].set_ylabel(f"val {metric}" if metric else "val")
            axes[1, j].set_xlabel("epoch")
            axes[1, j].xaxis.set_major_locator(MaxNLocator(integer=True))
        if runs != [None]:
            handles, labels = axes[0, 0].get_legend_handles_labels()
            if not handles:
                handles, labels = axes[1, 0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(runs), 4))
    return fig


def _draw_curves(ax: Axes, part: pd.DataFrame, runs: Sequence[Any], colours: Sequence[Any]) -> None:
    """Per-epoch mean of ``part`` for each run, or a 'no data' note."""
    drawn = False
    for run, colour in zip(runs, colours, strict=True):
        sel = part if run is None else part[part["run"] == run]
        if sel.empty:
            continue
        curve = sel.groupby("epoch", sort=True)["value"].mean()
        ax.plot(
            curve.index.to_numpy(),
            curve.to_numpy(),
            color=colour,
            marker="o",
            markersize=3,
            label=None if run is None else str(run),
        )
        drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")


# --------------------------------------------------------------------------- sample predictions


def _segmentation_rgb(labels: np.ndarray) -> np.ndarray:
    """Class map (H, W) -> RGB with the fixed palette; negative labels (ignore) in black."""
    rgb = _SEGMENTATION_PALETTE[np.clip(labels, 0, None) % len(_SEGMENTATION_PALETTE)]
    rgb[labels < 0] = _IGNORE_RGB
    return rgb


def _draw_panel(
    ax: Axes, kind: str, value: np.ndarray, *, is_target: bool, depth_range: tuple[float, float]
) -> None:
    """Draw one target or prediction of one sample in the style of its task kind."""
    if kind == "classification":
        ax.text(
            0.5,
            0.5,
            str(int(value.reshape(-1)[0])),
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=16,
        )
        return
    if kind == "normal":
        ax.imshow(
            np.clip((value.transpose(1, 2, 0) + 1.0) / 2.0, 0.0, 1.0), interpolation="nearest"
        )
        return
    if kind == "segmentation" and value.ndim == 3 and value.shape[0] > 1:
        value = value.argmax(axis=0)  # raw logits (C, H, W) -> class map
    plane = value.reshape(value.shape[-2:])
    if kind == "segmentation":
        ax.imshow(_segmentation_rgb(plane.astype(np.int64)), interpolation="nearest")
    elif kind == "depth":
        shown = np.ma.masked_less_equal(plane, 0.0) if is_target else plane
        ax.imshow(
            shown,
            cmap=_DEPTH_CMAP,
            vmin=depth_range[0],
            vmax=depth_range[1],
            interpolation="nearest",
        )
    else:  # binary: probabilities / {0, 1} targets, -1 = ignore
        ax.imshow(
            np.ma.masked_less(plane, 0.0),
            cmap=_BINARY_CMAP,
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest",
        )


def _depth_range(target: np.ndarray, predictions: Sequence[np.ndarray]) -> tuple[float, float]:
    """Shared colour range of a depth task: valid target depths, else the predictions."""
    valid = target[target > 0]
    values = valid if valid.size else np.concatenate([p.reshape(-1) for p in predictions])
    if not values.size:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    return low, high if high > low else low + 1.0


def plot_sample_predictions(
    images: Any,
    targets: Mapping[str, Any],
    predictions: Mapping[str, Mapping[str, Any]],
    task_kinds: Mapping[str, str],
    *,
    max_samples: int = 4,
) -> NotebookFigure:
    """A grid of samples: the image, then per task the target and each run's prediction.

    Rows are samples; columns are ``image``, then for each task ``target`` followed by one
    column per run.  Segmentation maps use a fixed categorical palette (ignore = black),
    depth a shared viridis range per task (invalid target pixels black), normals
    ``(n + 1) / 2`` as RGB, binary maps grey levels in [0, 1] (ignore = red), classification
    the class index as text.

    Args:
        images: (N, 3, H, W) images in [0, 1] (tensor or array).
        targets: task -> target batch, in the task kind's target format.
        predictions: run name -> task -> displayable prediction batch (``Task.predict``:
            class maps, depth, unit normals, probabilities, class indices).
        task_kinds: task -> kind (see :data:`PLOT_KINDS`); its order is the column order.
        max_samples: at most this many rows (the first samples).
    """
    image_array = _to_numpy(images)
    if image_array.ndim != 4 or image_array.shape[1] not in (1, 3):
        raise ConfigError(f"images must have shape (N, 3, H, W); got {image_array.shape}")
    if max_samples < 1:
        raise ConfigError(f"max_samples must be >= 1; got {max_samples}")
    count = min(len(image_array), max_samples)
    tasks = list(task_kinds)
    for task in tasks:
        check_choice(f"kind of task {task!r}", task_kinds[task], PLOT_KINDS)
        if task not in targets:
            raise ConfigError(f"no target for task {task!r}; targets: {', '.join(targets)}")
        for run, preds in predictions.items():
            if task not in preds:
                raise ConfigError(f"run {run!r} has no prediction for task {task!r}")
    runs = list(predictions)
    target_arrays = {t: _to_numpy(targets[t])[:count] for t in tasks}
    pred_arrays = {r: {t: _to_numpy(predictions[r][t])[:count] for t in tasks} for r in runs}
    depth_ranges = {
        t: _depth_range(target_arrays[t], [pred_arrays[r][t] for r in runs])
        for t in tasks
        if task_kinds[t] == "depth"
    }
    columns: list[tuple[str, str | None, str]] = [("image", None, "image")]
    for task in tasks:
        columns.append((task, None, f"{task}\ntarget"))
        columns += [(task, run, f"{task}\n{run}") for run in runs]
    with _theme():
        fig = _new_figure(1.5 * len(columns), 1.5 * count + 0.5)
        axes = fig.subplots(count, len(columns), squeeze=False)
        for i in range(count):
            for j, (task, run, title) in enumerate(columns):
                ax = axes[i, j]
                ax.set_axis_off()
                if i == 0:
                    ax.set_title(title, fontsize=8)
                if task == "image":
                    image = np.clip(image_array[i].transpose(1, 2, 0), 0.0, 1.0)
                    ax.imshow(
                        image.squeeze(-1) if image.shape[-1] == 1 else image,
                        cmap="gray",
                        interpolation="nearest",
                    )
                    continue
                value = target_arrays[task][i] if run is None else pred_arrays[run][task][i]
                _draw_panel(
                    ax,
                    task_kinds[task],
                    np.asarray(value),
                    is_target=run is None,
                    depth_range=depth_ranges.get(task, (0.0, 1.0)),
                )
    return fig


# --------------------------------------------------------------------------- metric bars


def plot_metric_bars(
    table: pd.DataFrame, *, label: str = "method", metrics: Sequence[str] | None = None
) -> NotebookFigure:
    """One bar panel per metric column, one bar per row of ``table`` (e.g. per method).

    Args:
        table: wide table with a label column and numeric metric columns.
        label: the column naming each bar.
        metrics: metric columns to plot; default: every numeric column.
    """
    if label not in table.columns:
        raise ConfigError(f"table has no label column {label!r}; columns: {list(table.columns)}")
    if metrics is None:
        metrics = [c for c in table.select_dtypes("number").columns if c != label]
    missing = [m for m in metrics if m not in table.columns]
    if missing or not metrics:
        raise ConfigError(
            f"metric columns {missing or '(none)'} not in table; columns: {list(table.columns)}"
        )
    names = [str(v) for v in table[label]]
    colours = sns.color_palette("colorblind", len(names))
    with _theme():
        fig = _new_figure(max(2.4, 0.45 * len(names) + 1.0) * len(metrics), 3.2)
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        for ax, metric in zip(axes, metrics, strict=True):
            ax.bar(range(len(names)), table[metric].to_numpy(dtype=float), color=colours)
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
            ax.set_title(metric)
    return fig


# --------------------------------------------------------------------------- class balance


def plot_class_distributions(
    labels: Mapping[str, Any],
    class_names: Mapping[str, Sequence[str]] | None = None,
    *,
    condition: tuple[str, int, str] | None = None,
) -> NotebookFigure:
    """Class sizes per task, sorted, as % of the samples (paper A, Fig. 2).

    Args:
        labels: task -> integer labels of one split (tensor or array, shape (N,)).
        class_names: task -> class names (by index), for the x tick labels of small tasks.
        condition: ``(given_task, given_class, task)``: adds a panel comparing
            P(task | given_task = given_class) with P(task) (paper A, Eq. 2).
    """
    names = class_names or {}
    panels = len(labels) + (condition is not None)
    with _theme():
        fig = _new_figure(3.2 * panels, 3.0)
        axes = fig.subplots(1, panels, squeeze=False)[0]
        for ax, (task, values) in zip(axes, labels.items(), strict=False):
            counts = np.bincount(_to_numpy(values).astype(np.int64))
            share = 100.0 * counts / max(counts.sum(), 1)
            order = np.argsort(-share, kind="stable")
            if len(order) <= 40:
                ax.bar(np.arange(len(order)), share[order], color=sns.color_palette()[0])
            else:  # hundreds of classes: thin bars vanish when rendered; draw the profile
                ax.fill_between(
                    np.arange(len(order)), share[order], step="mid", color=sns.color_palette()[0]
                )
                ax.set_ylim(0, share.max() * 1.1)
            ax.set_title(f"{task} ({len(counts)} classes)")
            ax.set_xlabel("class, by size")
            ax.set_ylabel("% of samples")
            if task in names and len(order) <= 20:
                ax.set_xticks(np.arange(len(order)), [names[task][i] for i in order], rotation=90)
            else:
                ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
        if condition is not None:
            given_task, given_class, task = condition
            given = _to_numpy(labels[given_task]) == given_class
            values = _to_numpy(labels[task]).astype(np.int64)
            k = int(values.max()) + 1
            marginal = np.bincount(values, minlength=k) / len(values)
            conditional = np.bincount(values[given], minlength=k) / max(int(given.sum()), 1)
            ax = axes[-1]
            x = np.arange(k)
            ax.bar(x - 0.2, 100 * marginal, width=0.4, label=f"P({task})")
            given_name = names.get(given_task, [str(given_class)] * (given_class + 1))
            ax.bar(
                x + 0.2,
                100 * conditional,
                width=0.4,
                label=f"P({task} | {given_task}={given_name[given_class]})",
            )
            ax.set_xticks(x, names.get(task, [str(i) for i in x]), rotation=90)
            ax.set_ylabel("%")
            ax.set_title(f"{task} given the rarest {given_task}")
            ax.legend(fontsize="small")
    return fig


# --------------------------------------------------------------------------- angle curves


def plot_min_angle_curves(curves: pd.DataFrame, *, theta: float | None = None) -> NotebookFigure:
    """Minimum distinctiveness angle vs epoch, one line per architecture (paper A, Fig. 3).

    Args:
        curves: tidy frame with columns ``epoch``, ``min_angle`` and ``architecture``.
        theta: the pruning threshold, drawn as a dashed line (``None``: not drawn).
    """
    missing = {"epoch", "min_angle", "architecture"} - set(curves.columns)
    if missing:
        raise ConfigError(f"curves lack columns {sorted(missing)}")
    with _theme():
        fig = _new_figure(6.0, 3.6)
        ax = fig.subplots()
        colours = sns.color_palette(n_colors=max(curves["architecture"].nunique(), 1))
        for colour, name in zip(colours, _ordered(curves["architecture"]), strict=False):
            part = curves[curves["architecture"] == name]
            ax.plot(part["epoch"], part["min_angle"], marker="o", color=colour, label=name)
        if theta is not None:
            ax.axhline(theta, linestyle="--", color="grey", label=f"θ = {theta:g}°")
        ax.set_xlabel("epoch")
        ax.set_ylabel("minimum angle (°), before pruning")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="small", loc="best")
    return fig


# --------------------------------------------------------------------------- paper B: λ sweeps

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


def _check_frame(frame: pd.DataFrame, what: str, columns: Sequence[str]) -> None:
    """Raise :class:`ConfigError` if ``frame`` lacks a column, is empty or has a λ < 0.

    Args:
        frame: the input frame of a figure function.
        what: its parameter name, for the message.
        columns: the columns it needs (including ``lam``).
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"{what} lacks column(s) {', '.join(missing)}; needs {', '.join(columns)}"
        )
    if frame.empty:
        raise ConfigError(f"{what} is empty: nothing to plot")
    lam = pd.to_numeric(frame["lam"], errors="coerce").to_numpy(dtype=float)
    if not (np.isfinite(lam) & (lam >= 0)).all():
        raise ConfigError(f"{what}: every λ (column lam) must be a finite number >= 0")


def _lambda_label(lam: float) -> str:
    """Tick / legend text of one λ: ``0``, ``1e-05``, ``0.001``, ..."""
    return "0" if lam == 0 else f"{lam:g}"


def _lambda_axis(ax: Axes, lams: Iterable[float]) -> None:
    """Turn the x axis of ``ax`` into the λ axis of paper B, Fig. 3 (a)–(d).

    Positive λ are on a log scale and λ = 0 sits one decade left of the smallest positive λ:
    a symlog scale whose linear part ends at the smallest positive λ and is one decade wide
    (``linscale = 1 - 1/base``).  Major ticks are exactly the given λ, labelled ``0``,
    ``1e-05``, ...; there are no minor ticks.

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
        [_lambda_label(v) for v in values],
        rotation=45 if rotated else 0,
        ha="right" if rotated else "center",
    )
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("λ")


def _percent_axis(ax: Axes, label: str) -> None:
    """A 0–100 % y axis (with a little room so lines at 0 and 100 stay visible)."""
    ax.set_ylim(-2.0, 102.0)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel(label)


def _seed_stats(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """Mean and sample std (ddof 1; 0 for one seed) over seeds of ``value``, per sorted λ.

    Rows of the same (λ, seed) are averaged first.

    Args:
        frame: rows with columns ``lam``, ``seed`` and ``value``.
        value: the column to summarise.
    """
    per_seed = frame.assign(lam=frame["lam"].astype(float)).groupby(["lam", "seed"])[value].mean()
    stats = per_seed.groupby(level="lam", sort=True).agg(["mean", "std"])
    return stats.fillna({"std": 0.0})


def _draw_mean_std(ax: Axes, stats: pd.DataFrame, *, colour: Any, label: str | None) -> None:
    """``stats["mean"]`` vs λ (the index) as a line with a ± ``stats["std"]`` band."""
    lam = stats.index.to_numpy(dtype=float)
    mean = stats["mean"].to_numpy(dtype=float)
    std = stats["std"].to_numpy(dtype=float)
    ax.plot(lam, mean, color=colour, marker="o", markersize=3, label=label)
    ax.fill_between(lam, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)


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
        lower_is_better: metrics whose y label gets "(lower is better)".
    """
    _check_frame(perf, "perf", _PERFORMANCE_COLUMNS)
    pairs = list(dict.fromkeys(zip(perf["task"], perf["metric"], strict=True)))
    tasks = _ordered(perf["task"])
    colours = dict(zip(tasks, sns.color_palette("colorblind", len(tasks)), strict=True))
    ncols = min(len(pairs), 3)
    nrows = math.ceil(len(pairs) / ncols)
    with _theme():
        fig = _new_figure(3.2 * ncols + 0.4, 2.8 * nrows + 0.4)
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True).ravel()
        for ax in axes[len(pairs) :]:
            ax.remove()
        for k, (ax, (task, metric)) in enumerate(zip(axes, pairs, strict=False)):
            part = perf[(perf["task"] == task) & (perf["metric"] == metric)]
            _draw_mean_std(ax, _seed_stats(part, "value"), colour=colours[task], label=None)
            _lambda_axis(ax, perf["lam"])
            ax.set_title(task)
            ax.set_ylabel(f"{metric} (lower is better)" if metric in lower_is_better else metric)
            if k + ncols < len(pairs):  # another panel below: its λ axis is labelled
                ax.set_xlabel("")
            else:
                ax.xaxis.set_tick_params(labelbottom=True)
    return fig


def plot_sparsity_vs_lambda(sparsity: pd.DataFrame) -> NotebookFigure:
    """% group and % parameter sparsity of the shared backbone vs λ, mean ± std over seeds
    (paper B, Fig. 3 (b)).

    Args:
        sparsity: tidy frame with columns ``lam`` (float >= 0), ``seed``, ``group_sparsity``
            and ``param_sparsity`` (both in %).
    """
    _check_frame(sparsity, "sparsity", _SPARSITY_COLUMNS)
    columns = ("group_sparsity", "param_sparsity")
    with _theme():
        fig = _new_figure(4.6, 3.4)
        ax = fig.subplots()
        for colour, column in zip(sns.color_palette("colorblind", 2), columns, strict=True):
            stats = _seed_stats(sparsity, column)
            _draw_mean_std(ax, stats, colour=colour, label=_SPARSITY_LABELS[column])
        _lambda_axis(ax, sparsity["lam"])
        _percent_axis(ax, "sparsity of the shared backbone (%)")
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
    _check_frame(history, "history", _SPARSITY_HISTORY_COLUMNS)
    columns = ["group_sparsity"] + (["param_sparsity"] if "param_sparsity" in history else [])
    frame = history.assign(lam=history["lam"].astype(float))
    lams = sorted(set(frame["lam"]))
    colours = sns.color_palette("crest", len(lams))
    with _theme():
        fig = _new_figure(4.2 * len(columns) + 1.2, 3.4)
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
                    label=f"λ = {_lambda_label(lam)}",
                )
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            _percent_axis(ax, _SPARSITY_LABELS[column])
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize="small")
    return fig


def plot_latency_vs_lambda(latency: pd.DataFrame) -> NotebookFigure:
    """Backbone inference time and cost vs λ (paper B, Fig. 3 (d)).

    Left: latency relative to the dense (λ = 0) backbone of the same device and batch size,
    one line per (device, batch size) with a ± std band, the dense time in ms in the legend
    and a dotted line at 1.  Right: MFLOPs (multiply–accumulates) per image of the slimmed
    backbone, with % group sparsity on a twin axis.

    Args:
        latency: tidy frame with one row per (``lam``, ``device``, ``batch_size``) and columns
            ``lam`` (float >= 0, λ = 0 required per setting), ``batch_size``, ``device``,
            ``latency_ms`` (per batch), ``latency_std_ms`` (may be NaN), ``flops``
            (multiply–accumulates per image) and ``group_sparsity`` (%).
    """
    _check_frame(latency, "latency", _LATENCY_COLUMNS)
    frame = latency.assign(lam=latency["lam"].astype(float))
    if frame.duplicated(["lam", "device", "batch_size"]).any():
        raise ConfigError("latency must have exactly one row per (lam, device, batch_size)")
    devices = _ordered(frame["device"])
    settings = sorted(
        set(zip(frame["device"], frame["batch_size"], strict=True)),
        key=lambda s: (devices.index(s[0]), s[1]),
    )
    curves: list[tuple[str, pd.DataFrame]] = []
    for device, batch in settings:
        part = frame[(frame["device"] == device) & (frame["batch_size"] == batch)]
        part = part.set_index("lam").sort_index()
        if 0.0 not in part.index or not part.at[0.0, "latency_ms"] > 0:
            raise ConfigError(
                f"latency needs a dense (lam = 0) row with latency_ms > 0 for device {device!r},"
                f" batch size {batch}: latencies are shown relative to it"
            )
        dense = float(part.at[0.0, "latency_ms"])
        stats = pd.DataFrame(
            {"mean": part["latency_ms"] / dense, "std": part["latency_std_ms"].fillna(0.0) / dense}
        )
        curves.append((f"{device}, batch {batch} (dense {dense:.3g} ms)", stats))
    cost = frame.groupby("lam", sort=True)[["flops", "group_sparsity"]].mean()
    with _theme():
        fig = _new_figure(9.4, 3.8)
        ax_time, ax_cost = fig.subplots(1, 2, sharex=True)
        for colour, (label, stats) in zip(
            sns.color_palette("colorblind", len(curves)), curves, strict=True
        ):
            _draw_mean_std(ax_time, stats, colour=colour, label=label)
        ax_time.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        ax_time.set_ylabel("latency / dense (λ = 0) latency")
        ax_time.set_title("backbone inference time")
        ax_time.legend(fontsize="small", loc="best")
        flops_colour, sparsity_colour = sns.color_palette("colorblind", 2)
        lam = cost.index.to_numpy(dtype=float)
        ax_cost.plot(
            lam,
            cost["flops"].to_numpy(dtype=float) / 1e6,
            color=flops_colour,
            marker="o",
            markersize=3,
            label="MFLOPs per image",
        )
        ax_cost.set_ylim(bottom=0.0)
        ax_cost.set_ylabel("MFLOPs per image (multiply–accumulates)")
        ax_cost.set_title("slimmed backbone cost")
        twin = ax_cost.twinx()
        twin.grid(False)
        twin.plot(
            lam,
            cost["group_sparsity"].to_numpy(dtype=float),
            color=sparsity_colour,
            marker="s",
            markersize=3,
            linestyle="--",
            label="% group sparsity",
        )
        _percent_axis(twin, "% group sparsity")
        for ax in (ax_time, ax_cost):
            _lambda_axis(ax, frame["lam"])
        handles = ax_cost.get_lines() + twin.get_lines()
        twin.legend(handles, [h.get_label() for h in handles], fontsize="small", loc="best")
    return fig


# --------------------------------------------------------------------------- paper B: heatmaps

_HEATMAP_COLOURS = {"active group": "#08306b", "zero group": "#ffffff", "no channel": "#d0d0d0"}
# image values: 0 = active group, 1 = zero group, masked = no such channel (narrower layer)
_HEATMAP_CMAP = ListedColormap(
    [_HEATMAP_COLOURS["active group"], _HEATMAP_COLOURS["zero group"]]
).with_extremes(bad=_HEATMAP_COLOURS["no channel"])


def _zero_mask(panel: str, layer: str, value: Any) -> np.ndarray:
    """One layer's zero-group mask as a 1-D bool array, validated."""
    mask = _to_numpy(value)
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
    with _theme():
        fig = _new_figure(
            4.0 * len(titles) + (1.6 if layer_labels else 0.6), max(2.6, 0.18 * len(layers) + 1.4)
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
            ax.set_xlabel("input channel")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if layer_labels:
            fontsize = "small" if len(layers) <= 24 else "x-small"
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
