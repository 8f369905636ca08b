"""Shared figure machinery, and the figures every notebook draws: training curves, sample
predictions, metric bars.  Each paper's own figures live in its package
(``mtlrepro/experiments/<paper>/figures.py``) and build on the helpers here: :func:`theme`,
:func:`new_figure`, :func:`save_figure`, :func:`check_frame`, :func:`seed_stats`,
:func:`draw_mean_std`, :func:`percent_axis`, :func:`metric_label` (axis labels with units),
:func:`series_styles` (colour + line style per series; at most :data:`MAX_SERIES` per axis).

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
from matplotlib.patches import Patch
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


# --------------------------------------------------------------------------- labels and styles

MAX_SERIES = 8
"""At most this many lines per axis; more series are split over panels."""

LINE_STYLES: tuple[Any, ...] = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")

# metric -> (readable name, unit or None); the values follow mtlrepro.metrics (percentages
# are 0–100, depth errors in the target's unit, metres for the datasets used here).
METRIC_LABELS: dict[str, tuple[str, str | None]] = {
    "miou": ("mIoU", "%"),
    "pixel_acc": ("pixel accuracy", "%"),
    "abs_err": ("abs. error", "m"),
    "rel_err": ("rel. error", "ratio"),
    "delta1": ("δ < 1.25", "%"),
    "delta2": ("δ < 1.25²", "%"),
    "delta3": ("δ < 1.25³", "%"),
    "mean_angle": ("mean angle", "°"),
    "median_angle": ("median angle", "°"),
    "within_11_25": ("within 11.25°", "%"),
    "within_22_5": ("within 22.5°", "%"),
    "within_30": ("within 30°", "%"),
    "cosine": ("cosine similarity", "−1…1"),
    "f1": ("F1", "%"),
    "bce": ("BCE", "nats"),
    "accuracy": ("accuracy", "%"),
    "loss": ("loss", None),
}


def metric_label(metric: str, *, prefix: str = "") -> str:
    """Axis label of a metric with its unit, e.g. ``"mIoU (%)"``, ``"mean angle (°)"``.

    Unknown metrics are shown by name; losses have no unit (``"loss"``).

    Args:
        metric: metric name as logged (see :data:`mtlrepro.metrics.METRIC_NAMES`).
        prefix: words before the name, e.g. ``"val"`` or ``"train"``.
    """
    name, unit = METRIC_LABELS.get(metric, (metric.replace("_", " "), None))
    text = f"{prefix} {name}" if prefix else name
    return f"{text} ({unit})" if unit else text


def series_styles(count: int) -> list[dict[str, Any]]:
    """``count`` distinct line styles: colour-blind palette × dash pattern × marker.

    Neighbouring series differ in colour *and* dash pattern, so no two of the first
    ``8 × 6`` share both.
    """
    colours = sns.color_palette("colorblind", 8)
    return [
        {
            "color": colours[k % len(colours)],
            "linestyle": LINE_STYLES[k % len(LINE_STYLES)],
            "marker": MARKERS[k % len(MARKERS)],
        }
        for k in range(count)
    ]


def chunk_series(names: Sequence[Any], size: int = MAX_SERIES) -> list[list[Any]]:
    """``names`` in consecutive groups of at most ``size``."""
    names = list(names)
    return [names[k : k + size] for k in range(0, len(names), size)] or [[]]


# --------------------------------------------------------------------------- training curves


def plot_training_curves(
    history: pd.DataFrame,
    *,
    primary_metrics: Mapping[str, str] | None = None,
    tasks: Sequence[str] | None = None,
    loss_metric: str = "loss",
    run_groups: Mapping[str, Sequence[str]] | None = None,
) -> NotebookFigure:
    """Training loss and validation primary metric per task, one pair of rows per run group.

    One column per task.  Each group of runs (e.g. "architectures", "ablations") gets a row
    of training-loss curves and a row of validation results; a group has at most
    :data:`MAX_SERIES` runs, each with its own colour *and* line style, named in a legend
    right of the group's rows.  Validation logged at several epochs is drawn as curves; a
    validation logged once (at the end) as one horizontal bar per run.  Values logged several
    times per epoch are averaged per epoch.

    Args:
        history: long frame with columns ``epoch, split, task, metric, value`` (``step`` and
            ``run`` optional), as logged by the training loop.
        primary_metrics: task -> the validation metric to plot; default: the first non-loss
            validation metric logged for the task.
        tasks: tasks to plot, in order; default: the tasks with validation rows (so not the
            training loop's total-loss task ``"all"``), in order of first appearance.
        loss_metric: the metric name of training losses.
        run_groups: group title -> runs (values of the ``run`` column); a run may appear in
            several groups.  Default: the runs in order, in chunks of :data:`MAX_SERIES`.
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
    has_runs = "run" in history.columns
    runs = ordered(history["run"]) if has_runs else [None]
    if run_groups is None:
        chunks = chunk_series(runs)
        groups = {("" if len(chunks) == 1 else f"runs {k + 1}/{len(chunks)}"): c
                  for k, c in enumerate(chunks)}
    else:
        groups = {str(title): list(members) for title, members in run_groups.items()}
        for title, members in groups.items():
            unknown = [m for m in members if m not in runs]
            if unknown or not members or len(members) > MAX_SERIES:
                raise ConfigError(
                    f"run group {title!r} must list 1 to {MAX_SERIES} runs of the history;"
                    f" got {members} (unknown: {unknown})"
                )
    primary = dict(primary_metrics or {})
    metrics = {}
    for task in tasks:
        val_rows = history[(history["task"] == task) & (history["split"] == "val")
                           & (history["metric"] != loss_metric)]
        metrics[task] = primary.get(task) or next(iter(ordered(val_rows["metric"])), None)
    with theme():
        fig = new_figure(2.9 * len(tasks) + 2.6, 4.6 * len(groups) + 0.2)
        subfigs = np.atleast_1d(fig.subfigures(len(groups), 1))
        for subfig, (title, members) in zip(subfigs, groups.items(), strict=True):
            axes = subfig.subplots(2, len(tasks), squeeze=False)
            if title:
                subfig.suptitle(title, fontweight="bold")
            styles = dict(zip(members, series_styles(len(members)), strict=True))
            for j, task in enumerate(tasks):
                rows = history[history["task"] == task]
                metric = metrics[task]
                train = rows[(rows["split"] == "train") & (rows["metric"] == loss_metric)]
                val = rows[(rows["split"] == "val") & (rows["metric"] == metric)]
                _draw_curves(axes[0, j], train, members, styles)
                _draw_validation(axes[1, j], val, members, styles, show_names=j == 0)
                axes[0, j].set_title(task)
                axes[0, j].set_ylabel(metric_label(loss_metric, prefix="train"))
                axes[0, j].set_xlabel("epoch")
                label = metric_label(metric, prefix="val") if metric else "val"
                if _single_epoch(val, members):
                    axes[1, j].set_xlabel(f"final {label}")
                else:
                    axes[1, j].set_ylabel(label)
                    axes[1, j].set_xlabel("epoch")
            if has_runs:
                handles, labels = [], []
                for ax in axes[0]:
                    h, lab = ax.get_legend_handles_labels()
                    for handle, name in zip(h, lab, strict=True):
                        if name not in labels:
                            handles.append(handle)
                            labels.append(name)
                subfig.legend(handles, labels, loc="outside right upper", fontsize="small")
    return fig


def _run_rows(part: pd.DataFrame, run: Any) -> pd.DataFrame:
    return part if run is None else part[part["run"] == run]


def _single_epoch(part: pd.DataFrame, runs: Sequence[Any]) -> bool:
    """True if every run has its validation at one epoch at most (and some run has one)."""
    counts = [_run_rows(part, run)["epoch"].nunique() for run in runs]
    return max(counts, default=0) == 1


def _draw_curves(
    ax: Axes, part: pd.DataFrame, runs: Sequence[Any], styles: Mapping[Any, Mapping[str, Any]]
) -> None:
    """Per-epoch mean of ``part`` for each run, or a 'no data' note; integer epoch ticks."""
    drawn = False
    epochs: set[Any] = set()
    for run in runs:
        sel = _run_rows(part, run)
        if sel.empty:
            continue
        curve = sel.groupby("epoch", sort=True)["value"].mean()
        epochs.update(curve.index.tolist())
        ax.plot(
            curve.index.to_numpy(),
            curve.to_numpy(),
            markersize=3,
            label=None if run is None else str(run),
            **styles[run],
        )
        drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
    if 0 < len(epochs) <= 12:
        ax.set_xticks(sorted(epochs))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _draw_validation(
    ax: Axes,
    part: pd.DataFrame,
    runs: Sequence[Any],
    styles: Mapping[Any, Mapping[str, Any]],
    *,
    show_names: bool,
) -> None:
    """Validation curves, or one horizontal bar per run when validated once per run."""
    if not _single_epoch(part, runs):
        _draw_curves(ax, part, runs, styles)
        return
    values = [float(_run_rows(part, run)["value"].mean()) for run in runs]
    positions = np.arange(len(runs))
    hatches = ("", "//", "..", "xx", "\\\\", "++")
    for k, run in enumerate(runs):
        ax.barh(
            positions[k],
            values[k],
            height=0.7,
            color=styles[run]["color"],
            hatch=hatches[k % len(hatches)],
            edgecolor="white",
        )
    for container in ax.containers:
        ax.bar_label(container, fmt="%.3g", fontsize="x-small", padding=2)
    ax.set_yticks(positions, [str(r) for r in runs] if show_names else [])
    ax.margins(x=0.15)
    ax.set_ylim(len(runs) - 0.5, -0.5)  # first run at the top
    ax.grid(False, axis="y")


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


def _normal_key(size: int = 48) -> np.ndarray:
    """RGB image of a unit hemisphere facing the viewer in the normal colour code."""
    u = np.linspace(-1.0, 1.0, size)
    x, y = np.meshgrid(u, -u)
    z = np.sqrt(np.clip(1.0 - x**2 - y**2, 0.0, None))
    rgb = np.clip((np.stack([x, y, z], axis=-1) + 1.0) / 2.0, 0.0, 1.0)
    rgb[x**2 + y**2 > 1.0] = 1.0
    return rgb


def _draw_key(
    fig: Figure,
    ax: Axes,
    kind: str,
    *,
    classes: Sequence[int],
    class_names: Sequence[str] | None,
    mappable: Any,
) -> None:
    """The key of one task row: class legend, colour bar or normal colour code."""
    ax.set_axis_off()
    if kind == "segmentation":
        handles = [
            Patch(
                facecolor=_segmentation_rgb(np.array([c]))[0],
                edgecolor="grey",
                label=class_names[c] if class_names and 0 <= c < len(class_names) else f"class {c}",
            )
            for c in [c for c in classes if c >= 0][:_MAX_LEGEND_CLASSES]
        ]
        if any(c < 0 for c in classes):
            handles.append(Patch(facecolor=_IGNORE_RGB, edgecolor="grey", label="ignored"))
        ax.legend(
            handles=handles,
            loc="center left",
            fontsize="x-small",
            title="class",
            title_fontsize="small",
            ncols=1 + (len(handles) > 10),
            frameon=False,
        )
    elif kind in ("depth", "binary") and mappable is not None:
        cax = ax.inset_axes((0.05, 0.05, 0.12, 0.9))
        bar = fig.colorbar(mappable, cax=cax)
        bar.set_label("depth (m)" if kind == "depth" else "probability", fontsize="small")
        bar.ax.tick_params(labelsize="x-small")
    elif kind == "normal":
        key = ax.inset_axes((0.05, 0.15, 0.6, 0.7))
        key.imshow(_normal_key(), interpolation="bilinear")
        key.set_axis_off()
        key.set_title("normal colour\n(n + 1) / 2 as RGB", fontsize="x-small")


_MAX_LEGEND_CLASSES = 20


def plot_sample_predictions(
    images: Any,
    targets: Mapping[str, Any],
    predictions: Mapping[str, Mapping[str, Any]],
    task_kinds: Mapping[str, str],
    *,
    max_samples: int = 2,
    class_names: Mapping[str, Sequence[str]] | None = None,
) -> NotebookFigure:
    """A few samples, large: per sample one row per task with the target and each run's
    prediction, and a key (class legend, depth / probability colour bar, normal colour code).

    Columns are ``image`` (in the sample's first row), ``target``, one per run, then ``key``.
    Segmentation maps use a fixed categorical palette (ignore = black), depth a shared
    viridis range per task (invalid target pixels black), normals ``(n + 1) / 2`` as RGB,
    binary maps grey levels in [0, 1] (ignore = red), classification the class index as text.

    Args:
        images: (N, 3, H, W) images in [0, 1] (tensor or array).
        targets: task -> target batch, in the task kind's target format.
        predictions: run name -> task -> displayable prediction batch (``Task.predict``:
            class maps, depth, unit normals, probabilities, class indices).
        task_kinds: task -> kind (see :data:`PLOT_KINDS`); its order is the row order.
        max_samples: at most this many samples (the first ones).
        class_names: task -> class names for the legend (default ``class k``).
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
    names = dict(class_names or {})
    target_arrays = {t: to_numpy(targets[t])[:count] for t in tasks}
    pred_arrays = {r: {t: to_numpy(predictions[r][t])[:count] for t in tasks} for r in runs}
    depth_ranges = {
        t: _depth_range(target_arrays[t], [pred_arrays[r][t] for r in runs])
        for t in tasks
        if task_kinds[t] == "depth"
    }
    columns: list[str | None] = ["image", None, *runs, "key"]  # None = target
    height, width = image_array.shape[-2:]
    panel_h = 2.0 * min(max(height / width, 0.5), 1.5)
    with theme():
        fig = new_figure(2.0 * len(columns) + 1.0, panel_h * count * len(tasks) + 0.6)
        axes = fig.subplots(count * len(tasks), len(columns), squeeze=False)
        for i in range(count):
            for t, task in enumerate(tasks):
                row = axes[i * len(tasks) + t]
                kind = task_kinds[task]
                mappable = None
                shown: set[int] = set()
                for j, column in enumerate(columns):
                    ax = row[j]
                    ax.set_axis_off()
                    if column == "key":
                        continue
                    if t == 0:
                        title = "target" if column is None else str(column)
                        ax.set_title(f"sample {i + 1}" if column == "image" else title,
                                     fontsize="small")
                    if column == "image":
                        if t == 0:
                            image = np.clip(image_array[i].transpose(1, 2, 0), 0.0, 1.0)
                            ax.imshow(
                                image.squeeze(-1) if image.shape[-1] == 1 else image,
                                cmap="gray",
                                interpolation="nearest",
                            )
                        continue
                    value = np.asarray(
                        target_arrays[task][i] if column is None else pred_arrays[column][task][i]
                    )
                    _draw_panel(
                        ax,
                        kind,
                        value,
                        is_target=column is None,
                        depth_range=depth_ranges.get(task, (0.0, 1.0)),
                    )
                    if j == 1:
                        ax.text(-0.06, 0.5, task, transform=ax.transAxes, rotation=90,
                                ha="right", va="center", fontsize="small", fontweight="bold")
                    if ax.images:
                        mappable = ax.images[0]
                    if kind == "segmentation":
                        if value.ndim == 3 and value.shape[0] > 1:
                            value = value.argmax(axis=0)
                        shown.update(int(c) for c in np.unique(value))
                _draw_key(
                    fig,
                    row[-1],
                    kind,
                    classes=sorted(c for c in shown if c >= 0) + ([-1] if -1 in shown else []),
                    class_names=names.get(task),
                    mappable=mappable,
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
