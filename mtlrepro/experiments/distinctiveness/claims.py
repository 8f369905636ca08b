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
from mtlrepro.models.backbones import (
    PAPER_NAMES,
)
from mtlrepro.report import Claim, make_check, make_claim

A4_QUOTE = (
    '"We clearly see that the learned features become increasingly diverse as the training '
    'progresses." (Fig. 3)'
)
"""Paper A's sentence behind claim A4 (the caption of Fig. 3)."""


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
    t2 = table2(result).set_index("architecture")
    best, worst = t2["utilisation"].idxmax(), t2["utilisation"].idxmin()
    efficientnets = {"EfficientNet-B0", "EfficientNet-B2"}
    ordering = len(t2) >= 2 and best in efficientnets and worst == "VGG-11"
    paper_t2 = paper_numbers.table("A", "Table 2")
    utilisation = paper_t2[paper_t2["metric"] == "utilisation"].set_index("row")["value"]
    paper_best, paper_worst = utilisation.idxmax(), utilisation.idxmin()
    a3 = make_claim(
        "A3",
        "Efficient networks utilise more features: EfficientNet highest, VGG-11 lowest",
        f"highest {paper_best} ({utilisation[paper_best]:.2f} %), lowest {paper_worst} "
        f"({utilisation[paper_worst]:.2f} %)",
        f"highest {best} ({t2.loc[best, 'utilisation']:.2f} %), lowest {worst} "
        f"({t2.loc[worst, 'utilisation']:.2f} %)",
        ordering
        if set(PAPER_NAMES[f] for f in result.config.families) >= efficientnets | {"VGG-11"}
        else None,
        **common,
        details="feature utilisation % of Table 2; n/a unless both EfficientNets and VGG-11 ran",
    )
    return [a1, a2, a3, claim_a4(result)]


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
