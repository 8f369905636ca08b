"""Shared figure machinery, and the figures every notebook draws: training curves, sample
predictions, metric bars.  Each paper's own figures live in its package
(``mtlrepro/experiments/<paper>/figures.py``) and build on the helpers here: :func:`theme`,
:func:`new_figure`, :func:`save_figure`, :func:`check_frame`, :func:`seed_stats`,
:func:`draw_mean_std`, :func:`percent_axis`.

Each function returns a :class:`NotebookFigure` (a matplotlib ``Figure`` rendered with Agg,
not registered with pyplot), so a notebook cell ending in the figure shows it exactly once,
as the same PNG :func:`save_figure` writes.  Styling is seaborn's ``whitegrid`` theme, applied
per figure (the global matplotlib state is not touched).  PNGs are deterministic: fixed dpi,
no ``Software`` version string, written atomically.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mtlrepro.config import ConfigError, check_choice
from mtlrepro.files import atomic_write_bytes

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
def theme() -> Iterator[None]:
    """The seaborn theme of all figures, as a temporary rc context."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.8):
        yield


def new_figure(width: float, height: float) -> NotebookFigure:
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
    with theme():
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


def to_numpy(x: Any) -> np.ndarray:
    """A torch tensor (any device) or array-like as a NumPy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def ordered(values: pd.Series) -> list[Any]:
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
        tasks = ordered(with_val if not with_val.empty else history["task"])
    tasks = list(tasks)
    runs = ordered(history["run"]) if "run" in history.columns else [None]
    colours = sns.color_palette("colorblind", len(runs))
    primary = dict(primary_metrics or {})
    with theme():
        fig = new_figure(3.0 * len(tasks) + 0.6, 5.2)
        axes = fig.subplots(2, len(tasks), squeeze=False, sharex=True)
        for j, task in enumerate(tasks):
            rows = history[history["task"] == task]
            val_rows = rows[(rows["split"] == "val") & (rows["metric"] != loss_metric)]
            metric = primary.get(task) or next(iter(ordered(val_rows["metric"])), None)
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
    image_array = to_numpy(images)
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
    target_arrays = {t: to_numpy(targets[t])[:count] for t in tasks}
    pred_arrays = {r: {t: to_numpy(predictions[r][t])[:count] for t in tasks} for r in runs}
    depth_ranges = {
        t: _depth_range(target_arrays[t], [pred_arrays[r][t] for r in runs])
        for t in tasks
        if task_kinds[t] == "depth"
    }
    columns: list[tuple[str, str | None, str]] = [("image", None, "image")]
    for task in tasks:
        columns.append((task, None, f"{task}\ntarget"))
        columns += [(task, run, f"{task}\n{run}") for run in runs]
    with theme():
        fig = new_figure(1.5 * len(columns), 1.5 * count + 0.5)
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
    with theme():
        fig = new_figure(max(2.4, 0.45 * len(names) + 1.0) * len(metrics), 3.2)
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        for ax, metric in zip(axes, metrics, strict=True):
            ax.bar(range(len(names)), table[metric].to_numpy(dtype=float), color=colours)
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
            ax.set_title(metric)
    return fig


# --------------------------------------------------------------------------- class balance


# --------------------------------------------------------------------------- angle curves


# --------------------------------------------------------------------------- paper B: λ sweeps


def check_frame(frame: pd.DataFrame, what: str, columns: Sequence[str]) -> None:
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


def percent_axis(ax: Axes, label: str) -> None:
    """A 0–100 % y axis (with a little room so lines at 0 and 100 stay visible)."""
    ax.set_ylim(-2.0, 102.0)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel(label)


def seed_stats(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """Mean and sample std (ddof 1; 0 for one seed) over seeds of ``value``, per sorted λ.

    Rows of the same (λ, seed) are averaged first.

    Args:
        frame: rows with columns ``lam``, ``seed`` and ``value``.
        value: the column to summarise.
    """
    per_seed = frame.assign(lam=frame["lam"].astype(float)).groupby(["lam", "seed"])[value].mean()
    stats = per_seed.groupby(level="lam", sort=True).agg(["mean", "std"])
    return stats.fillna({"std": 0.0})


def draw_mean_std(ax: Axes, stats: pd.DataFrame, *, colour: Any, label: str | None) -> None:
    """``stats["mean"]`` vs λ (the index) as a line with a ± ``stats["std"]`` band."""
    lam = stats.index.to_numpy(dtype=float)
    mean = stats["mean"].to_numpy(dtype=float)
    std = stats["std"].to_numpy(dtype=float)
    ax.plot(lam, mean, color=colour, marker="o", markersize=3, label=label)
    ax.fill_between(lam, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)


# --------------------------------------------------------------------------- paper B: heatmaps

# image values: 0 = active group, 1 = zero group, masked = no such channel (narrower layer)
