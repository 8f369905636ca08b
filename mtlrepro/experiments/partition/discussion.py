"""The Discussion of paper E's notebook, written from this run's numbers (so a rerun cannot leave
stale text): the scale of the run, Table 1's correlations and costs, Table 2 against the
paper's, the found partition, and for each claim that did not reproduce the likeliest cause."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mtlrepro.experiments.partition import study
from mtlrepro.experiments.partition.units import DATASETS, PartitionStudyConfig, es_row
from mtlrepro.report import NOT_APPLICABLE, REPRODUCED, Claim


def _e6_cause(config: PartitionStudyConfig, runs: pd.DataFrame) -> str:
    """E6's likeliest cause: tasks whose distillation score hardly depends on their share,
    either saturated near the teacher's accuracy or far below it."""
    points = study.task_channels_frame(runs)
    score = points.groupby("task", sort=False)["score"]
    saturated = [t for t, s in score if s.min() > 0.9]
    low = {t: float(s.median()) for t, s in score if s.median() < 0.5}
    parts = []
    if saturated:
        parts.append(f"the distillation saturates on {', '.join(saturated)} (scores within "
                     f"{1 - min(score.min()[saturated]):.2f} of the teacher's accuracy "
                     "whatever the share)")
    if low:
        parts.append(
            f"the students of {config.distill_iterations} distillation steps stay far below the "
            "teachers on " + ", ".join(f"{t} (median score {m:.2f})" for t, m in low.items())
            + ", so the share moves their score little")
    return "; ".join(parts) or "the scores vary with the share as much as between partitions"


def _causes(config: PartitionStudyConfig, runs: pd.DataFrame,
            table2: pd.DataFrame) -> dict[str, str]:
    """Claim -> the likeliest cause when it does not reproduce, quoting this run's numbers."""
    n = config.table1_partitions
    interval = float(np.tanh(1.959964 / np.sqrt(n - 3))) if n > 3 else 1.0
    final = str(config.epochs)
    trained = study.of_kind(runs, "table1")
    tasks = study.tasks_of(runs)
    spans = [np.ptp([r[final][t] for r in trained["val"]]) for t in tasks]
    seed_sd = float(np.median(table2[[f"{t}_std" for t in tasks]].to_numpy()))
    es = es_row(config.table2_penalty)
    paper_gap = table2.at[es, f"{study.TOTAL}_paper"] - table2.at[study.SHARE_ALL,
                                                                   f"{study.TOTAL}_paper"]
    shares = np.concatenate([np.diag(np.asarray(P)) for P in study.found_partitions(runs)["P"]])
    best_baseline = table2.drop(index=[es]).sort_values(study.TOTAL).index[-1]
    return {
        "E1": f"with {n} fully trained partitions a correlation's 95 % interval around 0 is "
        f"±{interval:.2f}; their final validation accuracies differ by a median "
        f"{np.median(spans):.1f} points per task, while one partition's test accuracy varies by "
        f"{seed_sd:.1f} points between seeds (median std in Table 2), so the order these "
        "correlations measure is largely noise",
        "E2": f"the seed spread of the total ({table2.at[es, study.TOTAL + '_std']:.1f} points "
        f"for es, {table2.at[study.SHARE_ALL, study.TOTAL + '_std']:.1f} for share all, over "
        f"{int(table2.at[es, 'seeds'])} seeds) is larger than the paper's gap between them "
        f"({paper_gap:.1f} points)",
        "E3": f"{config.sharing_samples + 2} sharings per diagonal and "
        f"{len(config.search_seeds)} search seed{'s' if len(config.search_seeds) > 1 else ''}: "
        "too few to resolve a difference of this size against the spread between tasks",
        "E4": f"{config.es_steps} ES steps move the diagonal little from its start (about 0.5): "
        f"the found partitions' shares span {shares.min():.2f}–{shares.max():.2f}, too narrow "
        "an allocation for the search to have found which tasks need few channels",
        "E6": _e6_cause(config, runs),
        "E5": f"{best_baseline} does best here ({table2.at[best_baseline, study.TOTAL]:.1f} % "
        f"against share all's {table2.at[study.SHARE_ALL, study.TOTAL]:.1f} %); a possible cause, "
        "not tested: the paper's first two stages hold frozen ImageNet features shared by all "
        "tasks, ours are trained from scratch by every task's steps, so sharing the last stage "
        "too adds interference rather than capacity",
    }


def _mean_row(table1: pd.DataFrame, column: str) -> str:
    value, paper = table1.at["mean", column], table1.at["mean", f"{column}_paper"]
    std = f" ± {table1.at['mean', f'{column}_std']:.2f}" if f"{column}_std" in table1 else ""
    return f"{column} {value:+.2f}{std} (paper {paper:.2f})"


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


def deployment_sentence(deployment: pd.DataFrame) -> str:
    """What the found partition saves when each task is deployed alone (module doc of
    :mod:`mtlrepro.methods.partition_export`): its share of the path's multiply-accumulates
    and the measured speed-up, over the tasks."""
    macs = deployment["macs_partitioned"] / deployment["macs_unpartitioned"]
    speedups = deployment["speedup_b16"]
    return (
        f"Deployed one task at a time, with the masked channels removed and BatchNorm folded, "
        f"the found partition leaves each task {100 * macs.min():.0f}-{100 * macs.max():.0f} % "
        f"of the unpartitioned path's multiply-accumulates; at batch 16 the task paths run "
        f"{speedups.min():.2f}-{speedups.max():.2f}× as fast as unpartitioned (batch 1: "
        f"{deployment['speedup_b1'].min():.2f}-{deployment['speedup_b1'].max():.2f}×; only the "
        "last stage is partitioned, so the first stages' cost stays)."
    )


def discussion(
    config: PartitionStudyConfig,
    runs: pd.DataFrame,
    table1: pd.DataFrame,
    costs: pd.DataFrame,
    table2: pd.DataFrame,
    verdicts: Sequence[Claim],
    deployment: pd.DataFrame | None = None,
) -> str:
    """The body of the notebook's Discussion as Markdown (the notebook holds its heading).

    Args:
        config: the study settings.
        runs: :func:`~mtlrepro.experiments.partition.study.runs_frame`.
        table1: :func:`~mtlrepro.experiments.partition.study.correlation_table`.
        costs: :func:`~mtlrepro.experiments.partition.study.cost_table`.
        table2: :func:`~mtlrepro.experiments.partition.study.accuracy_table`.
        verdicts: :func:`~mtlrepro.experiments.partition.claims.evaluate`.
        deployment: :func:`~mtlrepro.experiments.partition.study.deployment_table`, or
            ``None``.
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
    causes = _causes(config, runs, table2)
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
        "* Table 1, mean correlation over tasks with the final validation accuracy"
        + (" (one search seed: no spread)" if len(config.search_seeds) == 1 else "") + ": "
        + "; ".join(_mean_row(table1, c) for c in columns) + ".",
        f"* Cost of scoring one partition: distillation "
        f"{costs.at['distillation', 'cpu_seconds']:.1f} CPU s; relative to it: {ratios} "
        "(the paper: 1 minute against 5 and 10 minutes of training, 1 : 5 and 1 : 10).",
        f"* {_table2_sentence(table2)}",
        f"* {_found_sentence(P_tilde, tasks, teacher_acc)}",
        *([f"* {deployment_sentence(deployment)}"] if deployment is not None else []),
        f"* Reproduced: {', '.join(reproduced) or 'none'}.",
        *(f"* {c.claim_id} is {c.verdict} ({c.our_value}): {causes[c.claim_id]}."
          for c in verdicts if c.verdict not in (REPRODUCED, NOT_APPLICABLE)),
        "* At the paper profile (ResNet-26 widths, the paper's distillation and ES settings, "
        "33 epochs ≈ 100k iterations) the same code runs on the real Visual Decathlon; it needs "
        "a GPU, and ImageNet-pretrained early stages, which this version does not load "
        "(teachers and students start from scratch).",
    ]
    return "\n".join(lines)
