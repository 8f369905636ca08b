"""The Discussion of paper E's notebook, written from this run's numbers (so a rerun cannot leave
stale text): the scale of the run, Table 1's correlations and costs, Table 2 against the
paper's, the found partition, and for each claim that did not reproduce the likeliest cause."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mtlrepro.experiments.partition import study
from mtlrepro.experiments.partition.units import DATASETS, PartitionStudyConfig
from mtlrepro.report import NOT_APPLICABLE, REPRODUCED, Claim

CAUSES: dict[str, str] = {
    "E1": "the short trainings see few steps per task (one task per step, a few epochs), so "
    "their accuracies and the final ones are close to each other and to chance for the hard "
    "domains, and the distillation has few steps to separate partitions; a handful of "
    "partitions gives each correlation a wide sampling error",
    "E2": "at this scale the full trainings are short and the seed spread of the total is "
    "of the size of the paper's gaps (0.3 points between es and share all)",
    "E3": "with few sharings per diagonal the ranges are noisy estimates",
    "E4": "our teachers are short-trained, so their accuracy is a rough measure of difficulty, "
    "and a few ES steps move the diagonal little from its start",
}
"""Claim -> the likeliest cause when it did not reproduce."""


def _mean_row(table1: pd.DataFrame, column: str) -> str:
    value, std = table1.at["mean", column], table1.at["mean", f"{column}_std"]
    paper = table1.at["mean", f"{column}_paper"]
    return f"{column} {value:+.2f} ± {std:.2f} (paper {paper:.2f})"


def _table2_sentence(table2: pd.DataFrame) -> str:
    parts = []
    for row, r in table2.iterrows():
        paper = "" if pd.isna(r[f"{study.TOTAL}_paper"]) else \
            f", paper {r[f'{study.TOTAL}_paper']:.1f}"
        parts.append(f"{row} {r[study.TOTAL]:.1f} ± {r[f'{study.TOTAL}_std']:.1f} % at "
                     f"average use {r['average_use']:.2f}{paper}")
    return "Table 2, total test accuracy (mean over tasks): " + "; ".join(parts) + "."


def _found_sentence(P_tilde: np.ndarray, tasks: Sequence[str],
                    teachers: pd.Series) -> str:
    shares = ", ".join(f"{t} {P_tilde[k, k]:.2f} (teacher {teachers[t]:.0f} %)"
                       for k, t in enumerate(tasks))
    return f"The partition Table 2 trains gives each task the channel share: {shares}."


def discussion(
    config: PartitionStudyConfig,
    runs: pd.DataFrame,
    table1: pd.DataFrame,
    costs: pd.DataFrame,
    table2: pd.DataFrame,
    verdicts: Sequence[Claim],
) -> str:
    """The body of the notebook's Discussion as Markdown (the notebook holds its heading).

    Args:
        config: the study settings.
        runs: :func:`~mtlrepro.experiments.partition.study.runs_frame`.
        table1: :func:`~mtlrepro.experiments.partition.study.correlation_table`.
        costs: :func:`~mtlrepro.experiments.partition.study.cost_table`.
        table2: :func:`~mtlrepro.experiments.partition.study.accuracy_table`.
        verdicts: :func:`~mtlrepro.experiments.partition.claims.evaluate`.
    """
    tasks = study.tasks_of(runs)
    teachers = study.of_kind(runs, "teachers")
    teacher_acc = teachers[teachers["seed"] == config.search_seeds[0]].set_index("task")[
        "val_accuracy"]
    P_tilde, _ = study.table2_masks(runs, config)
    columns = [*(study.short_label(b) for b in config.short_epochs), study.DISTILL]
    ratios = ", ".join(f"{row} {r:.1f}×" for row, r in costs["relative_to_distillation"].items()
                       if row != "distillation")
    reproduced = [c.claim_id for c in verdicts if c.verdict == REPRODUCED]
    lines = [
        f"This run: profile `{config.profile}`, data `{DATASETS[config.profile]}` "
        f"({len(tasks)} domains), c = {config.channels} channels in the partitioned stage, "
        f"search seeds {list(config.search_seeds)}, Table 2 seeds {list(config.seeds)}; "
        f"{config.random_partitions} random partitions, {config.table1_partitions} of them "
        f"fully trained for {config.epochs} epochs; distillation {config.distill_iterations} "
        f"steps of {config.distill_batch_size} images; ES {config.es_steps} steps of "
        f"{config.es_directions} antithetic directions at penalties "
        f"{', '.join(f'{p:g}' for p in config.es_penalties)}. The paper trains ResNet-26 on "
        "the nine Visual Decathlon domains for 100k iterations, distils for 3,000 steps and "
        "runs ES for far longer.",
        "",
        "* Teachers' validation accuracy (%): "
        + ", ".join(f"{t} {teacher_acc[t]:.1f}" for t in tasks) + ".",
        "* Table 1, mean correlation over tasks with the final validation accuracy: "
        + "; ".join(_mean_row(table1, c) for c in columns) + ".",
        f"* Cost of scoring one partition: distillation "
        f"{costs.at['distillation', 'cpu_seconds']:.1f} CPU s; relative to it: {ratios} "
        "(the paper: 1 minute against 5 and 10 minutes of training).",
        f"* {_table2_sentence(table2)}",
        f"* {_found_sentence(P_tilde, tasks, teacher_acc)}",
        f"* Reproduced: {', '.join(reproduced) or 'none'}.",
        *(f"* {c.claim_id} is {c.verdict} ({c.our_value}): {CAUSES[c.claim_id]}."
          for c in verdicts if c.verdict not in (REPRODUCED, NOT_APPLICABLE)),
        "* At the paper profile (ResNet-26 widths, the paper's distillation and ES settings, "
        "33 epochs ≈ 100k iterations) the same code runs on the real Visual Decathlon; it needs "
        "a GPU, and ImageNet-pretrained early stages, which this version does not load "
        "(teachers and students start from scratch).",
    ]
    return "\n".join(lines)
