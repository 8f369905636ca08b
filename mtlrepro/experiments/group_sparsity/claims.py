"""Paper B's claims B1-B5, decided on this run's numbers."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from mtlrepro import paper_numbers
from mtlrepro.experiments.group_sparsity.study import (
    LATENCY_BATCH_SIZES,
    PAPER_METRIC,
    _mean_scores,
    combination_table,
    latency_summary,
    relative_table,
    relative_to,
    sweep_runs,
)
from mtlrepro.experiments.group_sparsity.units import (
    DATASET_TASKS,
    SparsityStudyConfig,
    lambda_label,
)
from mtlrepro.report import Claim, make_claim

B1_TARGET_SPARSITY = 70.0
"""B1 compares a multi-task model at about this % group sparsity with its dense version."""
MATCH_TOLERANCE = 1.0
"""B1: "match" = relative performance Δ of at least -1 % against the dense model."""
B4_GROUP_SPARSITY_MAX = 10.0
"""B4: "little group sparsity" = at most 10 % zero groups."""
B4_PARAM_SPARSITY_MIN = 50.0
"""B4: "similar parameter sparsity" = at least 50 % zero parameters, as the group lasso's."""


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
