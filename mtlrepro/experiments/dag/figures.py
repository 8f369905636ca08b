"""Paper D's figures: the task sub-networks as DAGs and their adjacency matrices (Fig. 3),
performance and size against the flow constant (Fig. 4), and the reductions compared at the
same sparsity (Fig. 5).  Built on :mod:`mtlrepro.plots`' helpers.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from mtlrepro.config import ConfigError
from mtlrepro.plots import NotebookFigure, new_figure, theme


def _usage(graphs: Mapping[str, nx.DiGraph]) -> tuple[int, dict[tuple[int, int], frozenset]]:
    """The number of hidden states N and, per edge, the tasks whose sub-network uses it."""
    if not graphs:
        raise ConfigError("plot_topologies needs at least one task graph")
    sizes = {g.number_of_nodes() for g in graphs.values()}
    if len(sizes) != 1:
        raise ConfigError(f"the task graphs must share their nodes; got sizes {sorted(sizes)}")
    users: dict[tuple[int, int], set[str]] = {}
    for task, graph in graphs.items():
        for edge in graph.edges:
            users.setdefault((int(edge[0]), int(edge[1])), set()).add(task)
    return sizes.pop() - 2, {e: frozenset(t) for e, t in users.items()}


def plot_topologies(graphs: Mapping[str, nx.DiGraph], title: str = "") -> NotebookFigure:
    """Fig. 3: each task's finalised sub-network drawn on the states ``0`` (input) … ``N+1``
    (read-out) left to right, edges arched by length so long skips stand out, coloured by the
    set of tasks that use them (one panel per task); and the adjacency matrix of all tasks.

    Args:
        graphs: task -> its sub-network (:func:`mtlrepro.methods.dag.task_graph`).
        title: the figure's title.
    """
    n, users = _usage(graphs)
    tasks = list(graphs)
    combos = sorted({u for u in users.values()}, key=lambda u: (-len(u), sorted(u)))
    if len(combos) > 8:
        raise ConfigError(f"at most 8 task combinations can be told apart; got {len(combos)}")
    palette = dict(zip(combos, sns.color_palette("colorblind", len(combos)), strict=True))
    positions = {k: (float(k), 0.0) for k in range(n + 2)}
    with theme():
        fig = new_figure(3.6 * len(tasks) + 3.6, 3.6)
        axes = fig.subplots(1, len(tasks) + 1, squeeze=False)[0]
        for ax, task in zip(axes[:-1], tasks, strict=True):
            graph = graphs[task]
            nx.draw_networkx_nodes(graph, positions, ax=ax, node_size=120, node_color="#dddddd",
                                   edgecolors="#444444")
            nx.draw_networkx_labels(graph, positions, ax=ax, font_size=7)
            for (i, j), who in users.items():
                if task in who:
                    rad = 0.15 + 0.05 * (j - i)
                    nx.draw_networkx_edges(graph, positions, edgelist=[(i, j)], ax=ax,
                                           edge_color=[palette[who]], width=1.5, arrowsize=7,
                                           connectionstyle=f"arc3,rad={-rad}", node_size=120)
            ax.set_title(f"{task}: {graph.number_of_edges()} edges")
            longest = max((j - i for i, j in graph.edges), default=1)
            ax.set_xlim(-0.7, n + 1.7)
            ax.set_ylim(-0.6, 0.6 + (0.15 + 0.05 * longest) * longest / 2)
            ax.axis("off")
        matrix = np.zeros((n + 2, n + 2), dtype=int)
        for (i, j), who in users.items():
            matrix[i, j] = combos.index(who) + 1
        ax = axes[-1]
        colours = ["#ffffff", *(palette[c] for c in combos)]
        ax.imshow(matrix, cmap=ListedColormap(colours), vmin=0, vmax=len(combos),
                  interpolation="nearest")
        ax.set_xlabel("target state j (N+1 = read-out)")
        ax.set_ylabel("source state i (0 = input)")
        ax.set_title("adjacency (colour: tasks using the edge)")
        handles = [Patch(color=palette[c], label=" + ".join(sorted(c))) for c in combos]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(combos)))
        if title:
            fig.suptitle(title)
    return fig


def plot_flow_curve(curve: pd.DataFrame) -> NotebookFigure:
    """Fig. 4: Δ_T's degradation against the complete DAG (left axis, points of %) and the
    parameters of the finalised network and of the search space (right axis, × the shared
    bottom) against the flow constant M; mean ± std over seeds.

    Args:
        curve: :func:`~mtlrepro.experiments.dag.study.flow_curve`.
    """
    needed = {"flow", "degradation", "degradation_std", "params", "params_std", "search_params"}
    if not needed <= set(curve.columns) or curve.empty:
        raise ConfigError(f"curve needs rows with columns {sorted(needed)}")
    curve = curve.sort_values("flow")
    colours = sns.color_palette("colorblind", 3)
    with theme():
        fig = new_figure(6.0, 3.8)
        ax = fig.subplots()
        ax.errorbar(curve["flow"], curve["degradation"], yerr=curve["degradation_std"],
                    color=colours[0], marker="o", capsize=3, label="Δ_T degradation")
        ax.axhline(0.0, color="#888888", linewidth=0.8)
        ax.set_xlabel("flow constant M (largest = complete DAG)")
        ax.set_ylabel("degradation vs complete DAG (points of Δ_T, %)")
        ax.set_xticks(curve["flow"])
        right = ax.twinx()
        right.errorbar(curve["flow"], curve["params"], yerr=curve["params_std"],
                       color=colours[1], marker="s", capsize=3, label="finalised parameters")
        right.plot(curve["flow"], curve["search_params"], color=colours[2], marker="s",
                   linestyle="--", label="search-space parameters")
        right.set_ylabel("parameters (× shared bottom)")
        right.grid(False)
        handles = [*ax.get_legend_handles_labels()[0], *right.get_legend_handles_labels()[0]]
        fig.legend(handles=handles, loc="outside lower center", ncols=3)
    return fig


def plot_reductions(table: pd.DataFrame) -> NotebookFigure:
    """Fig. 5: Δ_T's degradation against the non-reduced network for each reduction at the
    same number of edges (mean ± std over seeds).

    Args:
        table: :func:`~mtlrepro.experiments.dag.study.reduction_table`.
    """
    needed = {"degradation", "degradation_std"}
    if not needed <= set(table.columns) or table.empty:
        raise ConfigError(f"table needs rows with columns {sorted(needed)}")
    colours = sns.color_palette("colorblind", len(table))
    with theme():
        fig = new_figure(5.0, 3.6)
        ax = fig.subplots()
        ax.bar(table.index, table["degradation"], yerr=table["degradation_std"], capsize=4,
               color=colours)
        ax.axhline(0.0, color="#888888", linewidth=0.8)
        ax.set_xlabel("reduction at the flow-based reduction's sparsity")
        ax.set_ylabel("degradation vs non-reduced (points of Δ_T, %)")
    return fig
