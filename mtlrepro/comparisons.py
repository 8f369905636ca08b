"""Comparisons of methods, for tables and claims (papers C and D): Δ against a reference over
the metrics where it is defined, and seed-by-seed comparisons.

When both networks of a seed share the data order (and often the initialisation), a claim that
one method beats another compares them seed by seed: the per-seed difference, as a
:class:`~mtlrepro.report.SeedComparison` of its mean against its sample std.  The verdict over a
claim's comparisons is :func:`~mtlrepro.report.comparison_verdict`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from mtlrepro.config import ConfigError
from mtlrepro.metrics import LOWER_IS_BETTER, relative_performance
from mtlrepro.report import SeedComparison

SPREAD_RULE = (
    "mean of the per-seed differences ± their std (the seed spread); reproduced if better "
    "beyond the spread in every comparison, not reproduced if worse beyond it in any, "
    "else inconclusive"
)
"""How :func:`~mtlrepro.report.comparison_verdict` reads paired comparisons, for a claim's
details."""


def relative(
    scores: Mapping[str, Mapping[str, float]], reference: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """Δ (%) of ``scores`` against ``reference`` (paper D Eq. 10-11,
    :func:`~mtlrepro.metrics.relative_performance`) over the metrics whose reference is not 0
    (a relative change from 0 is undefined: e.g. an untrained network's share of normals
    within 11.25°); a task left without metrics is left out."""
    kept = {
        task: {m: v for m, v in metrics.items() if reference[task][m] != 0}
        for task, metrics in scores.items()
    }
    return relative_performance({t: m for t, m in kept.items() if m}, reference, LOWER_IS_BETTER)


def paired(differences: Sequence[float]) -> SeedComparison:
    """The comparison of per-seed differences (method minus other; positive = better): their
    mean against their sample std (0 for one seed).

    Args:
        differences: one difference per seed (at least one).
    """
    values = [float(v) for v in differences]
    if not values:
        raise ConfigError("paired needs at least one per-seed difference")
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return SeedComparison(statistics.fmean(values), spread)


def describe(comparisons: Sequence[tuple[str, SeedComparison]], unit: str) -> str:
    """``'a vs b: +1.2 ± 0.8 unit'`` per comparison (mean difference ± seed spread)."""
    return "; ".join(
        f"{label}: {c.difference:+.2f} ± {c.spread:.2f}{unit}" for label, c in comparisons
    )
