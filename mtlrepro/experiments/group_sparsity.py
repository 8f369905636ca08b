"""Paper B's experiments: Tables 1-3, Fig. 3 (a)-(d), the sparsity heatmaps and claims B1-B5.

R. Upadhyay et al., "Less is More -- Towards parsimonious multi-task models using structured
sparsity".  The networks are trained by :mod:`mtlrepro.experiments.group_sparsity_runs` (one
independent run unit per kind, dataset, λ and seed); this module turns
:func:`~mtlrepro.experiments.group_sparsity_runs.run_study`'s frame into the paper's tables and
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

from mtlrepro import paper_numbers
from mtlrepro.compress import conv_flops, latency, parameter_count, slim
from mtlrepro.config import ConfigError
from mtlrepro.data import get_dataset
from mtlrepro.experiments.group_sparsity_runs import (
    DATASET_TASKS,
    SparsityStudyConfig,
    combinations,
    lambda_label,
)
from mtlrepro.methods.group_sparsity import zero_group_mask, zero_groups_
from mtlrepro.metrics import LOWER_IS_BETTER, relative_performance
from mtlrepro.models import create_model
from mtlrepro.report import Claim, make_claim
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
B1_TARGET_SPARSITY = 70.0
"""B1 compares a multi-task model at about this % group sparsity with its dense version."""
MATCH_TOLERANCE = 1.0
"""B1: "match" = relative performance Δ of at least -1 % against the dense model."""
B4_GROUP_SPARSITY_MAX = 10.0
"""B4: "little group sparsity" = at most 10 % zero groups."""
B4_PARAM_SPARSITY_MIN = 50.0
"""B4: "similar parameter sparsity" = at least 50 % zero parameters, as the group lasso's."""
LATENCY_BATCH_SIZES: tuple[int, ...] = (1, 16)
"""Batch sizes at which Fig. 3 (d) times the slimmed backbone."""
LATENCY_ROUNDS = 3
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
        runs: :func:`run_study`'s frame.
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
        runs: :func:`run_study`'s frame.
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
        runs: :func:`run_study`'s frame.
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
        runs: :func:`run_study`'s frame.
        config: the study settings.
    """
    columns = ["lam", "seed", "group_sparsity", "param_sparsity"]
    return sweep_runs(runs, config)[columns].reset_index(drop=True)


def sparsity_over_training(runs: pd.DataFrame, config: SparsityStudyConfig) -> pd.DataFrame:
    """Fig. 3 (c): % group and parameter sparsity per epoch (0 = initialisation), λ and seed.

    Args:
        runs: :func:`run_study`'s frame.
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
        runs: :func:`run_study`'s frame.
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
    runs: pd.DataFrame, dataset: str, lam: float, seed: int, profile: str
) -> dict[str, dict[str, np.ndarray]]:
    """The sparsity heatmaps' panels: the initial backbone, each single-task network and the
    all-task network at ``lam`` (paper B, Fig. 3 heatmaps).

    Args:
        runs: :func:`run_study`'s frame.
        dataset: the dataset.
        lam: the λ shown.
        seed: the seed shown.
        profile: the profile (the initial backbone is built from its preset).

    Returns:
        Panel title -> layer name -> bool array over input channels (True = zero group).
    """
    tasks = DATASET_TASKS[dataset]
    specs = get_dataset(dataset, "val", profile, tasks=tasks).task_specs
    seed_everything(seed)
    initial = create_model("deeplab_resnet", specs, profile=profile).backbone
    panels = {"before training": {k: v.numpy() for k, v in zero_group_mask(initial).items()}}
    for combo, run in _shown_runs(runs, dataset, lam, seed).items():
        title = f"{combo[0]} (single-task)" if len(combo) == 1 else "all tasks (multi-task)"
        panels[title] = {name: _mask(text) for name, text in run["zero_groups"].items()}
    return panels


def layer_sparsity_table(runs: pd.DataFrame, dataset: str, lam: float, seed: int) -> pd.DataFrame:
    """Per backbone conv layer, % zero groups and % zero weights of each single-task network
    and of the all-task network at ``lam`` (the numbers behind the heatmaps).

    Args:
        runs: :func:`~mtlrepro.experiments.group_sparsity_runs.run_study`'s frame.
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
    profile: str,
    *,
    batch_sizes: Sequence[int] = LATENCY_BATCH_SIZES,
    progress: bool = True,
) -> pd.DataFrame:
    """Fig. 3 (d): inference time and FLOPs of the *slimmed* backbone per λ and seed.

    The zero groups a run ended with are applied to a fresh backbone of the same architecture,
    which :func:`mtlrepro.compress.slim` then turns into a smaller dense network (the values of
    the weights do not change its speed, only its shape).  Timed on the CPU, and on CUDA when
    present, at each batch size; at the dataset's image size.  Every backbone is timed in
    :data:`LATENCY_ROUNDS` rounds (forward order, then backward, ...) and keeps its fastest
    median, so a transient slowdown of the machine, or the process's first timings, do not
    land on one λ.

    Args:
        runs: :func:`run_study`'s frame.
        config: the study settings (``latency_repeats``).
        profile: the profile (model preset and image size).
        batch_sizes: batch sizes to time.
        progress: show a progress bar.

    Returns:
        Columns ``lam``, ``seed``, ``device``, ``batch_size``, ``latency_ms``, ``flops``
        (multiply-accumulates per image), ``parameters``, ``group_sparsity``.
    """
    sweep = sweep_runs(runs, config)
    data = get_dataset(config.sweep_dataset, "val", profile)
    height, width = data.image_size
    model = create_model("deeplab_resnet", data.task_specs, profile=profile)
    devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    rows = []
    for _, run in sweep.iterrows():
        masks = {name: torch.from_numpy(_mask(text)) for name, text in run["zero_groups"].items()}
        slimmed = slim(zero_groups_(copy.deepcopy(model.backbone), masks))
        rows.append(
            {
                "lam": run["lam"],
                "seed": run["seed"],
                "flops": conv_flops(slimmed, (1, 3, height, width)),
                "parameters": parameter_count(slimmed),
                "group_sparsity": run["group_sparsity"],
                "backbone": slimmed,
            }
        )
    settings = [(device, batch) for device in devices for batch in batch_sizes]
    best = np.full((len(rows), len(settings)), np.inf)
    order = list(range(len(rows)))
    bar = tqdm(total=LATENCY_ROUNDS * len(rows), desc="latency", disable=not progress)
    with bar:
        for round_ in range(LATENCY_ROUNDS):
            for i in order if round_ % 2 == 0 else order[::-1]:
                for j, (device, batch) in enumerate(settings):
                    seconds = latency(
                        rows[i]["backbone"],
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


# --------------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------------
def _paper_scores(table: str, row: str, tasks: Sequence[str]) -> dict[str, dict[str, float]]:
    """Paper B's printed metric of each task of one table row."""
    return {
        t: {PAPER_METRIC[t]: paper_numbers.value("B", table, row, t, PAPER_METRIC[t])}
        for t in tasks
    }


PAPER_NYU_ROWS: dict[str, str] = {
    "segmentation": "Semantic Segmentation",
    "depth": "Depth estimation",
    "normal": "Surface normal estimation",
    "all": "segmentation + surface normal + depth estimation",
}
"""Our NYU-v2 combination -> the row label of paper B's Table 1."""
PAPER_LAMBDAS: tuple[str, ...] = ("lambda=0", "lambda_1", "lambda_2")
"""Paper B's Table 1 λ columns (their values were lost in the text extraction)."""


def _paper_nyu(row: str, lam: str) -> dict[str, dict[str, float]]:
    """Paper B's Table 1 scores of one row (``lam``: ``"lambda=0"``, ``"lambda_1"``, ...)."""
    tasks = DATASET_TASKS["nyuv2"] if row == "all" else (row,)
    return _paper_scores("Table 1", f"{PAPER_NYU_ROWS[row]} ({lam})", tasks)


def _paper_nyu_sparsity(lam: str) -> float:
    """Paper B's % group sparsity of the NYU-v2 all-task network at one of its λ."""
    row = f"{PAPER_NYU_ROWS['all']} ({lam})"
    return paper_numbers.value("B", "Table 1", row, "", "group_sparsity")


def _paper_speedups() -> str:
    """Paper B's Fig. 3 (d) text: inference time saved at two group sparsities."""
    fig = paper_numbers.table("B", "Figure 3(d)")
    parts = []
    for row in dict.fromkeys(fig["row"]):
        sparsity = paper_numbers.value("B", "Figure 3(d)", row, "", "group_sparsity")
        saved = paper_numbers.value("B", "Figure 3(d)", row, "", "inference_time_reduction")
        parts.append(f"-{saved:.2f} ms at ~{sparsity:.0f} %")
    return " and ".join(parts) + " group sparsity (NYU-v2 backbone)"


def claims(
    runs: pd.DataFrame, latencies: pd.DataFrame, config: SparsityStudyConfig, profile: str
) -> list[Claim]:
    """Claims B1-B5 of paper B, each verdict computed from our numbers.

    Args:
        runs: :func:`run_study`'s frame.
        latencies: :func:`latency_vs_lambda`'s frame.
        config: the study settings.
        profile: the profile.
    """
    datasets = ", ".join(config.datasets)
    common = {"profile": profile}
    relative = {d: relative_table(runs, d) for d in config.datasets}

    # B1: multi-task models at ~70 % group sparsity match or beat their dense versions.
    b1_rows = []
    for dataset, table in relative.items():
        sparse = table[table["multi_task"] & (table["lambda"] > 0)]
        for combo, group in sparse.groupby("tasks", sort=False):
            near = group.iloc[(group["group_sparsity"] - B1_TARGET_SPARSITY).abs().argmin()]
            b1_rows.append((dataset, combo, near["group_sparsity"], near["vs_dense"]))
    b1_ok = [bool(delta >= -MATCH_TOLERANCE) for *_, delta in b1_rows]
    reached = min(s for _, _, s, _ in b1_rows)
    paper_b1 = relative_to(_paper_nyu("all", "lambda_2"), _paper_nyu("all", "lambda=0"))
    b1 = make_claim(
        "B1",
        "Multi-task models at ~70 % group sparsity match or beat their dense counterparts",
        f"NYU-v2 all tasks at {_paper_nyu_sparsity('lambda_2'):.1f} % group sparsity: Δ vs "
        f"dense {paper_b1:+.1f} %",
        f"{sum(b1_ok)} of {len(b1_ok)} multi-task combinations have Δ >= -{MATCH_TOLERANCE} % "
        f"(sparsity of the compared models {reached:.1f}-"
        f"{max(s for _, _, s, _ in b1_rows):.1f} %)",
        bool(all(b1_ok) and reached >= B1_TARGET_SPARSITY / 2),
        dataset=datasets,
        **common,
        details=f"per multi-task combination, the sparse λ whose group sparsity is closest to "
        f"{B1_TARGET_SPARSITY:.0f} %; Δ (paper D Eq. 10-11) of paper B's metrics vs λ = 0; "
        f"every combination must be within -{MATCH_TOLERANCE} % and the least sparse of them "
        f"at least {B1_TARGET_SPARSITY / 2:.0f} % sparse",
    )

    # B2: sparsity grows with λ; performance first improves, then declines.
    sweep = sweep_runs(runs, config)
    by_lam = sweep.groupby("lam")
    sparsity = by_lam["group_sparsity"].mean()
    dense_scores = _mean_scores(sweep[sweep["lam"] == 0])
    perf = pd.Series({lam: relative_to(_mean_scores(g), dense_scores) for lam, g in by_lam})
    monotone = bool((sparsity.diff().dropna() >= -1e-9).all())
    peak = perf.idxmax()
    rises_then_falls = bool(
        perf[peak] > 0 and 0 < peak < perf.index.max() and perf.iloc[-1] < perf[peak]
    )
    b2 = make_claim(
        "B2",
        "Sparsity grows with λ; performance first improves, then declines",
        "group sparsity "
        + " -> ".join(f"{_paper_nyu_sparsity(lam):.1f}" for lam in PAPER_LAMBDAS)
        + " % (NYU-v2, all tasks); performance peaks at an intermediate λ",
        "group sparsity "
        + " -> ".join(f"{s:.1f}" for s in sparsity)
        + " %; Δ vs dense "
        + " / ".join(f"{p:+.1f}" for p in perf)
        + " % at λ = "
        + ", ".join(lambda_label(lam) for lam in perf.index),
        bool(monotone and rises_then_falls),
        dataset=config.sweep_dataset,
        **common,
        details="mean over seeds of the all-task network; sparsity non-decreasing in λ, and the "
        "best Δ is > 0 at a λ strictly between 0 and the largest, which is worse",
    )

    # B3: inference time falls as sparsity grows (physically slimmed backbone).
    summary = latency_summary(latencies)
    cpu16 = summary[
        (summary["device"] == "cpu") & (summary["batch_size"] == max(LATENCY_BATCH_SIZES))
    ].set_index("lam")
    densest = cpu16["group_sparsity"].idxmax()
    correlation = cpu16["group_sparsity"].corr(cpu16["latency_ms"], method="spearman")
    b3 = make_claim(
        "B3",
        "Inference time of the (slimmed) backbone falls as sparsity grows",
        _paper_speedups(),
        f"at {cpu16.loc[densest, 'group_sparsity']:.1f} % group sparsity the slimmed backbone "
        f"takes {cpu16.loc[densest, 'latency_ratio']:.2f}x the dense time (batch "
        f"{max(LATENCY_BATCH_SIZES)}, CPU); Spearman(sparsity, time) = {correlation:+.2f}",
        bool(cpu16.loc[densest, "latency_ratio"] < 0.95 and correlation < 0),
        dataset=config.sweep_dataset,
        **common,
        details="CPU, batch 16, seed-mean; the sparsest model must be >= 5 % faster and time "
        "must fall with sparsity (negative rank correlation)",
    )

    # B4: L1 reaches similar parameter sparsity but little group sparsity.
    l1 = combination_table(runs, "l1", config.sweep_dataset)
    paper_l1 = paper_numbers.table("B", "Table 3")
    paper_l1_group = paper_l1.loc[paper_l1["metric"] == "group_sparsity", "value"]
    paper_l1_param = paper_l1.loc[paper_l1["metric"] == "param_sparsity", "value"]
    b4 = make_claim(
        "B4",
        "Unstructured L1 reaches similar parameter sparsity but little group sparsity",
        f"parameter sparsity {paper_l1_param.min():.1f}-{paper_l1_param.max():.1f} %, group "
        f"sparsity {paper_l1_group.min():.2f}-{paper_l1_group.max():.2f} %",
        f"parameter sparsity {l1['param_sparsity'].min():.1f}-"
        f"{l1['param_sparsity'].max():.1f} %, group sparsity "
        f"{l1['group_sparsity'].min():.2f}-{l1['group_sparsity'].max():.2f} %",
        bool(
            (l1["param_sparsity"] >= B4_PARAM_SPARSITY_MIN).all()
            and (l1["group_sparsity"] <= B4_GROUP_SPARSITY_MAX).all()
        ),
        dataset=config.sweep_dataset,
        **common,
        details=f"L1 prox at λ = {lambda_label(config.l1_lambda)} on every multi-task "
        f"combination: parameter sparsity >= {B4_PARAM_SPARSITY_MIN:.0f} % and group sparsity "
        f"<= {B4_GROUP_SPARSITY_MAX:.0f} %",
    )

    # B5: dense multi-task trails single-task; sparsity closes the gap.
    b5_parts, b5_ok = [], []
    for dataset, table in relative.items():
        full = table[table["tasks"] == "+".join(DATASET_TASKS[dataset])].set_index("lambda")
        dense_gap = full.loc[0.0, "vs_single"]
        best = full.drop(index=0.0)["vs_single"].max()
        b5_ok.append(bool(dense_gap < 0 and best > dense_gap))
        b5_parts.append(f"{dataset}: dense {dense_gap:+.1f} %, best sparse {best:+.1f} %")
    singles = {t: _paper_nyu(t, "lambda=0")[t] for t in DATASET_TASKS["nyuv2"]}
    paper_gap = relative_to(_paper_nyu("all", "lambda=0"), singles)
    paper_closed = relative_to(_paper_nyu("all", "lambda_2"), singles)
    b5 = make_claim(
        "B5",
        "Dense multi-task models trail single-task ones (negative transfer); sparsity closes "
        "the gap",
        f"NYU-v2 all tasks vs single-task: dense {paper_gap:+.1f} %, sparse {paper_closed:+.1f} %",
        "; ".join(b5_parts),
        bool(all(b5_ok)),
        dataset=datasets,
        **common,
        details="Δ of the all-task network vs the dense single-task networks; dense < 0 and the "
        "best sparse λ above the dense value, on every dataset",
    )
    return [b1, b2, b3, b4, b5]


def summary_metrics(
    runs: pd.DataFrame, latencies: pd.DataFrame, config: SparsityStudyConfig, profile: str
) -> dict[str, Any]:
    """Nested numbers for ``metrics.json``: per dataset the all-task network's metrics and
    sparsity per λ, and the latency ratios of Fig. 3 (d).

    Args:
        runs: :func:`run_study`'s frame.
        latencies: :func:`latency_vs_lambda`'s frame.
        config: the study settings.
        profile: the profile.
    """
    out: dict[str, Any] = {"profile": profile}
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
