"""Paper D's tables from the unit records (:mod:`mtlrepro.experiments.dag.units`).

Every Δ is Eq. 10–11 (:func:`mtlrepro.metrics.relative_performance`, ``paper_d``) against the
same seed's single-task networks, over the paper's metrics (:data:`PAPER_METRICS`); relative
parameters are against the shared bottom (Tables 1–4: shared bottom = 1.00).  Tables report the
mean and the sample std over seeds (``<column>_std``) beside the paper's value
(``<column>_paper``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import torch

from mtlrepro import paper_numbers
from mtlrepro.compress import conv_flops, latency
from mtlrepro.experiments.dag import units
from mtlrepro.inference import export
from mtlrepro.methods import dag
from mtlrepro.metrics import METRIC_NAMES
from mtlrepro.metrics import relative_where_defined as relative
from mtlrepro.models import count_parameters
from mtlrepro.train import seed_everything

_DENSE_METRICS: dict[str, tuple[str, ...]] = {
    "segmentation": METRIC_NAMES["segmentation"],
    "depth": METRIC_NAMES["depth"],
    "normal": tuple(m for m in METRIC_NAMES["normal"] if m != "cosine"),
}
PAPER_METRICS: dict[str, dict[str, tuple[str, ...]]] = {
    "nyu": _DENSE_METRICS,
    "city": _DENSE_METRICS,
    "pascal": {
        "segmentation": ("miou",),
        "parts": ("miou",),
        "saliency": ("miou",),
        "normal": ("mean_angle",),
        "edge": ("bce",),
    },
}
"""Scenario -> task -> the metrics of Tables 11–13 that Δ averages (Table 13 has one per task;
its edge "Mean ↓" we read as the edge loss, the project's ``bce``)."""
TOPOLOGY: tuple[str, ...] = ("depth", "width", "sparsity")
"""Table 5's topology metrics (§3.1: D, W, S)."""
SHARED_BOTTOM = "Shared Bottom"
SINGLE_TASK = "Single-Task"


def runs_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per trained network: ``kind``, ``seed``, ``row``, ``network``, ``flow``,
    ``branch``, ``tasks``, ``test``, ``parameters``, ``search_parameters``, ``search_edges``,
    ``topology``, ``search_gates`` (missing fields ``None``)."""
    columns = ["kind", "seed", "row", "network", "flow", "branch", "tasks", "test",
               "parameters", "search_parameters", "search_edges", "topology", "search_gates"]
    frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in records], columns=columns)
    return frame


def _scores(test: Mapping[str, Mapping[str, float]], kind: str, tasks: Sequence[str]) -> dict:
    return {t: {m: test[t][m] for m in PAPER_METRICS[kind][t]} for t in tasks}


def scenario_tasks(runs: pd.DataFrame, kind: str) -> tuple[str, ...]:
    """The tasks of a scenario's multi-task networks."""
    part = runs[(runs["kind"] == kind) & (runs["network"] == "shared_bottom")]
    return tuple(part["tasks"].iloc[0])


def _singles(runs: pd.DataFrame, kind: str, seed: int) -> pd.DataFrame:
    return runs[(runs["kind"] == kind) & (runs["network"] == "single") & (runs["seed"] == seed)]


def single_task_reference(runs: pd.DataFrame, kind: str, seed: int) -> dict:
    """Task -> metric -> value of the scenario's single-task networks of a seed."""
    return {r.tasks[0]: dict(r.test[r.tasks[0]]) for r in _singles(runs, kind, seed).itertuples()}


def deltas(runs: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Per network of the ``kind`` scenario and seed: Δ per task and Δ_T (Eq. 10–11, %) and
    the parameters relative to the shared bottom; the single-task row is the sum of the
    single-task networks (Δ = 0).

    Args:
        runs: :func:`runs_frame`.
        kind: the scenario (a unit kind).
    """
    rows = []
    part = runs[runs["kind"] == kind]
    tasks = scenario_tasks(runs, kind)
    for seed, seed_runs in part.groupby("seed"):
        reference = single_task_reference(runs, kind, seed)
        shared = seed_runs.loc[seed_runs["row"] == SHARED_BOTTOM, "parameters"].iloc[0]
        single = int(_singles(runs, kind, seed)["parameters"].sum())
        rows.append({"row": SINGLE_TASK, "seed": seed, **{t: 0.0 for t in tasks}, "all": 0.0,
                     "params": single / shared})
        for r in seed_runs.itertuples():
            if r.network == "single":
                continue
            delta = relative(_scores(r.test, kind, tasks), reference)
            rows.append({"row": r.row, "seed": seed, **delta, "params": r.parameters / shared})
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Mean and std (``<column>_std``, 0 for one seed) of ``columns`` per ``row``, rows in
    order of first appearance."""
    grouped = frame.groupby("row", sort=False)[list(columns)]
    mean = grouped.mean()
    std = grouped.std(ddof=1).fillna(0.0).add_suffix("_std")
    out = pd.concat([mean, std], axis=1)
    return out[[c for col in columns for c in (col, f"{col}_std")]]


def _with_paper(table: pd.DataFrame, paper_table: str, metric: str,
                columns: Sequence[str], labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Add ``<column>_paper`` from the paper's table (NaN where it has no value); ``labels``
    maps a row to the paper's label where they differ."""
    numbers = paper_numbers.table("D", paper_table)
    out = table.copy()
    labels = labels or {}
    for column in columns:
        task, name = ("", "params") if column == "params" else (column, metric)
        values = {}
        for row in out.index:
            label = labels.get(row, row)
            hit = numbers[(numbers["row"] == label) & (numbers["metric"] == name)
                          & (numbers["task"].fillna("") == task)]
            values[row] = float(hit["value"].iloc[0]) if len(hit) else np.nan
        out[f"{column}_paper"] = pd.Series(values)
    return out


def delta_table(runs: pd.DataFrame, kind: str, paper_table: str,
                rows: Sequence[str] | None = None,
                labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Tables 2, 3 and 4: Δ per task, Δ_T and relative parameters, mean ± std over seeds, with
    the paper's values.

    Args:
        runs: :func:`runs_frame`.
        kind: the scenario.
        paper_table: e.g. ``"Table 2"``.
        rows: the rows to show, in order (default: every row).
        labels: row -> the paper's label, where they differ.
    """
    frame = deltas(runs, kind)
    tasks = [c for c in frame.columns if c not in ("row", "seed", "all", "params")]
    table = summarise(frame, [*tasks, "all", "params"])
    if rows is not None:
        table = table.loc[[r for r in rows if r in table.index]]
    paper = _with_paper(table, paper_table, "delta", [*tasks, "all", "params"], labels)
    return paper.rename(columns=lambda c: c.replace("all", "delta_T", 1)
                        if c.startswith("all") else c)


def absolute_table(runs: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Tables 11–13's layout: every paper metric of every task, mean over seeds, and the
    parameters relative to the shared bottom."""
    part = runs[runs["kind"] == kind]
    rows = []
    for r in part.itertuples():
        label = SINGLE_TASK if r.network == "single" else r.row
        for task in r.tasks:
            for metric in PAPER_METRICS[kind][task]:
                rows.append({"row": label, "seed": r.seed, "task": task, "metric": metric,
                             "value": r.test[task][metric]})
    frame = pd.DataFrame(rows)
    wide = frame.pivot_table(index="row", columns=["task", "metric"], values="value",
                             aggfunc="mean", sort=False)
    wide = wide.loc[[r for r in main_rows(runs, kind) if r in wide.index]]
    params = deltas(runs, kind).groupby("row", sort=False)["params"].mean()
    wide[("", "params")] = params
    return wide


def searched(runs: pd.DataFrame, row: str, kind: str = "nyu") -> pd.DataFrame:
    """The records of one searched row of a scenario, one per seed."""
    return runs[(runs["kind"] == kind) & (runs["row"] == row)]


def graphs(record: Any) -> dict[str, nx.DiGraph]:
    """Task -> the finalised sub-network graph of a record (nodes ``0`` input, ``1…N``
    states, ``N+1`` read-out)."""
    return {t: nx.node_link_graph(data, edges="edges") for t, data in record.topology.items()}


def topology_table(runs: pd.DataFrame, row: str) -> pd.DataFrame:
    """Table 5: per task, depth D, width W and sparsity S of the finalised sub-networks of
    ``row``, mean ± std over seeds, with the paper's (NYU-v2, M = 7)."""
    rows = []
    for r in searched(runs, row).itertuples():
        for task, graph in graphs(r).items():
            metrics = dag.topology_metrics(graph, int(r.search_edges))
            rows.append({"row": task, "seed": r.seed, **{k: metrics[k] for k in TOPOLOGY}})
    table = summarise(pd.DataFrame(rows), list(TOPOLOGY))
    numbers = paper_numbers.table("D", "Table 5")
    names = {"depth": "graph_depth", "width": "graph_width", "sparsity": "edge_sparsity"}
    for column, metric in names.items():
        table[f"{column}_paper"] = [
            _paper_value(numbers, task, metric) for task in table.index
        ]
    return table


def _paper_value(numbers: pd.DataFrame, task: str, metric: str) -> float:
    hit = numbers[(numbers["task"] == task) & (numbers["metric"] == metric)]
    return float(hit["value"].iloc[0]) if len(hit) else np.nan


def skip_lengths(runs: pd.DataFrame, row: str) -> pd.DataFrame:
    """§4.3's long skips: per seed, the hidden-state edges of the union of the task
    sub-networks by length ``j − i``, against the search space's (``available``)."""
    rows = []
    for r in searched(runs, row).itertuples():
        used = set()
        for graph in graphs(r).values():
            n = graph.number_of_nodes() - 2
            used |= {(i, j) for i, j in graph.edges if 1 <= i and j <= n}
        for length in range(1, (int(r.flow) if pd.notna(r.flow) else n - 1) + 1):
            kept = sum(1 for i, j in used if j - i == length)
            available = n - length
            rows.append({"seed": r.seed, "length": length, "kept": kept,
                         "available": available, "share": kept / available})
    return pd.DataFrame(rows)


def flow_curve(runs: pd.DataFrame, config: Any) -> pd.DataFrame:
    """Fig. 4: per flow constant (and the complete DAG), Δ_T, its degradation against the
    complete DAG (percentage points of Δ_T, per seed), and the finalised and search-space
    parameters relative to the shared bottom; mean ± std over seeds."""
    frame = deltas(runs, "nyu")
    shared = runs[(runs["kind"] == "nyu") & (runs["row"] == SHARED_BOTTOM)].set_index("seed")
    complete = frame[frame["row"] == "Ours (complete DAG)"].set_index("seed")["all"]
    rows = []
    for flow in [*sorted(config.flows), None]:
        label = "Ours (complete DAG)" if flow is None else f"Ours (M={flow})"
        for r in searched(runs, label).itertuples():
            delta = frame[(frame["row"] == label) & (frame["seed"] == r.seed)]["all"].iloc[0]
            rows.append({
                "row": label,
                "flow": config.n_states - 1 if flow is None else flow,
                "seed": r.seed,
                "delta_T": delta,
                "degradation": complete[r.seed] - delta,
                "params": r.parameters / shared.loc[r.seed, "parameters"],
                "search_params": r.search_parameters / shared.loc[r.seed, "parameters"],
            })
    frame = pd.DataFrame(rows)
    table = summarise(frame, ["flow", "delta_T", "degradation", "params", "search_params"])
    return table.drop(columns="flow_std")


def reduction_table(runs: pd.DataFrame, config: Any) -> pd.DataFrame:
    """Fig. 5: flow-based, random and threshold reduction of the same searched network at the
    same number of edges: Δ_T and its degradation against the non-reduced network (w/o
    flow-based reduction), mean ± std over seeds."""
    frame = deltas(runs, "nyu")
    ours = f"Ours (M={config.topology_flow})"
    full = frame[frame["row"] == "w/o flow-based reduction"].set_index("seed")["all"]
    rows = []
    for label, method in ((ours, "flow-based"), ("random reduction", "random"),
                          ("threshold reduction", "threshold")):
        for r in frame[frame["row"] == label].itertuples():
            rows.append({"row": method, "seed": r.seed, "delta_T": r.all,
                         "degradation": full[r.seed] - r.all})
    return summarise(pd.DataFrame(rows), ["delta_T", "degradation"])


def ablation_table(runs: pd.DataFrame, config: Any) -> pd.DataFrame:
    """Table 6: the key components (NYU-v2-like, M = ``topology_flow``)."""
    ours = f"Ours (M={config.topology_flow})"
    rows = [ours, "Ours (complete DAG)", "w/o read-in/out", "w/o flow-based reduction",
            "w/o L_sq"]
    labels = {ours: "Ours (M=7)", "Ours (complete DAG)": "w/o flow-restriction"}
    table = delta_table(runs, "nyu", "Table 6", rows, labels)
    return table.rename(index={"Ours (complete DAG)": "w/o flow-restriction"})


def stage_table(runs: pd.DataFrame, config: Any) -> pd.DataFrame:
    """Table 10: the three stages; Δ against the three-stage network (as the paper's table,
    whose first row is 0), per seed, mean ± std."""
    ours = f"Ours (M={config.topology_flow})"
    labels = {ours: "with three-stages", "w/o warm-up": "w/o warm-up",
              "w/o search + FBR": "w/o search + FBR", "w/o fine-tune": "w/o fine-tune"}
    part = runs[runs["kind"] == "nyu"]
    tasks = scenario_tasks(runs, "nyu")
    shared = part[part["row"] == SHARED_BOTTOM].set_index("seed")["parameters"]
    rows = []
    for seed in sorted(part["seed"].unique()):
        reference_row = part[(part["row"] == ours) & (part["seed"] == seed)].iloc[0]
        reference = _scores(reference_row.test, "nyu", tasks)
        for row, label in labels.items():
            hit = part[(part["row"] == row) & (part["seed"] == seed)]
            if not len(hit):
                continue
            r = hit.iloc[0]
            delta = relative(_scores(r.test, "nyu", tasks), reference)
            rows.append({"row": label, "seed": seed, **delta,
                         "params": r.parameters / shared[seed]})
    table = summarise(pd.DataFrame(rows), [*tasks, "all", "params"])
    paper = _with_paper(table, "Table 10", "delta", [*tasks, "all", "params"])
    return paper.rename(columns=lambda c: c.replace("all", "delta_T", 1)
                        if c.startswith("all") else c)


def main_rows(runs: pd.DataFrame, kind: str) -> list[str]:
    """The rows of Tables 2 and 3 present in the runs: the baselines, then ours by flow
    constant and the complete DAG (the ablations have their own tables)."""
    part = runs[runs["kind"] == kind]
    flows = sorted(
        {int(r.flow) for r in part.itertuples() if r.network == "dag" and pd.notna(r.flow)
         and r.row.startswith("Ours")}
    )
    rows = [SINGLE_TASK, SHARED_BOTTOM, "Cross-Stitch", "MTAN", *(f"Ours (M={f})" for f in flows)]
    if (part["row"] == "Ours (complete DAG)").any():
        rows.append("Ours (complete DAG)")
    return rows


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").replace("--", "-")


def export_graphs(runs: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write every searched network's task sub-networks as networkx node-link JSON,
    ``<out_dir>/graphs/<scenario>-<row>-seed<seed>/<task>.json`` (nodes ``0`` input, ``1…N``
    hidden states, ``N+1`` read-out); returns the files written."""
    written = []
    for r in runs[runs["network"] == "dag"].itertuples():
        folder = Path(out_dir) / "graphs" / f"{r.kind}-{_slug(r.row)}-seed{r.seed}"
        for task, graph in graphs(r).items():
            written.append(dag.export_graph(graph, folder / f"{task}.json"))
    return written


LATENCY_BATCH_SIZES: tuple[int, ...] = (1, 16)
"""Batch sizes of the latency measurements."""
LATENCY_ROUNDS = 3
"""Interleaved rounds over the networks; the fastest of each is kept (a passing load slows one
network, not another)."""


def topology_of(graph: nx.DiGraph) -> dag.TaskTopology:
    """The binary topology (Â, Γ̂, B̂) of an exported task graph."""
    nodes = sorted(graph.nodes)
    psi = nx.to_numpy_array(graph, nodelist=nodes, weight=None)
    return dag.TaskTopology.from_psi(psi)


def finalised_network(record: Any, config: Any) -> dag.DAGNetwork:
    """A record's finalised multi-task network (untrained weights: for size and latency),
    built from its exported topologies and pruned to the edges some task uses."""
    setting = units.Setting(record.row, record.kind, "dag", tuple(record.tasks), _flow(record))
    specs = units.split(config, "test", record.kind, setting.tasks).task_specs
    model = dag.DAGNetwork(units.network_config(config, setting), specs)
    model.finalise({task: topology_of(g) for task, g in graphs(record).items()})
    model.prune_unused()
    return model


def _flow(record: Any) -> int | None:
    return int(record.flow) if pd.notna(record.flow) else None


DEPLOYED: tuple[str, ...] = ("finalised", SHARED_BOTTOM)
"""The networks :func:`latency_table` also times in their inference form (``<name>, inference
form``: :func:`mtlrepro.inference.export`, BatchNorm folded, the standard memory format)."""


def latency_table(runs: pd.DataFrame, config: Any) -> pd.DataFrame:
    """Parameters, multiply-accumulates and CPU latency (ms; batch 1 and 16) of ours at
    ``topology_flow`` as finalised (first seed), its search space, and the shared bottom, and
    of the finalised network and the shared bottom in their inference form (:data:`DEPLOYED`)."""
    record = searched(runs, units.ours(config.topology_flow)).iloc[0]
    tasks = tuple(record.tasks)
    test_set = units.split(config, "test", record.kind, tasks)
    specs = test_set.task_specs
    shape = (1, *test_set[0]["image"].shape)
    setting = units.Setting(record.row, record.kind, "dag", tasks, _flow(record))
    seed_everything(0)
    networks = {
        "finalised": finalised_network(record, config),
        "search space": dag.DAGNetwork(units.network_config(config, setting), specs),
        SHARED_BOTTOM: units.build_network(
            units.Setting(SHARED_BOTTOM, record.kind, "shared_bottom", tasks), specs, config
        ),
    }
    example = torch.rand(shape)
    for name in DEPLOYED:  # as deployed: mtlrepro.inference's BatchNorm-folded form
        networks[f"{name}, inference form"] = export(
            networks[name], example, memory_format="contiguous"
        )
    rows = {name: {"parameters": count_parameters(net), "macs": conv_flops(net, shape)}
            for name, net in networks.items()}
    for batch in LATENCY_BATCH_SIZES:
        for _ in range(LATENCY_ROUNDS):
            for name, net in networks.items():
                ms = 1000 * latency(net, (batch, *shape[1:]), repeats=config.latency_repeats)
                key = f"latency_b{batch}_ms"
                rows[name][key] = min(rows[name].get(key, ms), ms)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "network"
    return table


def summary_metrics(table1: pd.DataFrame, delta_tables: Mapping[str, pd.DataFrame],
                    table5: pd.DataFrame, latency_frame: pd.DataFrame) -> dict[str, Any]:
    """The run's headline numbers for ``metrics.json`` (``dvc metrics show``): accuracy and
    relative parameters of Table 1, Δ_T and relative parameters of every row of Tables 2–4
    (``delta_tables``: paper table -> table), the topology of Table 5, and the finalised
    network's latency against the shared bottom's."""
    return {
        "table1": {row: {"accuracy": r["accuracy"], "params": r["params"]}
                   for row, r in table1.iterrows()},
        **{name.lower().replace(" ", ""): {
            row: {"delta_T": r["delta_T"], "params": r["params"]} for row, r in table.iterrows()
        } for name, table in delta_tables.items()},
        "table5": {task: {m: r[m] for m in TOPOLOGY} for task, r in table5.iterrows()},
        "latency_b1_ms": latency_frame["latency_b1_ms"].to_dict(),
    }


def accuracy_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 1 per seed: each glyphs row's test accuracy averaged over the alphabets (%) and its
    parameters relative to the shared bottom; the single-task row averages the single-task
    networks and sums their parameters."""
    part = runs[runs["kind"] == "glyphs"]
    rows = []
    for seed, seed_runs in part.groupby("seed"):
        shared = seed_runs.loc[seed_runs["row"] == SHARED_BOTTOM, "parameters"].iloc[0]
        singles = seed_runs[seed_runs["network"] == "single"]
        rows.append({
            "row": SINGLE_TASK, "seed": seed,
            "accuracy": float(np.mean([r.test[r.tasks[0]]["accuracy"]
                                       for r in singles.itertuples()])),
            "params": singles["parameters"].sum() / shared,
        })
        for r in seed_runs[seed_runs["network"] != "single"].itertuples():
            rows.append({
                "row": r.row, "seed": seed,
                "accuracy": float(np.mean([r.test[t]["accuracy"] for t in r.tasks])),
                "params": r.parameters / shared,
            })
    return pd.DataFrame(rows)


def accuracy_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 1: mean accuracy over the alphabets (%) and parameters relative to the shared
    bottom, mean ± std over seeds, with the paper's (Omniglot)."""
    table = summarise(accuracy_frame(runs), ["accuracy", "params"])
    ours = sorted((r for r in table.index if r.startswith("Ours")),
                  key=lambda r: int(r.split("=")[1].rstrip(")")))
    table = table.loc[[SINGLE_TASK, SHARED_BOTTOM, *ours]]
    numbers = paper_numbers.table("D", "Table 1")
    for column, (task, metric) in {"accuracy": ("all", "accuracy"),
                                   "params": ("", "params")}.items():
        table[f"{column}_paper"] = [
            float(hit["value"].iloc[0]) if len(hit := numbers[
                (numbers["row"] == row) & (numbers["task"] == task)
                & (numbers["metric"] == metric)]) else np.nan
            for row in table.index
        ]
    return table
