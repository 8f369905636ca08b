"""Paper A's claims, decided on this run's numbers."""

from __future__ import annotations

from mtlrepro.experiments.distinctiveness.study import (
    PARAMS_TOLERANCE_M,
    StudyResult,
    min_angle_curves,
    table1,
    table2,
    table2_paper_scale_parameters,
    table3,
)
from mtlrepro.models.backbones import (
    PAPER_NAMES,
)
from mtlrepro.report import Claim, make_claim


def evaluate(result: StudyResult) -> list[Claim]:
    """Claims A1-A5 of paper A, each verdict computed from our numbers."""
    common = dict(profile=result.profile, dataset=result.config.dataset)
    t1 = table1(result).set_index("task")
    wins = bool((t1["D-Prune"] >= t1["Baseline"]).all())
    a1 = make_claim(
        "A1",
        "D-Prune >= a baseline trained at its final hidden size, on every task and on average",
        "74.05 vs 71.92 (average)",
        f"{t1.loc['average', 'D-Prune']:.2f} vs {t1.loc['average', 'Baseline']:.2f} (average)",
        wins,
        **common,
        details="test accuracy %, Table 1 layout; every row must hold",
    )
    t3 = table3(result)
    steps = t3["compression"].diff().dropna()
    falls = bool((steps <= 0).all() and t3["compression"].iloc[-1] < t3["compression"].iloc[0])
    a2 = make_claim(
        "A2",
        "Compression falls as tasks are added (1 -> 4 tasks)",
        "40.63 -> 21.09 %",
        " -> ".join(f"{c:.2f}" for c in t3["compression"]) + " %",
        falls,
        **common,
        details="compression % per task count; non-increasing and last < first",
    )
    t2 = table2(result).set_index("architecture")
    best, worst = t2["utilisation"].idxmax(), t2["utilisation"].idxmin()
    efficientnets = {"EfficientNet-B0", "EfficientNet-B2"}
    ordering = len(t2) >= 2 and best in efficientnets and worst == "VGG-11"
    a3 = make_claim(
        "A3",
        "Efficient networks utilise more features: EfficientNet highest, VGG-11 lowest",
        "highest EfficientNet-B0 (85.16 %), lowest VGG-11 (53.15 %)",
        f"highest {best} ({t2.loc[best, 'utilisation']:.2f} %), lowest {worst} "
        f"({t2.loc[worst, 'utilisation']:.2f} %)",
        ordering
        if set(PAPER_NAMES[f] for f in result.config.families) >= efficientnets | {"VGG-11"}
        else None,
        **common,
        details="feature utilisation % of Table 2; n/a unless both EfficientNets and VGG-11 ran",
    )
    curves = min_angle_curves(result)
    growth = curves.groupby("architecture")["min_angle"].agg(lambda s: s.iloc[-1] - s.iloc[0])
    grows = int((growth > 0).sum())
    a4 = make_claim(
        "A4",
        "The minimum distinctiveness angle grows over training (Fig. 3)",
        "grows for every architecture",
        f"grows for {grows} of {len(growth)} architectures",
        bool(grows > len(growth) / 2) if result.config.epochs > 1 else None,
        **common,
        details="last epoch minus first epoch > 0, for a majority of the families",
    )
    params = table2_paper_scale_parameters()
    a5 = make_claim(
        "A5",
        "Table 2's parameter counts are those of the standard ImageNet architectures",
        ", ".join(f"{v:.2f}" for v in params["paper_M"]),
        ", ".join(f"{v:.2f}" for v in params["library_M"]),
        bool(params["matches"].all()),
        profile=result.profile,
        dataset="torchvision / timm constructors",
        details=f"each within rounding of the printed value ({PARAMS_TOLERANCE_M} M)",
    )
    return [a1, a2, a3, a4, a5]
