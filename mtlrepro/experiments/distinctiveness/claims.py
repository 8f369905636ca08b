"""Paper A's claims A1-A4, decided on this run's numbers, and check A5 (parameter counts of the
library constructors, which cannot plausibly fail: :func:`checks`).  The paper's numbers come
from :mod:`mtlrepro.paper_numbers` (``A.csv``)."""

from __future__ import annotations

import pandas as pd

from mtlrepro import paper_numbers
from mtlrepro.experiments.distinctiveness.study import (
    PARAMS_TOLERANCE_M,
    StudyResult,
    table1,
    table2,
    table2_paper_scale_parameters,
    table3,
    unpruned_min_angle_curves,
)
from mtlrepro.report import Claim, make_check, make_claim

A4_QUOTE = (
    '"We clearly see that the learned features become increasingly diverse as the training '
    'progresses." (Fig. 3)'
)
"""Paper A's sentence behind claim A4 (the caption of Fig. 3)."""
A3_QUOTE = (
    '"We clearly see that smaller (but efficient) network architectures like EfficientNet '
    'perform on par with bigger networks like VGG-11 by increasing the effective utilization of '
    'the encoded feature representation." (Table 2)'
)
"""Paper A's sentence behind claim A3 (the caption of Table 2)."""
A3_MIN_RANK_CORRELATION = 0.8
"""A3's ranking part: Spearman ρ with the paper's utilisation order (1 = the same order; one
swap of neighbours among six gives 0.94, three give 0.83)."""
ON_PAR_POINTS = 2.0
"""A3's "on par": an EfficientNet's mean test accuracy at most this many points below VGG-11's."""
EFFICIENTNETS = frozenset({"EfficientNet-B0", "EfficientNet-B2"})
"""The efficient architectures A3 names."""


def _paper(table: str, row: str, task: str, metric: str) -> float:
    """One of paper A's printed numbers (``A.csv``)."""
    return paper_numbers.value("A", table, row, task, metric)


def angle_growth(curves: pd.DataFrame) -> pd.Series:
    """Last-epoch minus first-epoch minimum angle (°) per architecture of tidy ``curves``
    (columns ``epoch``, ``min_angle``, ``architecture``)."""
    ordered = curves.sort_values("epoch", kind="stable")
    return ordered.groupby("architecture")["min_angle"].agg(lambda s: s.iloc[-1] - s.iloc[0])


def evaluate(result: StudyResult) -> list[Claim]:
    """Claims A1-A4 of paper A, each verdict computed from our numbers (check A5:
    :func:`checks`)."""
    common = dict(profile=result.profile, dataset=result.config.dataset)
    t1 = table1(result).set_index("task")
    wins = bool((t1["D-Prune"] >= t1["Baseline"]).all())
    paper_dprune = _paper("Table 1", "D-Prune", "all", "accuracy")
    paper_baseline = _paper("Table 1", "Baseline", "all", "accuracy")
    a1 = make_claim(
        "A1",
        "D-Prune >= a baseline trained at its final hidden size, on every task and on average",
        f"{paper_dprune:.2f} vs {paper_baseline:.2f} (average)",
        f"{t1.loc['average', 'D-Prune']:.2f} vs {t1.loc['average', 'Baseline']:.2f} (average)",
        wins,
        **common,
        details="test accuracy %, Table 1 layout; every row must hold",
    )
    t3 = table3(result)
    steps = t3["compression"].diff().dropna()
    falls = bool((steps <= 0).all() and t3["compression"].iloc[-1] < t3["compression"].iloc[0])
    paper_first = _paper("Table 3", "1 task", "", "compression")
    paper_last = _paper("Table 3", "4 tasks", "", "compression")
    a2 = make_claim(
        "A2",
        "Compression falls as tasks are added (1 -> 4 tasks)",
        f"{paper_first:.2f} -> {paper_last:.2f} %",
        " -> ".join(f"{c:.2f}" for c in t3["compression"]) + " %",
        falls,
        **common,
        details="compression % per task count; non-increasing and last < first",
    )
    a3 = claim_a3(result)
    return [a1, a2, a3, claim_a4(result)]


def claim_a3(result: StudyResult) -> Claim:
    """A3: efficient networks utilise more of the joint features and perform on par with the
    bigger ones (Table 2's caption).

    Two parts, both required: *the ranking* -- Spearman ρ between our feature utilisation and
    the paper's over the architectures that ran is at least :data:`A3_MIN_RANK_CORRELATION`
    (the paper's order up to a few neighbour swaps); *on par* -- every EfficientNet's mean test
    accuracy is at least VGG-11's minus :data:`ON_PAR_POINTS`.  Not applicable unless both
    EfficientNets and VGG-11 ran.
    """
    t2 = table2(result).set_index("architecture")
    paper_t2 = paper_numbers.table("A", "Table 2")
    paper = paper_t2[paper_t2["metric"] == "utilisation"].set_index("row")["value"]
    names = [n for n in paper.index if n in t2.index]
    rho = float(t2.loc[names, "utilisation"].corr(paper[names], method="spearman"))
    ranked = " > ".join(t2.loc[names, "utilisation"].sort_values(ascending=False).index)
    testable = set(names) >= EFFICIENTNETS | {"VGG-11"}
    gaps = (
        {n: float(t2.loc[n, "accuracy"] - t2.loc["VGG-11", "accuracy"]) for n in EFFICIENTNETS}
        if testable
        else {}
    )
    on_par = all(gap >= -ON_PAR_POINTS for gap in gaps.values())
    return make_claim(
        "A3",
        A3_QUOTE,
        "utilisation " + " > ".join(paper.sort_values(ascending=False).index)
        + " (Table 2)",
        f"utilisation {ranked}: Spearman ρ with the paper's {rho:+.2f}; accuracy vs VGG-11 "
        + ", ".join(f"{n} {gap:+.1f} points" for n, gap in sorted(gaps.items())),
        bool(rho >= A3_MIN_RANK_CORRELATION and on_par) if testable else None,
        profile=result.profile,
        dataset=result.config.dataset,
        details=f"feature utilisation % of Table 2 ranked as the paper's (Spearman ρ >= "
        f"{A3_MIN_RANK_CORRELATION}) and every EfficientNet's mean test accuracy at least "
        f"VGG-11's - {ON_PAR_POINTS:g} points (one seed); n/a unless both EfficientNets and "
        "VGG-11 ran",
    )


def claim_a4(result: StudyResult) -> Claim:
    """A4: the minimum distinctiveness angle grows over training, judged on the *unpruned*
    baseline's curve per architecture.

    The D-Prune curve starts with all 128 units and pruning removes the closest pairs, which
    raises the minimum angle by construction; the baseline is never pruned, so its curve
    isolates training.  Reproduced when the angle grows (last epoch minus first > 0) for a
    majority of the architectures with an unpruned curve; n/a with a single epoch.
    """
    growth = angle_growth(unpruned_min_angle_curves(result))
    grows = int((growth > 0).sum())
    per_family = ", ".join(f"{name} {delta:+.2f}°" for name, delta in growth.items())
    return make_claim(
        "A4",
        f"The minimum distinctiveness angle grows over training: {A4_QUOTE}",
        "grows for every architecture (Fig. 3)",
        f"unpruned baseline: grows for {grows} of {len(growth)} architectures ({per_family})",
        bool(grows > len(growth) / 2) if result.config.epochs > 1 else None,
        profile=result.profile,
        dataset=result.config.dataset,
        details=(
            "on the unpruned baseline's minimum-angle curve (pruning itself raises the D-Prune "
            "curve): last epoch minus first epoch > 0 for a majority of the architectures; "
            "n/a with one epoch"
        ),
    )


def checks(result: StudyResult) -> list[Claim]:
    """Check A5: Table 2's parameter counts are those of the library constructors (torchvision
    / timm) -- a property of the constructors, not of our runs, so a check."""
    params = table2_paper_scale_parameters()
    a5 = make_check(
        "A5",
        "Table 2's parameter counts are those of the standard ImageNet architectures",
        ", ".join(f"{v:.2f}" for v in params["paper_M"]),
        ", ".join(f"{v:.2f}" for v in params["library_M"]),
        bool(params["matches"].all()),
        profile=result.profile,
        dataset="torchvision / timm constructors",
        details=f"each within rounding of the printed value ({PARAMS_TOLERANCE_M} M)",
    )
    return [a5]
