"""Paper A's figures: class distributions (Fig. 2) and minimum-angle curves (Fig. 3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from mtlrepro.config import ConfigError
from mtlrepro.plots import NotebookFigure, new_figure, ordered, theme, to_numpy


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
            P(task | given_task = given_class) with P(task) (paper A, Eq. 2); its legend says
            how many samples the conditional is estimated from.
    """
    names = class_names or {}
    panels = len(labels) + (condition is not None)
    with theme():
        fig = new_figure(3.2 * panels, 3.0)
        axes = fig.subplots(1, panels, squeeze=False)[0]
        for ax, (task, values) in zip(axes, labels.items(), strict=False):
            counts = np.bincount(to_numpy(values).astype(np.int64))
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
            given = to_numpy(labels[given_task]) == given_class
            values = to_numpy(labels[task]).astype(np.int64)
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
                label=f"P({task} | {given_task}={given_name[given_class]}), "
                f"{int(given.sum())} samples",
            )
            ax.set_xticks(x, names.get(task, [str(i) for i in x]), rotation=90)
            ax.set_xlabel(task)
            ax.set_ylabel("% of samples")
            ax.set_title(f"{task} given the rarest {given_task}")
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


MAX_SERIES_PER_AXIS = 8
"""At most this many lines share one panel of Fig. 3 (else one panel per run kind)."""
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D")


def plot_min_angle_curves(curves: pd.DataFrame, *, theta: float | None = None) -> NotebookFigure:
    """Minimum distinctiveness angle vs epoch (paper A, Fig. 3): one colour per architecture,
    one line style per run kind (column ``run``, e.g. pruned D-Prune vs the unpruned baseline).

    Lines share one panel while there are at most :data:`MAX_SERIES_PER_AXIS` of them, else
    each run kind gets its own panel (same colours, shared y axis).

    Args:
        curves: tidy frame with columns ``epoch``, ``min_angle`` (°) and ``architecture``, and
            optionally ``run`` (without it, every line is one run kind).
        theta: the pruning threshold, drawn as a grey dotted line (``None``: not drawn).
    """
    missing = {"epoch", "min_angle", "architecture"} - set(curves.columns)
    if missing:
        raise ConfigError(f"curves lack columns {sorted(missing)}")
    if "run" not in curves.columns:
        curves = curves.assign(run="")
    runs = ordered(curves["run"])
    if len(runs) > len(_LINESTYLES):
        raise ConfigError(f"at most {len(_LINESTYLES)} run kinds; got {len(runs)}: {runs}")
    architectures = ordered(curves["architecture"])
    colours = dict(
        zip(architectures, sns.color_palette(n_colors=max(len(architectures), 1)), strict=False)
    )
    styles = {run: (_LINESTYLES[i], _MARKERS[i]) for i, run in enumerate(runs)}
    series = curves.groupby(["run", "architecture"], sort=False).ngroups
    panels = [runs] if series <= MAX_SERIES_PER_AXIS else [[run] for run in runs]
    with theme():
        fig = new_figure(6.0 * len(panels), 3.6)
        axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
        for ax, kinds in zip(axes, panels, strict=True):
            for run in kinds:
                linestyle, marker = styles[run]
                for name in architectures:
                    part = curves[(curves["run"] == run) & (curves["architecture"] == name)]
                    if part.empty:
                        continue
                    part = part.sort_values("epoch")
                    label = f"{name} · {run}" if run else name
                    ax.plot(
                        part["epoch"],
                        part["min_angle"],
                        marker=marker,
                        linestyle=linestyle,
                        color=colours[name],
                        label=label,
                    )
            if theta is not None:
                ax.axhline(theta, linestyle=":", color="grey", label=f"θ = {theta:g}°")
            if len(panels) > 1:
                ax.set_title(kinds[0])
            ax.set_xlabel("epoch")
            ax.set_ylabel("minimum angle (°), before pruning")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
