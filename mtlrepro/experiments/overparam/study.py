"""Paper C's experiments: Tables 1 and 3, the contraction table, the figures' data.

S. Ren & H. Shi, "Learning Compact Neural Networks with Deep Overparameterised Multitask
Learning".  The networks are trained by :mod:`mtlrepro.experiments.overparam.units`; this
module turns their runs into the paper's tables, measures what contraction gives (parameters,
FLOPs, latency, the training-step price) and shapes the figures' data.

**Choices:** Table 3's Δ is paper D's Eq. 10-11 (:func:`~mtlrepro.metrics.relative_performance`)
over the nine metrics against the single-task networks of the same seed and width (SegNet-S
rows against SegNet-S single-task networks, all others against the SegNet ones); the
comparison with the paper's numbers uses Δ against the row's own multi-task baseline (the paper
prints no single-task NYU-v2 numbers): Baseline for the full-width SegNet rows and cross-stitch,
Baseline-S for the -S rows, MTAN Baseline for MTAN Fac, Baseline-DeepLabv3 for the DeepLab
rows.  Latency and step time are measured on freshly built networks (they depend on shapes,
not on weight values), in this process, one network after the other.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.std import tqdm

from mtlrepro import paper_numbers
from mtlrepro.balancing import create_balancer
from mtlrepro.compress import conv_flops, latency
from mtlrepro.experiments.overparam.units import (
    SINGLE_TASK_ROWS,
    TASKS,
    OverparamStudyConfig,
    Setting,
    build_network,
    settings,
    split,
    step_settings,
    training_hooks,
)
from mtlrepro.inference import export
from mtlrepro.methods.overparam import contract, forward_macs
from mtlrepro.metrics import make_meter
from mtlrepro.metrics import relative_where_defined as relative
from mtlrepro.models import count_parameters
from mtlrepro.tasks import make_tasks
from mtlrepro.train import iterate_batches, seed_everything, train_step

METRICS: dict[str, tuple[str, ...]] = {
    "segmentation": ("miou", "pixel_acc"),
    "depth": ("abs_err", "rel_err"),
    "normal": ("mean_angle", "median_angle", "within_11_25", "within_22_5", "within_30"),
}
"""Table 3's nine metrics, per task."""
TABLE3_ORDER: tuple[str, ...] = (
    "Baseline",
    "Cross stitch",
    "Fac",
    "Fac w/o iter",
    "uvshare",
    "mshare",
    "Baseline-S",
    "Cross stitch-S",
    "Fac-S",
    "Fac-S w/o iter",
    "MTAN Baseline",
    "MTAN Fac",
    "Baseline-DeepLabv3",
    "Fac-DeepLabv3 w/o iter",
    "Fac-DeepLabv3",
)
"""Table 3's rows in the paper's order."""
LATENCY_BATCH_SIZES: tuple[int, ...] = (1, 16)
"""Batch sizes of the contraction table's latencies."""
LATENCY_ROUNDS = 3
"""Each network is timed in this many interleaved rounds; the fastest is kept."""


def all_settings(config: OverparamStudyConfig) -> dict[str, Setting]:
    """Row label -> setting, for every network of the study."""
    return {s.row: s for kind in ("single", "multi") for s in settings(kind, config.deeplab)}


def runs_frame(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The runs as a frame, one row per trained network."""
    if not runs:
        raise ValueError("no runs: train the units first")
    return pd.DataFrame(list(runs))


def _scores(run: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Table 3's metrics of a run: task -> metric -> value."""
    return {t: {m: run["test"][t][m] for m in METRICS[t]} for t in run["tasks"]}


def _mean_std(values: pd.Series) -> tuple[float, float]:
    """Mean and sample std (0 for one value)."""
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


# --------------------------------------------------------------------------------------------
# Table 1
# --------------------------------------------------------------------------------------------
def majority_class(config: OverparamStudyConfig) -> dict[str, float]:
    """Test mIoU and pixel accuracy (%) of predicting the training split's most frequent class
    at every pixel: the chance level Table 1's numbers are read against.

    Args:
        config: the study settings (the data).
    """
    train = split(config, "train", ("segmentation",))
    test = split(config, "test", ("segmentation",))
    labels = _first(train, len(train))["segmentation"]
    majority = int(torch.bincount(labels[labels >= 0].flatten()).argmax())
    target = _first(test, len(test))["segmentation"]
    meter = make_meter("segmentation", train.task_specs["segmentation"].num_classes)
    meter.update(torch.full_like(target, majority), target)
    return meter.compute()


def table1(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 1: single-task segmentation, mIoU and pixel accuracy (%, mean and std over seeds)
    of every method, beside the paper's numbers.

    Args:
        runs: :func:`runs_frame` of the study.
    """
    part = runs[runs["table"] == "Table 1"]
    rows = []
    for row, group in part.groupby("row", sort=False):
        record: dict[str, Any] = {"row": row}
        for metric in ("miou", "pixel_acc"):
            values = group["test"].map(lambda t, m=metric: t["segmentation"][m])
            record[metric], record[f"{metric}_std"] = _mean_std(values)
            record[f"paper_{metric}"] = paper_numbers.value(
                "C", "Table 1", row, "segmentation", metric
            )
        record["seeds"] = len(group)
        rows.append(record)
    return pd.DataFrame(rows).set_index("row")


# --------------------------------------------------------------------------------------------
# Table 3 and Δ
# --------------------------------------------------------------------------------------------
def _single_task_reference(
    runs: pd.DataFrame, seed: int, small: bool
) -> dict[str, dict[str, float]]:
    """The single-task networks' metrics (one seed, one width): task -> metric -> value."""
    by_row = runs[runs["seed"] == seed].set_index("row")
    seg_row = "SegNet-S Baseline" if small else "SegNet Baseline"
    reference = {"segmentation": _scores(by_row.loc[seg_row])["segmentation"]}
    for task in ("depth", "normal"):
        reference[task] = _scores(by_row.loc[SINGLE_TASK_ROWS[(task, small)]])[task]
    return reference


def deltas(runs: pd.DataFrame, config: OverparamStudyConfig) -> pd.DataFrame:
    """Δ per Table 3 network and seed against the single-task networks of that seed and width.

    Args:
        runs: :func:`runs_frame` of the study.
        config: the study settings.

    Returns:
        One row per (row, seed): ``delta_<task>`` and ``delta_T`` (%, paper D Eq. 10-11).
    """
    known = all_settings(config)
    records = []
    for run in runs[runs["table"] == "Table 3"].itertuples():
        reference = _single_task_reference(runs, run.seed, known[run.row].small)
        delta = relative(_scores(run._asdict()), reference)
        records.append(
            {
                "row": run.row,
                "seed": run.seed,
                **{f"delta_{t}": delta[t] for t in TASKS},
                "delta_T": delta["all"],
            }
        )
    return pd.DataFrame(records)


def table3(runs: pd.DataFrame, config: OverparamStudyConfig) -> pd.DataFrame:
    """Table 3: the nine metrics (mean over seeds) of every multi-task network in the paper's
    row order, with Δ per task and Δ_T (mean) and Δ_T's std over seeds.

    Args:
        runs: :func:`runs_frame` of the study.
        config: the study settings.
    """
    part = runs[runs["table"] == "Table 3"]
    per_seed = deltas(runs, config)
    rows = []
    for row in [r for r in TABLE3_ORDER if r in set(part["row"])]:
        group = part[part["row"] == row]
        record: dict[str, Any] = {"row": row}
        for task, metrics in METRICS.items():
            for metric in metrics:
                record[metric] = float(
                    group["test"].map(lambda t, a=task, b=metric: t[a][b]).mean()
                )
        seeds = per_seed[per_seed["row"] == row]
        for column in (*(f"delta_{t}" for t in TASKS), "delta_T"):
            record[column] = float(seeds[column].mean())
        record["delta_T_std"] = _mean_std(seeds["delta_T"])[1]
        record["seeds"] = len(group)
        rows.append(record)
    return pd.DataFrame(rows).set_index("row")


def baseline_row(row: str) -> str:
    """The multi-task baseline a Table 3 row is compared with (module doc)."""
    if "DeepLab" in row:
        return "Baseline-DeepLabv3"
    if row.startswith("MTAN"):
        return "MTAN Baseline"
    return "Baseline-S" if row.endswith("-S") or "-S " in row else "Baseline"


def paper_scores(row: str) -> dict[str, dict[str, float]]:
    """The paper's Table 3 metrics of a row: task -> metric -> value."""
    return {
        task: {m: paper_numbers.value("C", "Table 3", row, task, m) for m in metrics}
        for task, metrics in METRICS.items()
    }


def paired_deltas(runs: pd.DataFrame, row: str, other: str) -> pd.DataFrame:
    """Δ (%) of Table 3 network ``row`` against network ``other`` of the same seed, per seed
    (both trained from the same seed: the same data order, and with spectral initialisation
    the same initial function).

    Args:
        runs: :func:`runs_frame` of the study.
        row: the network assessed.
        other: the network it is compared with.

    Returns:
        One row per seed present for both (index ``seed``), columns the tasks and ``all``.
    """
    part = runs[runs["table"] == "Table 3"].set_index(["row", "seed"])
    seeds = sorted(set(part.loc[row].index) & set(part.loc[other].index))
    return pd.DataFrame(
        [relative(_scores(part.loc[(row, s)]), _scores(part.loc[(other, s)])) for s in seeds],
        index=pd.Index(seeds, name="seed"),
    )


def versus_baseline(runs: pd.DataFrame) -> pd.DataFrame:
    """Δ_T (%) of every Table 3 row against its own multi-task baseline (:func:`baseline_row`),
    ours (mean and std over seeds, Δ per seed against the same seed's baseline) and the
    paper's, with Δ per task.

    Args:
        runs: :func:`runs_frame` of the study.
    """
    present = set(runs.loc[runs["table"] == "Table 3", "row"])
    records = []
    for row in [r for r in TABLE3_ORDER if r in present and baseline_row(r) in present]:
        base = baseline_row(row)
        if row == base:
            continue
        frame = paired_deltas(runs, row, base)
        paper = relative(paper_scores(row), paper_scores(base))
        record = {"row": row, "baseline": base}
        for task in (*TASKS, "all"):
            name = "T" if task == "all" else task
            record[f"delta_{name}"] = float(frame[task].mean())
            record[f"paper_delta_{name}"] = paper[task]
        record["delta_T_std"] = _mean_std(frame["all"])[1]
        records.append(record)
    return pd.DataFrame(records).set_index("row")


# --------------------------------------------------------------------------------------------
# Contraction: parameters, FLOPs, latency, the training-step price
# --------------------------------------------------------------------------------------------
def _first(dataset: Any, count: int) -> dict[str, torch.Tensor]:
    """The dataset's first ``count`` samples as one batch."""
    return next(iterate_batches(dataset, [torch.arange(min(count, len(dataset)))]))


def _step_seconds(
    model: torch.nn.Module,
    setting: Setting,
    specs: Any,
    train_set: Any,
    config: OverparamStudyConfig,
) -> float:
    """Median seconds of one training step (Alg. 1's step 1 included for factorised networks)
    on a fixed batch of the setting's batch size."""
    tasks = make_tasks(specs)
    hooks = training_hooks(setting, tasks, train_set, 0, config)
    excluded = {id(p) for hook in hooks for p in hook.excluded_parameters(model)}
    steps = step_settings(setting, config)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad and id(p) not in excluded],
        lr=steps["lr"],
    )
    balancer = create_balancer("equal", list(specs))
    batch = _first(train_set, steps["batch_size"])
    model.train()
    times = []
    for i in range(2 + config.step_repeats):
        start = time.perf_counter()
        train_step(model, tasks, batch, balancer, optimizer, hooks=hooks, step=i + 1)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


DEPLOYED_FORMS: tuple[str, ...] = ("contracted", "baseline")
"""The forms :func:`contraction_table` also times in their inference form (``<form>_inference``:
:func:`mtlrepro.inference.export`, BatchNorm folded, the standard memory format)."""


def contraction_table(
    runs: pd.DataFrame, config: OverparamStudyConfig, *, progress: bool = True
) -> pd.DataFrame:
    """For every over-parameterised network of the study: parameters, FLOPs (multiply-
    accumulates) and CPU latency (ms, batch 1 and 16) of the over-parameterised ("factorised"),
    contracted and baseline networks and of the last two in their inference form
    (:data:`DEPLOYED_FORMS`), the largest absolute output difference between the
    trained factorised and contracted networks (over seeds), and the training-step time of the
    factorised network relative to the baseline's.

    Args:
        runs: :func:`runs_frame` of the study.
        config: the study settings (sizes, repeats, threads).
        progress: show a progress bar.
    """
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    known = all_settings(config)
    rows = [r for r in dict.fromkeys(runs["row"]) if known[r].contractible]
    records = []
    for row in tqdm(rows, desc="contraction", disable=not progress):
        setting = known[row]
        baseline_setting = Setting(
            setting.table, "baseline", setting.model, setting.small, setting.tasks
        )
        train_set = split(config, "train", setting.tasks)
        specs = train_set.task_specs
        image = _first(train_set, 1)["image"]
        seed_everything(0)
        networks = {
            "baseline": build_network(baseline_setting, specs, config),
            "factorised": build_network(setting, specs, config),
        }
        networks["contracted"] = contract(copy.deepcopy(networks["factorised"]))
        for form in DEPLOYED_FORMS:  # as deployed: mtlrepro.inference's BatchNorm-folded form
            networks[f"{form}_inference"] = export(
                networks[form], image, memory_format="contiguous"
            )
        shape = tuple(image.shape)
        gaps = runs.loc[runs["row"] == row, "contraction_gap"]
        record: dict[str, Any] = {
            "row": row,
            "method": setting.method,
            "variant": setting.variant or "",
        }
        for form, net in networks.items():
            record[f"parameters_{form}"] = count_parameters(net)
        record["flops_factorised"] = forward_macs(networks["factorised"], shape)
        record["flops_contracted"] = conv_flops(networks["contracted"], shape)
        record["flops_baseline"] = conv_flops(networks["baseline"], shape)
        for batch in LATENCY_BATCH_SIZES:
            # interleaved rounds, the fastest kept: a passing load slows one form, not another
            for _ in range(LATENCY_ROUNDS):
                for form, net in networks.items():
                    ms = 1000 * latency(net, (batch, *shape[1:]), repeats=config.latency_repeats)
                    key = f"latency_b{batch}_ms_{form}"
                    record[key] = min(record.get(key, ms), ms)
        record["max_abs_diff"] = float(np.max(gaps.to_numpy(dtype=float)))
        factorised_step = _step_seconds(networks["factorised"], setting, specs, train_set, config)
        baseline_step = _step_seconds(
            networks["baseline"], baseline_setting, specs, train_set, config
        )
        record["train_step_ratio"] = factorised_step / baseline_step
        records.append(record)
    return pd.DataFrame(records).set_index("row")


# --------------------------------------------------------------------------------------------
# Figures' data and summary
# --------------------------------------------------------------------------------------------
def training_curves(runs: pd.DataFrame, rows: Sequence[str]) -> pd.DataFrame:
    """Per-epoch training loss of each task: mean and std over seeds, for the given rows.

    Args:
        runs: :func:`runs_frame` of the study.
        rows: the networks to show (e.g. Baseline, Fac, Fac w/o iter).

    Returns:
        Columns ``row``, ``task``, ``epoch``, ``mean``, ``std``.
    """
    records = [
        {"row": run.row, "seed": run.seed, **point}
        for run in runs[runs["row"].isin(rows)].itertuples()
        for point in run.history
        if point["task"] in TASKS
    ]
    if not records:
        raise ValueError(f"no runs of rows {list(rows)}")
    frame = pd.DataFrame(records)
    stats = frame.groupby(["row", "task", "epoch"], sort=False)["loss"].agg(["mean", "std"])
    return stats.fillna({"std": 0.0}).reset_index()


def task_diagonals(runs: pd.DataFrame, rows: Sequence[str], seed: int) -> dict[str, pd.DataFrame]:
    """The learned diagonals of each row's widest factorised layer (one seed).

    Args:
        runs: :func:`runs_frame` of the study.
        rows: factorised rows (e.g. Fac, Fac-S, MTAN Fac).
        seed: the seed shown.

    Returns:
        Row -> a frame with one row per task diagonal plus ``M`` (their product, Eq. 2) and
        one column per component; ``frame.attrs["layer"]`` names the layer.
    """
    out = {}
    for row in rows:
        match = runs[(runs["row"] == row) & (runs["seed"] == seed)]
        if match.empty or match.iloc[0]["diagonals"] is None:
            continue
        record = match.iloc[0]["diagonals"]
        frame = pd.DataFrame(record["values"]).T
        frame.loc["M"] = frame.prod(axis=0)
        frame.attrs["layer"] = record["layer"]
        out[row] = frame
    return out


def summary_metrics(
    t1: pd.DataFrame, t3: pd.DataFrame, contraction: pd.DataFrame
) -> dict[str, Any]:
    """The numbers ``metrics.json`` records (for ``dvc metrics``): Table 1's mIoU, Table 3's
    Δ_T, and the contraction's largest output difference and step-time price."""
    return {
        "table1_miou": {row: float(v) for row, v in t1["miou"].items()},
        "table3_delta_T": {row: float(v) for row, v in t3["delta_T"].items()},
        "contraction_max_abs_diff": float(contraction["max_abs_diff"].max()),
        "train_step_ratio": {row: float(v) for row, v in contraction["train_step_ratio"].items()},
    }
