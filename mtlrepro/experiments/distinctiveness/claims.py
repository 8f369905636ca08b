"""Paper A's claims A1-A4, decided on this run's numbers, and check A5 (parameter counts of the
library constructors, which cannot plausibly fail: :func:`checks`).  The paper's numbers come
from :mod:`mtlrepro.paper_numbers` (``A.csv``).

Every comparison is made seed by seed (:func:`~mtlrepro.report.paired`: the networks of one
seed share the data order and the initialisation) and judged against the seed spread
(:data:`~mtlrepro.report.SPREAD_RULE`): a difference within it is ``inconclusive``."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from mtlrepro import paper_numbers
from mtlrepro.experiments.distinctiveness.study import (
    PARAMS_TOLERANCE_M,
    PruneRun,
    StudyResult,
    check_results,
    table2,
    table2_paper_scale_parameters,
    unpruned_min_angle_curves,
)
from mtlrepro.models.backbones import FAMILIES, PAPER_NAMES
from mtlrepro.report import (
    SPREAD_RULE,
    Claim,
    SeedComparison,
    describe,
    make_check,
    make_claim,
    paired,
)

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


def _common(results: Sequence[StudyResult]) -> dict[str, str]:
    """The profile and dataset of the claims (:func:`check_results`: at least one result)."""
    first = check_results(results)[0]
    return dict(profile=first.profile, dataset=first.config.dataset)


def evaluate(results: Sequence[StudyResult]) -> list[Claim]:
    """Claims A1-A4 of paper A, each verdict computed from our numbers over the seeds of
    ``results`` (check A5: :func:`checks`)."""
    return [claim_a1(results), claim_a2(results), claim_a3(results), claim_a4(results)]


def claim_a1(results: Sequence[StudyResult]) -> Claim:
    """A1: D-Prune beats a baseline trained directly at its final hidden size (Table 1), on
    every task and on average: D-Prune minus baseline test accuracy per seed, one comparison per
    row."""
    common = _common(results)
    rows = [*results[0].config.tasks, "average"]
    comparisons = [
        (row, paired([
            _accuracy(r.main, row) - _accuracy(r.baseline, row) for r in results
        ]))
        for row in rows
    ]
    paper_dprune = _paper("Table 1", "D-Prune", "all", "accuracy")
    paper_baseline = _paper("Table 1", "Baseline", "all", "accuracy")
    return make_claim(
        "A1",
        "D-Prune beats a baseline trained at its final hidden size, on every task and on "
        "average (Table 1)",
        f"{paper_dprune:.2f} vs {paper_baseline:.2f} (average)",
        f"D-Prune − baseline: {describe(comparisons, ' points')}",
        [c for _, c in comparisons],
        **common,
        details=f"test accuracy %, Table 1 layout, {len(results)} seeds; {SPREAD_RULE}",
    )


def _accuracy(run: PruneRun, row: str) -> float:
    """A run's test accuracy (%) on a task, or its mean over tasks for ``"average"``."""
    return run.average_accuracy if row == "average" else run.test[row]


def claim_a2(results: Sequence[StudyResult]) -> Claim:
    """A2: compression falls as tasks are added (Table 3): for each step from k to k + 1 tasks,
    the compression with k tasks minus that with k + 1, per seed."""
    common = _common(results)
    counts = sorted(results[0].by_task_count)
    steps = [
        (f"{k} → {k + 1} tasks", paired([
            r.by_task_count[k].compression - r.by_task_count[k + 1].compression for r in results
        ]))
        for k in counts[:-1]
    ]
    means = [
        sum(r.by_task_count[k].compression for r in results) / len(results) for k in counts
    ]
    paper_first = _paper("Table 3", "1 task", "", "compression")
    paper_last = _paper("Table 3", "4 tasks", "", "compression")
    return make_claim(
        "A2",
        "Compression falls as tasks are added, 1 → 4 tasks (Table 3)",
        f"{paper_first:.2f} -> {paper_last:.2f} %",
        " -> ".join(f"{c:.2f}" for c in means) + " % (mean); fall per step: "
        + describe(steps, " points"),
        [c for _, c in steps] or None,
        **common,
        details=f"compression % per task count, {len(results)} seeds; each step compares k "
        f"with k + 1 tasks; {SPREAD_RULE}",
    )


def claim_a3(results: Sequence[StudyResult]) -> Claim:
    """A3: efficient networks utilise more of the joint features and perform on par with the
    bigger ones (Table 2's caption).

    Two parts, both required: *the ranking* -- Spearman ρ between our feature utilisation (mean
    over seeds) and the paper's over the architectures that ran is at least
    :data:`A3_MIN_RANK_CORRELATION` (the paper's order up to a few neighbour swaps), else not
    reproduced; *on par* -- per seed, every EfficientNet's mean test accuracy minus VGG-11's
    plus :data:`ON_PAR_POINTS` is positive, judged against the seed spread.  Not applicable
    unless both EfficientNets and VGG-11 ran.
    """
    common = _common(results)
    t2 = table2(results).set_index("architecture")
    paper_t2 = paper_numbers.table("A", "Table 2")
    paper = paper_t2[paper_t2["metric"] == "utilisation"].set_index("row")["value"]
    names = [n for n in paper.index if n in t2.index]
    rho = float(t2.loc[names, "utilisation"].corr(paper[names], method="spearman"))
    ranked = " > ".join(t2.loc[names, "utilisation"].sort_values(ascending=False).index)
    testable = set(names) >= EFFICIENTNETS | {"VGG-11"}
    family = {PAPER_NAMES[f]: f for f in FAMILIES}
    on_par = [
        (f"{name} vs VGG-11 + {ON_PAR_POINTS:g}", paired([
            r.families[family[name]].average_accuracy
            - r.families[family["VGG-11"]].average_accuracy + ON_PAR_POINTS
            for r in results
        ]))
        for name in sorted(EFFICIENTNETS)
    ] if testable else []
    gaps = [  # for the reader: the accuracy gaps themselves
        (f"{name} − VGG-11", SeedComparison(c.difference - ON_PAR_POINTS, c.spread))
        for name, (_, c) in zip(sorted(EFFICIENTNETS), on_par, strict=False)
    ]
    holds: bool | None | list[SeedComparison]
    if not testable:
        holds = None
    elif rho < A3_MIN_RANK_CORRELATION:
        holds = False
    else:
        holds = [c for _, c in on_par]
    return make_claim(
        "A3",
        A3_QUOTE,
        "utilisation " + " > ".join(paper.sort_values(ascending=False).index)
        + " (Table 2)",
        f"utilisation {ranked}: Spearman ρ with the paper's {rho:+.2f}; accuracy: "
        + describe(gaps, " points"),
        holds,
        **common,
        details=f"feature utilisation % of Table 2 (mean over {len(results)} seeds) ranked as "
        f"the paper's (Spearman ρ >= {A3_MIN_RANK_CORRELATION}, else not reproduced), then "
        f"every EfficientNet's mean test accuracy at least VGG-11's - {ON_PAR_POINTS:g} points "
        f"seed by seed; {SPREAD_RULE}; n/a unless both EfficientNets and VGG-11 ran",
    )


def claim_a4(results: Sequence[StudyResult]) -> Claim:
    """A4: the minimum distinctiveness angle grows over training, judged on the *unpruned*
    baseline's curve per architecture.

    The D-Prune curve starts with all 128 units and pruning removes the closest pairs, which
    raises the minimum angle by construction; the baseline is never pruned, so its curve
    isolates training.  Per architecture with an unpruned curve, the growth (last epoch minus
    first) per seed, judged against the seed spread; n/a with a single epoch.
    """
    common = _common(results)
    growth = pd.DataFrame([angle_growth(unpruned_min_angle_curves(r)) for r in results])
    comparisons = [(name, paired(list(growth[name]))) for name in growth.columns]
    return make_claim(
        "A4",
        f"The minimum distinctiveness angle grows over training: {A4_QUOTE}",
        "grows for every architecture (Fig. 3)",
        f"unpruned baseline, last − first epoch: {describe(comparisons, '°')}",
        [c for _, c in comparisons] if results[0].config.epochs > 1 else None,
        **common,
        details=(
            "on the unpruned baseline's minimum-angle curve (pruning itself raises the D-Prune "
            f"curve): last epoch minus first epoch per seed ({len(results)} seeds); "
            f"{SPREAD_RULE}; n/a with one epoch"
        ),
    )


def checks(profile: str) -> list[Claim]:
    """Check A5: Table 2's parameter counts are those of the library constructors (torchvision
    / timm) -- a property of the constructors, not of our runs, so a check.

    Args:
        profile: the study's profile (for the row).
    """
    params = table2_paper_scale_parameters()
    a5 = make_check(
        "A5",
        "Table 2's parameter counts are those of the standard ImageNet architectures",
        ", ".join(f"{v:.2f}" for v in params["paper_M"]),
        ", ".join(f"{v:.2f}" for v in params["library_M"]),
        bool(params["matches"].all()),
        profile=profile,
        dataset="torchvision / timm constructors",
        details=f"each within rounding of the printed value ({PARAMS_TOLERANCE_M} M)",
    )
    return [a5]
