"""Paper E's figures: distillation score against final accuracy (Fig. 3), the search's
partitions (Fig. 4 left, middle and right), per-task score against channels allocated (Fig. 5)
and heatmaps of a found partition's ``P̃`` and mask.  Built on :mod:`mtlrepro.plots`' helpers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns

from mtlrepro.config import ConfigError
from mtlrepro.plots import NotebookFigure, new_figure, theme

MAX_SERIES = 8
"""Most series told apart by colour on one axis."""


def _grid(count: int, width: float = 3.0, height: float = 2.6):
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    fig = new_figure(width * columns, height * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes


def check_frame(frame: pd.DataFrame, what: str, columns: Sequence[str]) -> None:
    """Raise ``ConfigError`` if ``frame`` lacks one of ``columns`` or is empty."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"{what} lacks column(s) {', '.join(missing)}; needs {', '.join(columns)}"
        )
    if frame.empty:
        raise ConfigError(f"{what} is empty: nothing to plot")


def _check_series(count: int, what: str) -> None:
    if count > MAX_SERIES:
        raise ConfigError(f"{what}: at most {MAX_SERIES} series per axis; got {count}")


def plot_distillation_vs_accuracy(points: pd.DataFrame) -> NotebookFigure:
    """Fig. 3: per task, each fully trained random partition's distillation score against
    its final validation accuracy.

    Args:
        points: :func:`~mtlrepro.experiments.partition.study.fig3_frame`.
    """
    check_frame(points, "fig3 points", ["task", "score", "accuracy", "seed"])
    tasks = list(dict.fromkeys(points["task"]))
    seeds = sorted(points["seed"].unique())
    _check_series(len(seeds), "fig3 seeds")
    colours = dict(zip(seeds, sns.color_palette("colorblind", len(seeds)), strict=True))
    with theme():
        fig, axes = _grid(len(tasks))
        for ax, task in zip(axes, tasks, strict=False):
            part = points[points["task"] == task]
            for seed, rows in part.groupby("seed"):
                ax.scatter(rows["score"], rows["accuracy"], s=14, color=colours[seed],
                           label=f"seed {seed}")
            ax.set_title(task)
            ax.set_xlabel("distillation score (accuracy / teacher's)")
            ax.set_ylabel("final val. accuracy (%)")
        axes[0].legend(fontsize=7)
        fig.suptitle("Fig. 3: distillation score vs accuracy after full training")
    return fig


def plot_search(random: pd.DataFrame, sharing: pd.DataFrame,
                es: pd.DataFrame) -> NotebookFigure:
    """Fig. 4: (left) random partitions, score against average channel use; (middle) fixed
    diagonals, score against the mean pairwise overlap; (right) ES trajectories per penalty
    over the random cloud, each run's final partition marked.

    Args:
        random: the search's random records (``average_use``, ``score``).
        sharing: :func:`~mtlrepro.experiments.partition.study.sharing_frame`.
        es: the search's ``es`` and ``es_final`` records (``job``, ``penalty``, ``step``,
            ``average_use``, ``score``).
    """
    check_frame(random, "random partitions", ["average_use", "score"])
    check_frame(sharing, "sharing", ["diagonal", "overlap", "score"])
    check_frame(es, "ES samples", ["job", "penalty", "step", "average_use", "score"])
    diagonals = sorted(sharing["diagonal"].unique())
    penalties = sorted(es["penalty"].unique())
    _check_series(len(diagonals), "fixed diagonals")
    _check_series(len(penalties), "ES penalties")
    with theme():
        fig = new_figure(11.0, 3.4)
        left, middle, right = fig.subplots(1, 3, sharey=True)
        left.scatter(random["average_use"], random["score"], s=12, color="#4c72b0")
        left.set_title("random partitions")
        palette = sns.color_palette("colorblind", max(len(diagonals), len(penalties)))
        for colour, diagonal in zip(palette, diagonals, strict=False):
            rows = sharing[sharing["diagonal"] == diagonal]
            middle.scatter(rows["overlap"], rows["score"], s=14, color=colour,
                           label=f"diag P = {diagonal:g}")
        middle.set_title("fixed diagonal, varying sharing")
        middle.set_xlabel("mean pairwise overlap (share of channels)")
        middle.legend(fontsize=7)
        right.scatter(random["average_use"], random["score"], s=10, color="#cccccc",
                      label="random")
        for colour, penalty in zip(palette, penalties, strict=False):
            rows = es[(es["penalty"] == penalty) & (es["job"] == "es")]
            steps = rows[rows["step"] > 0].groupby("step")[["average_use", "score"]].mean()
            right.scatter(rows["average_use"], rows["score"], s=8, color=colour, alpha=0.5)
            right.plot(steps["average_use"], steps["score"], color=colour, marker="o",
                       markersize=3, label=f"ES λ = {penalty:g}")
            final = es[(es["penalty"] == penalty) & (es["job"] == "es_final")]
            right.scatter(final["average_use"], final["score"], marker="*", s=90,
                          color=colour, edgecolors="black", linewidths=0.5)
        right.set_title("ES (line: mean per step, ★ final)")
        right.legend(fontsize=7)
        for ax in (left, right):
            ax.set_xlabel("average channel use (share, mean diag P̃)")
        left.set_ylabel("distillation score (accuracy / teacher's, task mean)")
        fig.suptitle("Fig. 4: the search space seen through distillation")
    return fig


def plot_task_channels(points: pd.DataFrame) -> NotebookFigure:
    """Fig. 5: per task, its distillation score against the share of channels it is
    allocated, coloured by the partition's average channel use.

    Args:
        points: :func:`~mtlrepro.experiments.partition.study.task_channels_frame`.
    """
    check_frame(points, "fig5 points", ["task", "share", "score", "average_use"])
    tasks = list(dict.fromkeys(points["task"]))
    with theme():
        fig, axes = _grid(len(tasks))
        for ax, task in zip(axes, tasks, strict=False):
            part = points[points["task"] == task]
            dots = ax.scatter(part["share"], part["score"], c=part["average_use"], s=12,
                              cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(task)
            ax.set_xlabel("channels allocated (share, P̃_tt)")
            ax.set_ylabel("task score (accuracy / teacher's)")
        fig.colorbar(dots, ax=list(axes[: len(tasks)]), label="average channel use (share)")
        fig.suptitle("Fig. 5: per-task score vs channels allocated")
    return fig


def plot_partition(P_tilde: np.ndarray, masks: np.ndarray, tasks: Sequence[str],
                   title: str = "") -> NotebookFigure:
    """Heatmaps of a partition: ``P̃`` (share of the channels each task uses, and each pair
    shares) and its ``c × n`` mask (channels × tasks).

    Args:
        P_tilde: the refined n × n matrix.
        masks: the c × n 0/1 mask.
        tasks: the n task names.
        title: the figure's title.
    """
    P_tilde, masks = np.asarray(P_tilde, dtype=float), np.asarray(masks, dtype=float)
    n = len(tasks)
    if P_tilde.shape != (n, n) or masks.ndim != 2 or masks.shape[1] != n:
        raise ConfigError(
            f"P̃ {P_tilde.shape} and mask {masks.shape} must be n × n and c × n with n = {n}"
        )
    with theme():
        fig = new_figure(4.0 + 0.5 * n, 3.8)
        left, right = fig.subplots(1, 2, width_ratios=(1.2, 1.0))
        sns.heatmap(P_tilde, ax=left, vmin=0, vmax=1, cmap="viridis", annot=n <= 10,
                    fmt=".2f", annot_kws={"fontsize": 6}, xticklabels=tasks, yticklabels=tasks,
                    cbar_kws={"label": "share of channels"})
        left.set_title("P̃ (diagonal: use, off-diagonal: overlap)")
        sns.heatmap(masks, ax=right, vmin=0, vmax=1, cmap="Greys", xticklabels=tasks,
                    yticklabels=False, cbar_kws={"label": "channel used (1) or not (0)"})
        right.set_title("mask M")
        right.set_ylabel(f"channel (of {masks.shape[0]})")
        right.set_xlabel("task")
        left.set_xlabel("task")
        left.set_ylabel("task")
        fig.suptitle(title)
    return fig
