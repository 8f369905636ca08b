"""Paper B's experiments: Tables 1-3, Fig. 3 (a)-(d), the sparsity heatmaps and claims B1-B5.

R. Upadhyay et al., "Less is More -- Towards parsimonious multi-task models using structured
sparsity".  The networks are trained by :mod:`mtlrepro.experiments.group_sparsity.units` (one
independent run unit per kind, dataset, λ and seed); this module turns
:func:`~mtlrepro.experiments.group_sparsity.units.run_study`'s frame into the paper's tables and
figure data, times the slimmed backbones and decides the claims.

**Choices:** paper B's metrics -- segmentation IoU (``miou``, in %, not a fraction), normal
cosine similarity, depth MAE (``abs_err``), attribute accuracy (%); runs are compared by the
relative performance Δ over these metrics (paper D, Eq. 10-11); the "before training" heatmap is
the freshly initialised backbone (no zero group); latency is measured on a fresh backbone with a
run's zero groups, physically slimmed (its speed depends on its shape, not on weight values).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.std import tqdm

from mtlrepro.compress import conv_flops, latency, parameter_count, slim
from mtlrepro.config import ConfigError
from mtlrepro.data import get_dataset
from mtlrepro.experiments.group_sparsity.units import (
    ABLATION_VARIANTS,
    AUTHORS_VARIANT,
    DATASET_TASKS,
    SparsityStudyConfig,
    combinations,
    lambda_label,
)
from mtlrepro.inference import export
from mtlrepro.methods.group_sparsity import zero_group_mask, zero_groups_
from mtlrepro.metrics import LOWER_IS_BETTER, relative_performance
from mtlrepro.models import create_model
from mtlrepro.train import seed_everything

PAPER_TABLE: dict[str, str] = {
    "scenes": "Table 1",
    "nyuv2": "Table 1",
    "faces": "Table 2",
    "celebamask": "Table 2",
}
"""Dataset -> the paper table its combinations reproduce."""
PAPER_METRIC: dict[str, str] = {
    "segmentation": "miou",
    "depth": "abs_err",
    "normal": "cosine",
    "male": "accuracy",
    "smile": "accuracy",
}
"""Task -> the one metric paper B reports for it."""
LATENCY_BATCH_SIZES: tuple[int, ...] = (1, 16)
"""Batch sizes at which Fig. 3 (d) times the slimmed backbone."""
LATENCY_ROUNDS = 5
"""Fig. 3 (d) times every backbone in this many interleaved rounds and keeps the fastest."""


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
def _scores(run: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Paper B's metric of each task of a run: task -> {metric: value}."""
    return {t: {PAPER_METRIC[t]: run["test"][t][PAPER_METRIC[t]]} for t in run["tasks"]}


def _mean_std(values: pd.Series) -> tuple[float, float]:
    """Mean and sample std (0 for one value) of a series."""
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std


def combination_table(runs: pd.DataFrame, kind: str, dataset: str) -> pd.DataFrame:
    """Tables 1-3: per combination and λ, mean and std over seeds of each task's metric and of
    the group and parameter sparsity.

    Args:
        runs: :func:`~mtlrepro.experiments.group_sparsity.units.run_study`'s frame.
        kind: the unit kind (``table`` for Tables 1-2, ``l1`` for Table 3).
        dataset: the dataset.

    Returns:
        Columns ``tasks``, ``lambda``, ``seeds``, then ``<task> <metric>`` and ``... std`` for
        every task of the dataset (NaN where the combination lacks the task), and
        ``group_sparsity``, ``param_sparsity`` with their std.
    """
    part = runs[(runs["kind"] == kind) & (runs["dataset"] == dataset)]
    if part.empty:
        raise ConfigError(f"no {kind} runs for dataset {dataset!r}")
    rows = []
    for combo in dict.fromkeys(part["combo"]):
        for lam in sorted(part.loc[part["combo"] == combo, "lam"].unique()):
            group = part[(part["combo"] == combo) & (part["lam"] == lam)]
            row: dict[str, Any] = {"tasks": combo, "lambda": lam, "seeds": len(group)}
            for task in DATASET_TASKS[dataset]:
                metric = PAPER_METRIC[task]
                values = pd.Series(
                    [test[task][metric] for test in group["test"] if task in test], dtype=float
                )
                mean, std = _mean_std(values) if len(values) else (math.nan, math.nan)
                row[f"{task} {metric}"], row[f"{task} {metric} std"] = mean, std
            for column in ("group_sparsity", "param_sparsity"):
                row[column], row[f"{column} std"] = _mean_std(group[column])
            rows.append(row)
    return pd.DataFrame(rows)


def sweep_runs(runs: pd.DataFrame, config: SparsityStudyConfig) -> pd.DataFrame:
    """The all-task runs of ``sweep_dataset`` at every λ of Fig. 3 (table and sweep units).

    Args:
        runs: :func:`~mtlrepro.experiments.group_sparsity.units.run_study`'s frame.
        config: the study settings.
    """
    full = "+".join(DATASET_TASKS[config.sweep_dataset])
    mask = (
        runs["kind"].isin(["table", "sweep"])
        & (runs["dataset"] == config.sweep_dataset)
        & (runs["combo"] == full)
    )
    return runs[mask].sort_values(["lam", "seed"]).reset_index(drop=True)


def performance_vs_lambda(runs: pd.DataFrame, config: SparsityStudyConfig) -> pd.DataFrame:
    """Fig. 3 (a): each task's metric per λ and seed (tidy: lam, seed, task, metric, value).

    Args:
        runs: :func:`~mtlrepro.experiments.group_sparsity.units.run_study`'s frame.
        config: the study settings.
    """
    rows = [
        {"lam": run["lam"], "seed": run["seed"], "task": task, "metric": metric, "value": value}
        for _, run in sweep_runs(runs, config).iterrows()
        for task, scores in _scores(run).items()
        for metric, value in scores.items()
    ]
    return pd.DataFrame(rows)


def sparsity_vs_lambda(runs: pd.DataFrame, config: SparsityStudyConfig) -> pd.DataFrame:
    """Fig. 3 (b): final % group and parameter sparsity per λ and seed.

    Args:
        runs: :func:`~mtlrepro.experiments.group_sparsity.units.run_study`'s frame.
        config: the study settings.
    """
    columns = ["lam", "seed", "group_sparsity", "param_sparsity"]
    return sweep_runs(runs, config)[columns].reset_index(drop=True)


def sparsity_over_training(runs: pd.DataFrame, config: SparsityStudyConfig) -> pd.DataFrame:
    """Fig. 3 (c): % group and parameter sparsity per epoch (0 = initialisation), λ and seed.

    Args:
        runs: :func:`~mtlrepro.experiments.group_sparsity.units.run_study`'s frame.
        config: the study settings.
    """
    rows = [
        {"lam": run["lam"], "seed": run["seed"], **point}
        for _, run in sweep_runs(runs, config).iterrows()
        for point in run["history"]
    ]
    return pd.DataFrame(rows)


def relative_to(
    scores: Mapping[str, Mapping[str, float]], reference: Mapping[str, Mapping[str, float]]
) -> float:
    """Δ (%) of ``scores`` against ``reference`` over paper B's metrics (paper D, Eq. 10-11).

    Args:
        scores: task -> {metric: value}.
        reference: the same tasks' reference values.
    """
    return relative_performance(scores, reference, LOWER_IS_BETTER)["all"]


def _mean_scores(group: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Seed-mean of paper B's metric of each task over a group of runs of one combination."""
    per_run = [_scores(run) for _, run in group.iterrows()]
    return {
        task: {
            metric: float(np.mean([s[task][metric] for s in per_run]))
            for metric in per_run[0][task]
        }
        for task in per_run[0]
    }


def relative_table(runs: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Δ (%) of every (combination, λ) of the table runs against two references.

    ``vs_dense``: against the same combination at λ = 0 (does sparsity help?);
    ``vs_single``: against each task's single-task network at λ = 0 (negative transfer).

    Args:
        runs: :func:`~mtlrepro.experiments.group_sparsity.units.run_study`'s frame.
        dataset: the dataset.
    """
    part = runs[(runs["kind"] == "table") & (runs["dataset"] == dataset)]
    dense = part[part["lam"] == 0]
    single = {
        combo[0]: _mean_scores(dense[dense["combo"] == combo[0]])
        for combo in combinations(DATASET_TASKS[dataset])[: len(DATASET_TASKS[dataset])]
    }
    rows = []
    for (combo, lam), group in part.groupby(["combo", "lam"], sort=False):
        scores = _mean_scores(group)
        reference = _mean_scores(dense[dense["combo"] == combo])
        singles = {task: single[task][task] for task in scores}
        rows.append(
            {
                "tasks": combo,
                "lambda": lam,
                "multi_task": len(scores) > 1,
                "group_sparsity": float(group["group_sparsity"].mean()),
                "param_sparsity": float(group["param_sparsity"].mean()),
                "vs_dense": relative_to(scores, reference),
                "vs_single": relative_to(scores, singles),
            }
        )
    return pd.DataFrame(rows)


def seed_scores(
    runs: pd.DataFrame, kind: str, dataset: str, combo: str, lam: float
) -> dict[int, dict[str, dict[str, float]]]:
    """Paper B's metric of each task per seed, of one combination's runs at one λ.

    Args:
        runs: :func:`~mtlrepro.experiments.group_sparsity.units.run_study`'s frame.
        kind: the unit kind.
        dataset: the dataset.
        combo: the combination (task names joined by ``+``).
        lam: the λ.

    Returns:
        Seed -> task -> {metric: value}.
    """
    part = runs[
        (runs["kind"] == kind)
        & (runs["dataset"] == dataset)
        & (runs["combo"] == combo)
        & (runs["lam"] == lam)
    ]
    return {int(run["seed"]): _scores(run) for _, run in part.iterrows()}


def single_task_scores(runs: pd.DataFrame, dataset: str) -> dict[int, dict[str, dict[str, float]]]:
    """Per seed, each task's metric of its dense single-task network (table runs, λ = 0).

    Args:
        runs: :func:`~mtlrepro.experiments.group_sparsity.units.run_study`'s frame.
        dataset: the dataset.
    """
    out: dict[int, dict[str, dict[str, float]]] = {}
    for task in DATASET_TASKS[dataset]:
        for seed, scores in seed_scores(runs, "table", dataset, task, 0.0).items():
            out.setdefault(seed, {})[task] = scores[task]
    return out


def seed_deltas(
    scores: Mapping[int, Mapping[str, Mapping[str, float]]],
    reference: Mapping[int, Mapping[str, Mapping[str, float]]],
) -> list[float]:
    """Δ (%) of ``scores`` against ``reference`` seed by seed, over the seeds both have (both
    networks of a seed share the data order), on the tasks of ``scores``.

    Args:
        scores: seed -> task -> {metric: value}.
        reference: the same for the reference (it may hold more tasks).
    """
    return [
        relative_to(scores[seed], {task: reference[seed][task] for task in scores[seed]})
        for seed in sorted(set(scores) & set(reference))
    ]


def ablation_table(runs: pd.DataFrame, config: SparsityStudyConfig) -> pd.DataFrame:
    """The optimiser ablation: the all-task network at ``ablation_lambda`` with each of the
    authors' settings undone (:data:`~mtlrepro.experiments.group_sparsity.units.ABLATION_VARIANTS`).

    Args:
        runs: :func:`~mtlrepro.experiments.group_sparsity.units.run_study`'s frame.
        config: the study settings.

    Returns:
        One row per variant: ``variant``, ``seeds``, ``group_sparsity`` and ``param_sparsity``
        (%, mean and std over seeds), each task's metric (mean), and ``delta_vs_authors``: Δ (%)
        of the variant's network against the authors'-settings network of the same seed,
        mean and std over seeds.
    """
    part = runs[runs["kind"] == "ablation"]
    if part.empty:
        raise ConfigError("no ablation runs")
    reference = {
        run["seed"]: _scores(run)
        for _, run in part[part["variant"] == AUTHORS_VARIANT].iterrows()
    }
    rows = []
    for variant, group in part.groupby("variant", sort=False):
        deltas = pd.Series(
            [relative_to(_scores(run), reference[run["seed"]]) for _, run in group.iterrows()]
        )
        row: dict[str, Any] = {"variant": variant, "seeds": len(group)}
        for column in ("group_sparsity", "param_sparsity"):
            row[column], row[f"{column} std"] = _mean_std(group[column])
        for task, scores in _mean_scores(group).items():
            for metric, value in scores.items():
                row[f"{task} {metric}"] = value
        row["delta_vs_authors"], row["delta_vs_authors std"] = _mean_std(deltas)
        rows.append(row)
    order = {label: k for k, label in enumerate(ABLATION_VARIANTS)}
    return pd.DataFrame(rows).sort_values("variant", key=lambda v: v.map(order), ignore_index=True)


# --------------------------------------------------------------------------------------------
# Heatmaps and latency
# --------------------------------------------------------------------------------------------
def _mask(text: str) -> np.ndarray:
    """A stored zero-group string as a bool array (True = zero group)."""
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8) == ord("1")


def _shown_runs(
    runs: pd.DataFrame, dataset: str, lam: float, seed: int
) -> dict[tuple[str, ...], pd.Series]:
    """The table runs the heatmaps show: each single-task network, then the all-task one, at
    ``lam`` and ``seed``; a missing one raises :class:`~mtlrepro.config.ConfigError`."""
    part = runs[
        (runs["kind"] == "table")
        & (runs["dataset"] == dataset)
        & (runs["lam"] == lam)
        & (runs["seed"] == seed)
    ]
    tasks = DATASET_TASKS[dataset]
    shown = {}
    for combo in [*((t,) for t in tasks), tasks]:
        name = "+".join(combo)
        match = part[part["combo"] == name]
        if match.empty:
            raise ConfigError(f"no {name} run for {dataset!r} at λ={lam} and seed {seed}")
        shown[combo] = match.iloc[0]
    return shown


def heatmap_panels(
    runs: pd.DataFrame, config: SparsityStudyConfig, dataset: str, lam: float, seed: int
) -> dict[str, dict[str, np.ndarray]]:
    """The sparsity heatmaps' panels: the initial backbone, each single-task network and the
    all-task network at ``lam`` (paper B, Fig. 3 heatmaps).

    Args:
        runs: :func:`~mtlrepro.experiments.group_sparsity.units.run_study`'s frame.
        config: the study settings (its profile's preset builds the initial backbone).
        dataset: the dataset.
        lam: the λ shown.
        seed: the seed shown.

    Returns:
        Panel title -> layer name -> bool array over input channels (True = zero group).
    """
    tasks = DATASET_TASKS[dataset]
    specs = get_dataset(dataset, "val", config.profile, tasks=tasks).task_specs
    seed_everything(seed)
    initial = create_model("deeplab_resnet", specs, profile=config.profile).backbone
    panels = {"before training": {k: v.numpy() for k, v in zero_group_mask(initial).items()}}
    for combo, run in _shown_runs(runs, dataset, lam, seed).items():
        title = f"{combo[0]} (single-task)" if len(combo) == 1 else "all tasks (multi-task)"
        panels[title] = {name: _mask(text) for name, text in run["zero_groups"].items()}
    return panels


def layer_sparsity_table(runs: pd.DataFrame, dataset: str, lam: float, seed: int) -> pd.DataFrame:
    """Per backbone conv layer, % zero groups and % zero weights of each single-task network
    and of the all-task network at ``lam`` (the numbers behind the heatmaps).

    Args:
        runs: :func:`~mtlrepro.experiments.group_sparsity.units.run_study`'s frame.
        dataset: the dataset.
        lam: the λ shown.
        seed: the seed shown.

    Returns:
        One row per layer (input to output); columns ``<tasks> groups`` and ``<tasks> params``.
    """
    columns: dict[str, pd.Series] = {}
    for combo, run in _shown_runs(runs, dataset, lam, seed).items():
        name = "+".join(combo)
        stats = pd.DataFrame(run["layer_sparsity"]).T
        columns[f"{name} groups"] = stats["group_sparsity"]
        columns[f"{name} params"] = stats["param_sparsity"]
    return pd.DataFrame(columns).rename_axis("layer").reset_index()


def latency_vs_lambda(
    runs: pd.DataFrame,
    config: SparsityStudyConfig,
    *,
    batch_sizes: Sequence[int] = LATENCY_BATCH_SIZES,
    progress: bool = True,
) -> pd.DataFrame:
    """Fig. 3 (d): inference time and FLOPs of the *slimmed* backbone per λ and seed.

    The zero groups a run ended with are applied to a fresh backbone of the same architecture,
    which :func:`mtlrepro.compress.slim` then turns into a smaller dense network (the values of
    the weights do not change its speed, only its shape), served in its inference form
    (:func:`mtlrepro.inference.export`: BatchNorm folded; the dense backbone too), in the
    standard memory format for all (``auto`` chooses per network on a noisy timing, which made
    the λ differ by their layouts rather than their widths).  Timed on the CPU, and on CUDA
    when present, at each batch size; at the dataset's image size.  Every backbone is timed in
    :data:`LATENCY_ROUNDS` rounds (forward order, then backward, ...) and keeps its fastest
    median, so a transient slowdown of the machine, or the process's first timings, do not
    land on one λ.

    Args:
        runs: :func:`~mtlrepro.experiments.group_sparsity.units.run_study`'s frame.
        config: the study settings (``latency_repeats``; the profile's model and image size).
        batch_sizes: batch sizes to time.
        progress: show a progress bar.

    Returns:
        Columns ``start`` (the runs' start; every start of ``runs`` is timed in the same
        interleaved rounds), ``lam``, ``seed``, ``device``, ``batch_size``, ``latency_ms``,
        ``flops`` (multiply-accumulates per image), ``parameters``, ``group_sparsity``.
    """
    sweep = sweep_runs(runs, config)
    data = get_dataset(config.sweep_dataset, "val", config.profile)
    height, width = data.image_size
    model = create_model("deeplab_resnet", data.task_specs, profile=config.profile)
    devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    rows = []
    for _, run in sweep.iterrows():
        masks = {name: torch.from_numpy(_mask(text)) for name, text in run["zero_groups"].items()}
        slimmed = slim(zero_groups_(copy.deepcopy(model.backbone), masks))
        rows.append(
            {
                "lam": run["lam"],
                "start": run["start"],
                "seed": run["seed"],
                "flops": conv_flops(slimmed, (1, 3, height, width)),
                "parameters": parameter_count(slimmed),
                "group_sparsity": run["group_sparsity"],
                "backbone": slimmed,
            }
        )
    settings = [(device, batch) for device in devices for batch in batch_sizes]
    served = {
        (i, batch): export(
            row["backbone"], torch.randn(batch, 3, height, width), memory_format="contiguous"
        )
        for i, row in enumerate(rows)
        for batch in batch_sizes
    }
    best = np.full((len(rows), len(settings)), np.inf)
    order = list(range(len(rows)))
    bar = tqdm(total=LATENCY_ROUNDS * len(rows), desc="latency", disable=not progress)
    with bar:
        for round_ in range(LATENCY_ROUNDS):
            for i in order if round_ % 2 == 0 else order[::-1]:
                for j, (device, batch) in enumerate(settings):
                    seconds = latency(
                        served[i, batch],
                        (batch, 3, height, width),
                        config.latency_repeats,
                        device,
                    )
                    best[i, j] = min(best[i, j], 1000.0 * seconds)
                bar.update()
    return pd.DataFrame(
        [
            {
                **{k: v for k, v in row.items() if k != "backbone"},
                "device": device,
                "batch_size": batch,
                "latency_ms": best[i, j],
            }
            for i, row in enumerate(rows)
            for j, (device, batch) in enumerate(settings)
        ]
    )


def latency_summary(latencies: pd.DataFrame) -> pd.DataFrame:
    """Fig. 3 (d) per λ, device and batch size: mean latency over seeds, its std, the ratio to
    the dense (λ = 0) backbone, mean FLOPs and parameters, mean group sparsity.

    Args:
        latencies: :func:`latency_vs_lambda`'s frame.
    """
    grouped = latencies.groupby(["device", "batch_size", "lam"], sort=True)
    table = grouped.agg(
        latency_ms=("latency_ms", "mean"),
        latency_std_ms=("latency_ms", lambda s: s.std(ddof=1) if len(s) > 1 else math.nan),
        flops=("flops", "mean"),
        parameters=("parameters", "mean"),
        group_sparsity=("group_sparsity", "mean"),
    ).reset_index()
    dense = table[table["lam"] == 0].set_index(["device", "batch_size"])["latency_ms"]
    keys = pd.MultiIndex.from_frame(table[["device", "batch_size"]])
    table["latency_ratio"] = table["latency_ms"].to_numpy() / dense.reindex(keys).to_numpy()
    table["flops_ratio"] = table["flops"] / float(table.loc[table["lam"] == 0, "flops"].iloc[0])
    return table


def summary_metrics(
    runs: pd.DataFrame, latencies: pd.DataFrame, config: SparsityStudyConfig
) -> dict[str, Any]:
    """Nested numbers for ``metrics.json``: per dataset the all-task network's metrics and
    sparsity per λ, and the latency ratios of Fig. 3 (d).

    Args:
        runs: :func:`~mtlrepro.experiments.group_sparsity.units.run_study`'s frame.
        latencies: :func:`latency_vs_lambda`'s frame.
        config: the study settings.
    """
    out: dict[str, Any] = {"profile": config.profile}
    for dataset in config.datasets:
        table = relative_table(runs, dataset)
        full = table[table["tasks"] == "+".join(DATASET_TASKS[dataset])]
        out[dataset] = {
            lambda_label(row["lambda"]): {
                "group_sparsity": row["group_sparsity"],
                "param_sparsity": row["param_sparsity"],
                "delta_vs_dense": row["vs_dense"],
                "delta_vs_single": row["vs_single"],
            }
            for _, row in full.iterrows()
        }
    cpu = latency_summary(latencies)
    cpu = cpu[cpu["device"] == "cpu"]
    out["latency_ratio"] = {
        f"batch{batch}": {
            lambda_label(lam): ratio
            for lam, ratio in zip(part["lam"], part["latency_ratio"], strict=True)
        }
        for batch, part in cpu.groupby("batch_size")
    }
    return out
