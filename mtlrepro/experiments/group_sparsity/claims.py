"""Paper B's claims B1-B5, decided on this run's numbers.

Each claim quotes the paper's sentence.  A claim that one network beats another compares them
seed by seed (:func:`~mtlrepro.report.paired`: both networks of a seed share the data order and
the initialisation); its verdict is :func:`~mtlrepro.report.comparison_verdict`'s, so a
difference within the seed spread is ``inconclusive``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from mtlrepro import paper_numbers
from mtlrepro.experiments.group_sparsity.study import (
    LATENCY_BATCH_SIZES,
    PAPER_METRIC,
    _mean_scores,
    relative_table,
    relative_to,
    seed_deltas,
    seed_scores,
    single_task_scores,
    sweep_runs,
)
from mtlrepro.experiments.group_sparsity.units import (
    DATASET_TASKS,
    START_NAMES,
    SparsityStudyConfig,
    lambda_label,
    of_start,
)
from mtlrepro.report import (
    SPREAD_RULE,
    Claim,
    SeedComparison,
    describe,
    make_claim,
    paired,
)

B1_TARGET_SPARSITY = 70.0
"""B1: "approximately 70 % sparsity"."""
APPROXIMATELY = 15.0
"""B1, B4: "approximately" / "similar levels" = within this many percentage points."""
B3_SPARSEST = 2
"""B3 compares the dense backbone's time with the slimmed ones of this many sparsest λ."""
B4_GROUP_SPARSITY_MAX = 10.0
"""B4: "a notably low percentage of group sparsity" = at most 10 % zero groups."""

B1_SENTENCE = (
    '"even with approximately 70% sparsity, the multi-task models perform better than the '
    'non-sparse models" (§5)'
)
B4_SENTENCE = (
    '"Although applying solely ℓ1 sparsity achieves similar levels of parameter sparsity, the '
    'performance with ℓ1/ℓ2 sparsity, as shown in Table 1, remains superior" and "unstructured '
    'sparsity can also lead to the zeroing out of some channels, thus contributing to a notably '
    'low percentage of group sparsity" (§5)'
)
B5_SENTENCE = (
    '"In the absence of sparsity, i.e., λ = 0, the individual task performance surpasses that of '
    'any of the multi-task performances across all tasks" and "The introduction of group '
    'sparsity in multi-task experiments yields a significant improvement in the performances of '
    'all tasks" (§5)'
)


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


def _b4_holds(
    comparisons: list[SeedComparison], similar: list[bool], low_group: bool
) -> bool | None | list[SeedComparison]:
    """B4's outcome: ``False`` when ℓ1 zeroes whole groups beyond the bound; ``None`` (not
    testable) without a group-lasso network of similar parameter sparsity for every
    combination; else the seed-by-seed comparisons."""
    if not comparisons:
        return None
    if not low_group:
        return False
    return comparisons if all(similar) else None


def evaluate(
    runs: pd.DataFrame, latencies: pd.DataFrame, config: SparsityStudyConfig
) -> list[Claim]:
    """Claims B1-B5 of paper B, each verdict computed from our numbers.

    Args:
        runs: :func:`run_study`'s frame.
        latencies: :func:`latency_vs_lambda`'s frame.
        config: the study settings.
    """
    datasets = ", ".join(config.datasets)
    common = {"profile": config.profile}
    relative = {d: relative_table(runs, d) for d in config.datasets}

    # B1: multi-task models at ~70 % group sparsity beat their dense versions, seed by seed.
    b1: list[tuple[str, SeedComparison]] = []
    for dataset, table in relative.items():
        sparse = table[table["multi_task"] & (table["lambda"] > 0)]
        for combo, group in sparse.groupby("tasks", sort=False):
            near = group.iloc[(group["group_sparsity"] - B1_TARGET_SPARSITY).abs().argmin()]
            if abs(near["group_sparsity"] - B1_TARGET_SPARSITY) > APPROXIMATELY:
                continue
            deltas = seed_deltas(
                seed_scores(runs, "table", dataset, combo, near["lambda"]),
                seed_scores(runs, "table", dataset, combo, 0.0),
            )
            label = f"{dataset} {combo} at {near['group_sparsity']:.0f} %"
            b1.append((label, paired(deltas)))
    paper_b1 = relative_to(_paper_nyu("all", "lambda_2"), _paper_nyu("all", "lambda=0"))
    band = (B1_TARGET_SPARSITY - APPROXIMATELY, B1_TARGET_SPARSITY + APPROXIMATELY)
    b1_claim = make_claim(
        "B1",
        B1_SENTENCE,
        f"NYU-v2 all tasks at {_paper_nyu_sparsity('lambda_2'):.1f} % group sparsity: Δ vs "
        f"dense {paper_b1:+.1f} %",
        f"Δ vs dense: {describe(b1, ' %')}" if b1 else f"no multi-task network reached "
        f"{band[0]:.0f}-{band[1]:.0f} % group sparsity at the table λ",
        [c for _, c in b1] or None,
        dataset=datasets,
        **common,
        details=f"every multi-task combination whose table λ nearest {B1_TARGET_SPARSITY:.0f} % "
        f"group sparsity lies within {band[0]:.0f}-{band[1]:.0f} %: Δ (paper D Eq. 10-11, paper "
        f"B's metrics) of that network against the dense one of the same seed; {SPREAD_RULE}",
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

    # B3: inference time falls as sparsity grows (physically slimmed backbone), seed by seed.
    timed = latencies[
        (latencies["device"] == "cpu") & (latencies["batch_size"] == max(LATENCY_BATCH_SIZES))
    ]
    dense_ms = timed[timed["lam"] == 0].set_index("seed")["latency_ms"]
    sparsest = (
        timed[timed["lam"] > 0].groupby("lam")["group_sparsity"].mean().nlargest(B3_SPARSEST)
    )
    b3: list[tuple[str, SeedComparison]] = []
    for lam, sparsity in sparsest.sort_index().items():
        ms = timed[timed["lam"] == lam].set_index("seed")["latency_ms"]
        saved = (100.0 * (1.0 - ms / dense_ms.reindex(ms.index))).dropna()
        label = f"λ = {lambda_label(lam)} ({sparsity:.0f} % zero groups)"
        b3.append((label, paired(saved.tolist())))
    b3_claim = make_claim(
        "B3",
        '"an increase in sparsity decreases inference time (specifically the runtime for '
        'backbone only)" (§5), measured on the physically slimmed backbone',
        _paper_speedups(),
        f"time saved vs the dense backbone: {describe(b3, ' %')}",
        [c for _, c in b3] or None,
        dataset=config.sweep_dataset,
        **common,
        details=f"CPU, batch {max(LATENCY_BATCH_SIZES)}, the inference form of each seed's "
        f"slimmed backbone against the dense one timed beside it, at the {B3_SPARSEST} sparsest "
        f"λ; {SPREAD_RULE}",
    )

    # B4: L1 reaches similar parameter sparsity, little group sparsity, and ℓ1/ℓ2 performs
    # better (seed by seed, against the table λ of the most similar parameter sparsity).
    l1 = runs[(runs["kind"] == "l1") & (runs["dataset"] == config.sweep_dataset)]
    paper_l1 = paper_numbers.table("B", "Table 3")
    paper_l1_group = paper_l1.loc[paper_l1["metric"] == "group_sparsity", "value"]
    paper_l1_param = paper_l1.loc[paper_l1["metric"] == "param_sparsity", "value"]
    b4: list[tuple[str, SeedComparison]] = []
    similar: list[bool] = []
    group_lasso = relative.get(config.sweep_dataset)
    l1_combos = l1.groupby("combo", sort=False) if group_lasso is not None else []
    for combo, group in l1_combos:
        rows = group_lasso[(group_lasso["tasks"] == combo) & (group_lasso["lambda"] > 0)]
        l1_param = float(group["param_sparsity"].mean())
        near = rows.iloc[(rows["param_sparsity"] - l1_param).abs().argmin()]
        similar.append(bool(abs(near["param_sparsity"] - l1_param) <= APPROXIMATELY))
        deltas = seed_deltas(
            seed_scores(runs, "table", config.sweep_dataset, combo, near["lambda"]),
            seed_scores(runs, "l1", config.sweep_dataset, combo, config.l1_lambda),
        )
        label = (
            f"{combo}: ℓ1/ℓ2 λ = {lambda_label(near['lambda'])} ({near['param_sparsity']:.0f} % "
            f"weights) vs ℓ1 ({l1_param:.0f} %)"
        )
        b4.append((label, paired(deltas)))
    low_group = bool((l1["group_sparsity"] <= B4_GROUP_SPARSITY_MAX).all())
    b4_claim = make_claim(
        "B4",
        B4_SENTENCE,
        f"parameter sparsity {paper_l1_param.min():.1f}-{paper_l1_param.max():.1f} %, group "
        f"sparsity {paper_l1_group.min():.2f}-{paper_l1_group.max():.2f} %; ℓ1/ℓ2 better",
        f"ℓ1 group sparsity {l1['group_sparsity'].min():.2f}-"
        f"{l1['group_sparsity'].max():.2f} %; ℓ1/ℓ2 vs ℓ1 Δ: {describe(b4, ' %')}"
        if b4
        else "no ℓ1/ℓ2 table runs on the ℓ1 dataset",
        _b4_holds([c for _, c in b4], similar, low_group),
        dataset=config.sweep_dataset,
        **common,
        details=f"ℓ1 prox at λ = {lambda_label(config.l1_lambda)} on every multi-task "
        f"combination; not reproduced if its group sparsity exceeds "
        f"{B4_GROUP_SPARSITY_MAX:.0f} %; not applicable unless a table λ of the group lasso is "
        f"within {APPROXIMATELY:.0f} points of its parameter sparsity for every combination "
        f"({sum(similar)} of {len(similar)} are: choose l1_lambda to match); then Δ of that "
        f"ℓ1/ℓ2 network against the ℓ1 one of the same seed; {SPREAD_RULE}",
    )

    # B5: dense single-task networks beat the dense multi-task one, and the sparse multi-task
    # one (at its best λ) beats the single-task ones: the gap closes fully.
    b5: list[tuple[str, SeedComparison]] = []
    for dataset, table in relative.items():
        full = "+".join(DATASET_TASKS[dataset])
        singles = single_task_scores(runs, dataset)
        dense = seed_deltas(seed_scores(runs, "table", dataset, full, 0.0), singles)
        b5.append((f"{dataset}: single-task vs dense multi-task", paired([-d for d in dense])))
        sparse = table[(table["tasks"] == full) & (table["lambda"] > 0)]
        best = sparse.loc[sparse["vs_single"].idxmax(), "lambda"]
        deltas = seed_deltas(seed_scores(runs, "table", dataset, full, best), singles)
        label = f"{dataset}: multi-task at λ = {lambda_label(best)} vs single-task"
        b5.append((label, paired(deltas)))
    singles_paper = {t: _paper_nyu(t, "lambda=0")[t] for t in DATASET_TASKS["nyuv2"]}
    paper_gap = relative_to(_paper_nyu("all", "lambda=0"), singles_paper)
    paper_closed = relative_to(_paper_nyu("all", "lambda_2"), singles_paper)
    b5_claim = make_claim(
        "B5",
        B5_SENTENCE,
        f"NYU-v2 all tasks vs single-task: dense {paper_gap:+.1f} %, sparse {paper_closed:+.1f} %",
        describe(b5, " %"),
        [c for _, c in b5],
        dataset=datasets,
        **common,
        details="per dataset, Δ of the all-task network against the dense single-task networks "
        "of the same seed: dense (negated: single-task must be better) and at the sparse table "
        f"λ with the best seed-mean Δ (must be better than single-task); {SPREAD_RULE}",
    )
    return [b1_claim, b2, b3_claim, b4_claim, b5_claim]


def evaluate_by_start(
    runs: pd.DataFrame, latencies: pd.DataFrame, config: SparsityStudyConfig
) -> dict[str, list[Claim]]:
    """Claims B1-B5 decided on each start's runs, from scratch first.

    Args:
        runs: :func:`~mtlrepro.experiments.group_sparsity.units.run_study`'s frame (every
            start).
        latencies: :func:`latency_vs_lambda`'s frame of those runs (every start, timed in the
            same rounds).
        config: the study settings.

    Returns:
        Start name (:data:`~mtlrepro.experiments.group_sparsity.units.START_NAMES`) -> claims.
    """
    return {
        START_NAMES[start]: evaluate(
            of_start(runs, start), latencies[latencies["start"] == start], config
        )
        for start in sorted(config.starts, key=lambda s: s != "scratch")
    }
