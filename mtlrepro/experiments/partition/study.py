"""Paper E's tables from the unit records (:mod:`mtlrepro.experiments.partition.units`).

* :func:`correlation_table` -- Table 1: per task, the Pearson correlation with the final
  validation accuracy of the distillation score and of the accuracy after each short budget,
  over the fully trained random partitions; mean and std over the search seeds.
* :func:`cost_table` -- the CPU cost of scoring one partition each way (Table 1's premise:
  distillation "takes a fraction of the time").
* :func:`accuracy_table` -- Table 2: per-task test accuracy (%) and the total (mean over
  tasks) of each partition, mean and std over seeds.
* :func:`benchmark_table` -- the MILP against the sampler (App. A.1).
* :func:`export_partitions` -- every found partition as ``<name>_P.csv`` / ``<name>_M.csv``.

A column ``<column>_paper`` holds the paper's value where it has one: at the smoke and cpu
profiles an embedded domain is compared with the Visual Decathlon domain it stands for
(:data:`~mtlrepro.data.decathlon.DECATHLON_DOMAINS`), so the paper's numbers are a reference
for the pattern, not a target.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from mtlrepro import paper_numbers
from mtlrepro.compress import conv_flops
from mtlrepro.data.decathlon import DECATHLON_DOMAINS
from mtlrepro.experiments.partition import units
from mtlrepro.experiments.partition.units import PartitionStudyConfig
from mtlrepro.inference import export, interleaved_medians
from mtlrepro.methods import partition as part
from mtlrepro.methods import partition_net as pnet
from mtlrepro.methods.partition_export import task_network
from mtlrepro.models import count_parameters
from mtlrepro.train import seed_everything

DISTILL = "dist"
"""Table 1's column of the distillation score (the paper's label)."""
TOTAL = "total"
"""Table 2's total column: the mean over the tasks (the paper's "Total")."""


SHARE_ALL = units.TABLE2_ROWS["share_all"]
"""Table 2's share-all row."""


def runs_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per record (teacher, scored partition, trained partition); fields a record does
    not have are NaN."""
    return pd.DataFrame(list(records))


def of_kind(runs: pd.DataFrame, kind: str, job: str | None = None) -> pd.DataFrame:
    """The records of one unit kind (and one search job: ``random``, ``diagonal``, ``es``,
    ``es_final``), with a fresh index."""
    rows = runs[runs["kind"] == kind]
    if job is not None:
        rows = rows[rows["job"] == job]
    return rows.reset_index(drop=True)


def tasks_of(runs: pd.DataFrame) -> tuple[str, ...]:
    """The study's tasks, in mask column order (the teachers' order)."""
    return tuple(dict.fromkeys(of_kind(runs, "teachers")["task"]))


def teacher_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The teachers' validation accuracy (%): one row per task (in task order), one column
    per search seed (``seed <n>``)."""
    table = of_kind(runs, "teachers").pivot_table(index="task", columns="seed",
                                                  values="val_accuracy")
    table = table.reindex(list(tasks_of(runs)))
    table.columns = [f"seed {seed}" for seed in table.columns]
    table.index.name = "task"
    return table


def paper_task(task: str) -> str:
    """The paper's name of a task: the Visual Decathlon domain an embedded one stands for."""
    return DECATHLON_DOMAINS[task].stands_for if task in DECATHLON_DOMAINS else task


def short_label(epochs: int | str) -> str:
    """Table 1's column of a short budget."""
    return f"{epochs} epochs"


def correlation(x: Sequence[float], y: Sequence[float], method: str = "pearson") -> float:
    """Pearson's r or Spearman's ρ (``method``; scipy's, ties at average ranks), NaN when
    either side is constant or has fewer than 2 values."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    test = {"pearson": stats.pearsonr, "spearman": stats.spearmanr}[method]
    return float(test(x, y).statistic)


def correlation_frame(runs: pd.DataFrame, config: PartitionStudyConfig) -> pd.DataFrame:
    """Per search seed and task: the correlation of each proxy with the final validation
    accuracy over the fully trained random partitions (columns :func:`short_label` of each
    budget and :data:`DISTILL`), and ``partitions``."""
    final = str(config.epochs)
    rows = []
    for seed, trained in of_kind(runs, "table1").groupby("seed"):
        scored = of_kind(runs, "search", "random")
        scored = scored[scored["seed"] == seed].set_index("index")
        trained = trained.set_index("index").sort_index()
        for task in tasks_of(runs):
            target = [r[final][task] for r in trained["val"]]
            row: dict[str, Any] = {"seed": seed, "task": task, "partitions": len(trained)}
            for budget in config.short_epochs:
                row[short_label(budget)] = correlation(
                    [r[str(budget)][task] for r in trained["val"]], target)
            row[DISTILL] = correlation(
                [scored.at[i, "task_scores"][task] for i in trained.index], target)
            rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(frame: pd.DataFrame, by: str, columns: Sequence[str]) -> pd.DataFrame:
    """Mean and sample std (``<column>_std``, 0 for one value) of ``columns`` per ``by``."""
    grouped = frame.groupby(by, sort=False)[list(columns)]
    std = grouped.std(ddof=1).fillna(0.0).add_suffix("_std")
    out = pd.concat([grouped.mean(), std], axis=1)
    return out[[c for col in columns for c in (col, f"{col}_std")]]


def correlation_table(runs: pd.DataFrame, config: PartitionStudyConfig) -> pd.DataFrame:
    """Table 1: per task, the correlation of each proxy with the final validation accuracy,
    mean and std over search seeds (no std for one seed), the paper's value beside it, and a
    ``mean`` row."""
    frame = correlation_frame(runs, config)
    columns = [*(short_label(b) for b in config.short_epochs), DISTILL]
    mean_row = frame.groupby("seed")[columns].mean().reset_index().assign(task="mean")
    table = _mean_std(pd.concat([frame, mean_row], ignore_index=True), "task", columns)
    if frame["seed"].nunique() == 1:  # one search seed: no spread to show
        table = table[columns]
    numbers = paper_numbers.table("E", "Table 1")
    paper_columns = dict(zip(columns, ("5k iters", "10k iters", DISTILL), strict=True))
    for column, label in paper_columns.items():
        values = numbers[numbers["row"] == label].set_index("task")["value"]
        paper = {t: values.get(paper_task(t), np.nan) for t in table.index if t != "mean"}
        paper["mean"] = float(values.mean())
        table[f"{column}_paper"] = pd.Series(paper)
    table.index.name = "task"
    return table


def cost_table(runs: pd.DataFrame, config: PartitionStudyConfig) -> pd.DataFrame:
    """CPU seconds (one thread) to score one partition: distillation (mean over the random
    partitions), each short training and the full training (mean over Table 1's), and each
    one's ratio to the distillation."""
    distill = float(of_kind(runs, "search", "random")["cpu_seconds"].mean())
    trained = of_kind(runs, "table1")
    rows = [{"evaluation": "distillation", "cpu_seconds": distill}]
    for budget in (*config.short_epochs, config.epochs):
        label = "full training" if budget == config.epochs else f"training {short_label(budget)}"
        seconds = float(np.mean([r[str(budget)] for r in trained["cpu_seconds"]]))
        rows.append({"evaluation": label, "cpu_seconds": seconds})
    table = pd.DataFrame(rows).set_index("evaluation")
    table["relative_to_distillation"] = table["cpu_seconds"] / distill
    return table


def fig3_frame(runs: pd.DataFrame, config: PartitionStudyConfig) -> pd.DataFrame:
    """Fig. 3's points: per trained random partition and task, the distillation score and the
    final validation accuracy (%)."""
    final = str(config.epochs)
    scored = of_kind(runs, "search", "random").set_index(["seed", "index"])
    rows = []
    for r in of_kind(runs, "table1").itertuples():
        for task in tasks_of(runs):
            rows.append({"seed": r.seed, "index": r.index, "task": task,
                         "score": scored.at[(r.seed, r.index), "task_scores"][task],
                         "accuracy": r.val[final][task]})
    return pd.DataFrame(rows)


def task_channels_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Fig. 5's points: per random partition and task, the channels allocated to the task
    (``P̃_tt`` as a share), its distillation score and the partition's average use."""
    rows = []
    for r in of_kind(runs, "search", "random").itertuples():
        for k, task in enumerate(tasks_of(runs)):
            rows.append({"seed": r.seed, "index": r.index, "task": task,
                         "share": r.P[k][k], "score": r.task_scores[task],
                         "average_use": r.average_use})
    return pd.DataFrame(rows)


def sharing_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Fig. 4 middle's points: per fixed diagonal and sharing, the mean pairwise overlap of
    ``P̃`` (share of the channels) and the score."""
    frame = of_kind(runs, "search", "diagonal")
    overlap = [float(np.asarray(P)[np.triu_indices(len(P), 1)].mean()) for P in frame["P"]]
    return frame.assign(overlap=overlap)[["seed", "diagonal", "overlap", "score", "average_use"]]


def sharing_spread(runs: pd.DataFrame, by_task: bool = False) -> pd.DataFrame:
    """Per seed and fixed diagonal (and task, if ``by_task``: the task's own score): the range
    (max − min) and std of the scores over the sharings, and the best score (E3)."""
    frame = sharing_frame(runs)
    keys = ["seed", "diagonal"]
    if by_task:
        diagonal = of_kind(runs, "search", "diagonal")
        frame = pd.DataFrame([
            {"seed": r.seed, "diagonal": r.diagonal, "task": task, "score": score}
            for r in diagonal.itertuples() for task, score in r.task_scores.items()
        ])
        keys.append("task")
    grouped = frame.groupby(keys)["score"]
    return pd.DataFrame({"range": grouped.max() - grouped.min(), "std": grouped.std(ddof=0),
                         "best": grouped.max()}).reset_index()


def found_partitions(runs: pd.DataFrame) -> pd.DataFrame:
    """Every ES run's final partition (seed, penalty, ``P``, score, average use, channels)."""
    return of_kind(runs, "search", "es_final")


def table2_row_order(config: PartitionStudyConfig) -> list[str]:
    """Table 2's rows in the paper's order."""
    return [units.es_row(config.table2_penalty) if key == "es" else label
            for key, label in units.TABLE2_ROWS.items()]


def accuracy_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Per Table 2 run (row, seed): test accuracy per task (%), the total (mean over tasks)
    and the average channel use (mean diag ``P̃``)."""
    rows = []
    for r in of_kind(runs, "table2").itertuples():
        accuracy = dict(r.test)
        rows.append({"row": r.row, "seed": r.seed, **accuracy,
                     TOTAL: float(np.mean(list(accuracy.values()))),
                     "average_use": r.average_use})
    return pd.DataFrame(rows)


def accuracy_table(runs: pd.DataFrame, config: PartitionStudyConfig) -> pd.DataFrame:
    """Table 2: per partition, per-task test accuracy and the total, mean and std over seeds,
    with the paper's value (``<column>_paper``; its "Total" for ours' total) and ``seeds``."""
    frame = accuracy_frame(runs)
    tasks = tasks_of(runs)
    columns = [*tasks, TOTAL, "average_use"]
    table = _mean_std(frame, "row", columns).reindex(table2_row_order(config))
    numbers = paper_numbers.table("E", "Table 2")
    for column in [*tasks, TOTAL]:
        task = "all" if column == TOTAL else paper_task(column)
        values = {}
        for row in table.index:
            hit = numbers[(numbers["row"] == row) & (numbers["task"] == task)]
            values[row] = float(hit["value"].iloc[0]) if len(hit) else np.nan
        table[f"{column}_paper"] = pd.Series(values)
    table["seeds"] = frame.groupby("row")["seed"].nunique()
    table.index.name = "partition"
    return table


def benchmark_table(config: PartitionStudyConfig, seed: int = 0) -> pd.DataFrame:
    """The MILP (both formulations) against the sampler on one random ``P̃`` per channel and
    task count (App. A.1): seconds, status and how closely each mask meets ``P̃``."""
    rows = []
    for c in config.benchmark_channels:
        for n in config.benchmark_tasks:
            result = part.benchmark_masks(c, n, seed, time_limit=config.benchmark_time_limit,
                                          draws=config.mask_draws)
            for method in ("milp_channels", "milp_patterns", "sampler"):
                entry = result[method]
                error = entry.get("error", {})
                rows.append({
                    "channels": c, "tasks": n, "method": method,
                    "seconds": entry.get("seconds", np.nan), "status": entry["status"],
                    "total_error_channels": error.get("total_channels", np.nan),
                    "max_error_share": error.get("max_abs", np.nan),
                })
    return pd.DataFrame(rows)


def _slug(value: float) -> str:
    return f"{value:g}".replace(".", "p").replace("-", "m")


def export_partitions(
    runs: pd.DataFrame, config: PartitionStudyConfig, out_dir: str | Path
) -> list[Path]:
    """Write every found partition -- each ES run's final ``P̃`` (``es-wd<λ>-seed<s>``), the
    best random sample of each seed (``random-best-seed<s>``) and Table 2's baselines -- as
    ``<name>_P.csv`` and ``<name>_M.csv`` (the mask the runs used) under
    ``<out_dir>/partitions/``."""
    tasks = tasks_of(runs)
    folder = Path(out_dir) / "partitions"
    found: list[tuple[str, np.ndarray, int]] = []
    for r in found_partitions(runs).itertuples():
        found.append((f"es-wd{_slug(r.penalty)}-seed{r.seed}", np.asarray(r.P), r.seed))
    for seed, group in of_kind(runs, "search", "random").groupby("seed"):
        best = group.loc[group["score"].idxmax()]
        found.append((f"random-best-seed{seed}", np.asarray(best["P"]), seed))
    for key in units.TABLE2_ROWS:
        if key != "es":
            found.append((key, part.baseline_partition(key, len(tasks)), config.seeds[0]))
    paths = []
    for name, P_tilde, seed in found:
        masks = units.derive_masks(P_tilde, config, seed)
        paths += part.write_partition(P_tilde, masks, tasks, folder, name)
    return paths


def table2_masks(runs: pd.DataFrame, config: PartitionStudyConfig) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """The ES partition Table 2 trains: its ``P̃`` and mask (for the heatmaps)."""
    found = found_partitions(runs)
    r = found[(found["seed"] == config.search_seeds[0])
              & (found["penalty"] == config.table2_penalty)].iloc[0]
    P_tilde = np.asarray(r["P"])
    return P_tilde, units.derive_masks(P_tilde, config, int(r["seed"]))


DEPLOYMENT_BATCH_SIZES: tuple[int, ...] = (1, 16)
"""Batch sizes of :func:`deployment_table`'s latencies."""
DEPLOYMENT_ROUNDS = 7
"""Interleaved timing rounds of :func:`deployment_table` (medians)."""


def deployment_table(config: PartitionStudyConfig, masks: np.ndarray) -> pd.DataFrame:
    """Each task's path as deployed (:func:`~mtlrepro.methods.partition_export.task_network`
    in :func:`~mtlrepro.inference.export`'s form) under ``masks``, beside the same path with
    every channel (the network before partitioning): parameters, multiply-accumulates and CPU
    latency (ms, medians of interleaved calls, batch 1 and 16; latency does not depend on the
    weights, so the networks are untrained).

    Args:
        config: the study settings (data sizes, profile).
        masks: the forward masks, 0/1 ``channels × tasks`` (e.g. :func:`table2_masks`').
    """
    test_set = units.split(config, "test")
    image = test_set[0]["image"]
    seed_everything(0)
    full = pnet.create_partition_resnet(test_set.task_specs, config.profile).eval()
    partitioned = copy.deepcopy(full)
    partitioned.set_masks(masks)
    example = image.unsqueeze(0)
    rows = []
    for t, task in enumerate(full.task_names):
        paths = {"partitioned": task_network(partitioned, task),
                 "unpartitioned": task_network(full, task)}
        nets = {form: export(path, example, memory_format="contiguous")
                for form, path in paths.items()}
        row: dict[str, Any] = {"task": task, "channels": int(np.asarray(masks)[:, t].sum()),
                               "of_channels": full.partition_channels}
        for form, net in nets.items():
            row[f"parameters_{form}"] = count_parameters(net)
            # the path's convolutions, which the deployed form calls as functions (no hooks)
            row[f"macs_{form}"] = conv_flops(paths[form], tuple(example.shape))
        for batch in DEPLOYMENT_BATCH_SIZES:
            images = torch.rand(batch, *image.shape)
            times = interleaved_medians(
                {form: (lambda n=net, x=images: n(x)) for form, net in nets.items()},
                DEPLOYMENT_ROUNDS,
            )
            for form, seconds in times.items():
                row[f"latency_b{batch}_ms_{form}"] = 1e3 * seconds
            row[f"speedup_b{batch}"] = times["unpartitioned"] / times["partitioned"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("task")


def summary_metrics(config: PartitionStudyConfig, table1: pd.DataFrame, costs: pd.DataFrame,
                    table2: pd.DataFrame) -> dict[str, Any]:
    """The headline numbers for ``metrics.json``, with what they come from (profile, data,
    seeds)."""
    short = [short_label(b) for b in config.short_epochs]
    return {
        "profile": config.profile,
        "dataset": units.DATASETS[config.profile],
        "seeds": list(config.seeds),
        "search_seeds": list(config.search_seeds),
        "table1_mean_correlation": {c: float(table1.at["mean", c]) for c in [*short, DISTILL]},
        "cost_cpu_seconds": costs["cpu_seconds"].to_dict(),
        "cost_short_over_distillation": {
            row: float(costs.at[row, "relative_to_distillation"])
            for row in costs.index if row != "distillation"
        },
        "table2_total": table2[TOTAL].to_dict(),
        "table2_average_use": table2["average_use"].to_dict(),
    }
