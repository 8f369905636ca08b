"""Paper C's figures: training curves, the learned task diagonals, Δ per network.

The paper has no figure of its own; these show what a reader of Tables 1 and 3 wants to see:
whether factorisation and Alg. 1 change how training proceeds, which shared components each
task keeps (the diagonals ``M(j)`` of Eq. 2), and how the multi-task networks compare over
seeds.  Built on :mod:`mtlrepro.plots`' helpers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from mtlrepro.config import ConfigError
from mtlrepro.plots import NotebookFigure, new_figure, theme

LOSS_LABELS: dict[str, str] = {
    "segmentation": "cross-entropy (nats)",
    "depth": "L1 depth error (m)",
    "normal": "1 − cosine (unitless)",
}
"""Task -> the y label of its training loss."""


def plot_training_curves(curves: pd.DataFrame) -> NotebookFigure:
    """Training loss per task against epoch, one line (mean ± std over seeds) per network.

    Args:
        curves: :func:`~mtlrepro.experiments.overparam.study.training_curves`.
    """
    needed = {"row", "task", "epoch", "mean", "std"}
    if not needed <= set(curves.columns) or curves.empty:
        raise ConfigError(f"curves needs rows with columns {sorted(needed)}")
    tasks = list(dict.fromkeys(curves["task"]))
    rows = list(dict.fromkeys(curves["row"]))
    if len(rows) > 8:
        raise ConfigError(f"at most 8 networks per panel; got {len(rows)}")
    colours = sns.color_palette("colorblind", len(rows))
    with theme():
        fig = new_figure(3.3 * len(tasks) + 0.4, 3.4)
        axes = fig.subplots(1, len(tasks), squeeze=False)[0]
        for ax, task in zip(axes, tasks, strict=True):
            for row, colour in zip(rows, colours, strict=True):
                part = curves[(curves["task"] == task) & (curves["row"] == row)]
                epoch = part["epoch"].to_numpy(dtype=float)
                mean, std = part["mean"].to_numpy(dtype=float), part["std"].to_numpy(dtype=float)
                ax.plot(epoch, mean, color=colour, marker="o", markersize=3, label=row)
                ax.fill_between(epoch, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
            ax.set_title(task)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(f"training loss: {LOSS_LABELS.get(task, 'loss')}")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=len(rows))
    return fig


def plot_task_diagonals(diagonals: Mapping[str, pd.DataFrame]) -> NotebookFigure:
    """Heatmaps of the learned diagonals of one factorised layer per network: rows are the task
    diagonals ``M(j)`` and their product ``M`` (Eq. 2), columns the components, sorted by
    ``|M|`` (largest first); 1 is the initial value.

    Args:
        diagonals: :func:`~mtlrepro.experiments.overparam.study.task_diagonals`.
    """
    if not diagonals:
        raise ConfigError("no factorised network's diagonals to show")
    values = np.concatenate([frame.to_numpy(dtype=float).ravel() for frame in diagonals.values()])
    reach = float(np.max(np.abs(values - 1.0))) or 1.0
    with theme():
        fig = new_figure(7.5, 1.0 + 1.45 * len(diagonals))
        axes = fig.subplots(len(diagonals), 1, squeeze=False)[:, 0]
        for ax, (row, frame) in zip(axes, diagonals.items(), strict=True):
            order = np.argsort(-np.abs(frame.loc["M"].to_numpy(dtype=float)), kind="stable")
            image = ax.imshow(
                frame.to_numpy(dtype=float)[:, order],
                aspect="auto",
                cmap="vlag",
                vmin=1.0 - reach,
                vmax=1.0 + reach,
                interpolation="nearest",
            )
            ax.set_yticks(range(len(frame.index)), list(frame.index))
            ax.set_title(
                f"{row}: layer {frame.attrs.get('layer', '?')} (r = {frame.shape[1]})", fontsize=9
            )
            ax.grid(False)
        axes[-1].set_xlabel("component (sorted by |M|, largest first)")
        fig.colorbar(image, ax=list(axes), label="diagonal entry (initially 1)", shrink=0.9)
    return fig


def plot_delta_bars(per_seed: pd.DataFrame, order: list[str]) -> NotebookFigure:
    """Δ_T (%) of every multi-task network against the single-task networks: the seed mean as a
    bar, the seeds as dots.

    Args:
        per_seed: :func:`~mtlrepro.experiments.overparam.study.deltas`.
        order: the rows to show, in order.
    """
    rows = [r for r in order if r in set(per_seed["row"])]
    if not rows:
        raise ConfigError("no Δ to show")
    with theme():
        fig = new_figure(max(4.0, 0.55 * len(rows) + 1.2), 3.6)
        ax = fig.subplots()
        means = [per_seed.loc[per_seed["row"] == r, "delta_T"].mean() for r in rows]
        ax.bar(range(len(rows)), means, color=sns.color_palette("colorblind")[0], alpha=0.7)
        for i, row in enumerate(rows):
            seeds = per_seed.loc[per_seed["row"] == row, "delta_T"].to_numpy(dtype=float)
            ax.plot(np.full(len(seeds), i), seeds, "o", color="black", markersize=3)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(rows)), rows, rotation=45, ha="right")
        ax.set_ylabel("Δ_T vs single-task (%)")
    return fig
