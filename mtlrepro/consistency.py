"""Checks of the papers' internal arithmetic, with the rounding of printed numbers propagated.

Every printed number ``v`` with ``d`` decimals stands for the interval ``[v - h, v + h]``,
``h = 0.5·10^-d`` (its rounding box).  A derived number is recomputed from its printed inputs
as an interval: the minimum and maximum of the formula over all the inputs' rounding boxes.
All formulas here are sums of terms each monotone in its own inputs, and no input appears in
two terms, so evaluating each term at the corners of its box and adding gives the exact range.
The paper's derived number is *consistent* when its own rounding interval overlaps the
recomputed interval (closed intervals, with :data:`FLOAT_SLACK` for binary floating point);
otherwise the disagreement is beyond rounding -- a finding to report, never to "fix" in the
data.

The checks (each a tidy DataFrame of :data:`RESULT_COLUMNS` rows:
:func:`relative_performance_check`, :func:`mean_check`, :func:`hidden_size_check`) are applied
to each paper's tables by its package's ``consistency.checks()``
(``mtlrepro/experiments/<paper>/consistency.py``):

* paper D, Eq. 10-11: Δ per task and Δ_T of Tables 2, 3 and 4 recomputed from the absolute
  numbers of Tables 11, 12 and 13 against their ``Single-Task`` row, and Table 6 from
  Table 14 against Table 11's ``Single-Task`` row (``experiments/baselines``);
* paper A: compression % = 100·(h_initial − h_final)/h_initial and feature utilisation % =
  100·h_final/h_initial (Tables 2 and 3; hidden sizes are unit counts, hence exact), and
  Table 1's "Average" = mean of the task rows (``experiments/distinctiveness``);
* paper E: Table 2's "Total" = mean of the nine task columns (``experiments/partition``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

FLOAT_SLACK = 1e-9
"""Absolute tolerance of the overlap test: the numbers are decimal, their floats are not."""

RESULT_COLUMNS: tuple[str, ...] = (
    "check",
    "paper",
    "table",
    "row",
    "task",
    "metric",
    "paper_value",
    "paper_low",
    "paper_high",
    "recomputed",
    "recomputed_low",
    "recomputed_high",
    "difference",
    "consistent",
    "definition",
)


@dataclass(frozen=True)
class Interval:
    """A closed interval ``[low, high]`` of real numbers."""

    low: float
    high: float

    def __post_init__(self) -> None:
        """Reject reversed bounds."""
        if self.low > self.high:
            raise ValueError(f"interval bounds reversed: [{self.low}, {self.high}]")

    @classmethod
    def point(cls, x: float) -> Interval:
        """The degenerate interval ``[x, x]``.

        Args:
            x: the number.
        """
        return cls(x, x)

    @classmethod
    def printed(cls, x: float, decimals: int) -> Interval:
        """Rounding box of a number printed with ``decimals`` decimal places.

        Args:
            x: the printed number.
            decimals: how many decimals were printed (0 for an integer).
        """
        half = 0.5 * 10.0**-decimals
        return cls(x - half, x + half)

    @property
    def mid(self) -> float:
        """Midpoint."""
        return 0.5 * (self.low + self.high)

    def __add__(self, other: Interval) -> Interval:
        """Sum of independent intervals."""
        return Interval(self.low + other.low, self.high + other.high)

    def scale(self, factor: float) -> Interval:
        """``factor`` times the interval.

        Args:
            factor: a real number (a negative one swaps the bounds).
        """
        a, b = self.low * factor, self.high * factor
        return Interval(min(a, b), max(a, b))

    def overlaps(self, other: Interval, slack: float = FLOAT_SLACK) -> bool:
        """Whether the two closed intervals share a point (up to ``slack``).

        Args:
            other: the other interval.
            slack: absolute tolerance added to both sides.
        """
        return self.low <= other.high + slack and other.low <= self.high + slack


def corner_range(func: Callable[..., float], *boxes: Interval) -> Interval:
    """Range of ``func`` over a box, for ``func`` monotone in each argument.

    A function monotone in every argument reaches its extremes at corners of the box, so the
    ``2^k`` corner values bound it exactly.

    Args:
        func: a function of ``len(boxes)`` real arguments, monotone in each.
        boxes: the interval of each argument.
    """
    values = [func(*corner) for corner in itertools.product(*((b.low, b.high) for b in boxes))]
    return Interval(min(values), max(values))


def mean_interval(parts: Sequence[Interval]) -> Interval:
    """Mean of independent intervals (exact range when no input is shared).

    Args:
        parts: the intervals averaged.
    """
    if not parts:
        raise ValueError("mean of no intervals")
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total.scale(1.0 / len(parts))


def relative_change(score: Interval, reference: Interval, lower_is_better: bool) -> Interval:
    """One term of paper D's Eq. 10: ``100·(−1)^l·(M − M_single)/M_single`` over the boxes.

    The term is monotone in ``M`` and (for ``M_single > 0``) in ``M_single``.

    Args:
        score: the method's metric value (interval).
        reference: the single-task (reference) value; must be positive.
        lower_is_better: ``l_j = 1`` (lower is better for this metric).
    """
    if reference.low <= 0:
        raise ValueError(f"reference interval {reference} is not positive; Eq. 10 undefined")
    sign = -1.0 if lower_is_better else 1.0
    return corner_range(lambda m, r: sign * 100.0 * (m - r) / r, score, reference)


def relative_performance_interval(
    scores: Mapping[str, Mapping[str, Interval]],
    reference: Mapping[str, Mapping[str, Interval]],
    lower_is_better: Collection[str],
) -> dict[str, Interval]:
    """Paper D's Eq. 10 (Δ per task) and Eq. 11 (Δ_T, key ``"all"``) as intervals, in %.

    Δ_Ti = (100/|M_i|)·Σ_j (−1)^{l_j}·(M_ij − M_ij^single)/M_ij^single; Δ_T = mean over tasks.
    Degenerate intervals (:meth:`Interval.point`) give the point value.

    Args:
        scores: task -> {metric -> interval} of the method.
        reference: task -> {metric -> interval} of the single-task baseline (covers scores).
        lower_is_better: names of the metrics for which lower is better.
    """
    per_task = {
        task: mean_interval(
            [
                relative_change(value, reference[task][metric], metric in lower_is_better)
                for metric, value in metrics.items()
            ]
        )
        for task, metrics in scores.items()
    }
    return {**per_task, "all": mean_interval(list(per_task.values()))}


def _result_row(
    check: str,
    entry: pd.Series,
    recomputed: float,
    interval: Interval,
    definition: str,
) -> dict[str, object]:
    """One output row: a printed number against its recomputation."""
    printed = Interval.printed(float(entry["value"]), int(entry["decimals"]))
    return {
        "check": check,
        "paper": entry["paper"],
        "table": entry["table"],
        "row": entry["row"],
        "task": entry["task"],
        "metric": entry["metric"],
        "paper_value": float(entry["value"]),
        "paper_low": printed.low,
        "paper_high": printed.high,
        "recomputed": recomputed,
        "recomputed_low": interval.low,
        "recomputed_high": interval.high,
        "difference": float(entry["value"]) - recomputed,
        "consistent": printed.overlaps(interval),
        "definition": definition,
    }


def _frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Rows as a DataFrame with :data:`RESULT_COLUMNS` and a bool ``consistent`` column."""
    out = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    return out.astype({"consistent": bool})


def _entries(
    frame: pd.DataFrame, row: str, tasks: Sequence[str]
) -> dict[str, dict[str, pd.Series]]:
    """task -> metric -> long-format entry of ``row`` in ``frame``, for the given tasks."""
    selected = frame[(frame["row"] == row) & frame["task"].isin(tasks)]
    out: dict[str, dict[str, pd.Series]] = {task: {} for task in tasks}
    for _, entry in selected.iterrows():
        out[entry["task"]][entry["metric"]] = entry
    empty = [task for task, metrics in out.items() if not metrics]
    if empty:
        raise ValueError(f"row {row!r} has no absolute numbers for task(s) {empty}")
    return out


def _intervals(
    entries: Mapping[str, Mapping[str, pd.Series]], rounded: bool
) -> dict[str, dict[str, Interval]]:
    """Rounding boxes (``rounded``) or degenerate point intervals of nested entries."""
    return {
        task: {
            metric: Interval.printed(e["value"], e["decimals"])
            if rounded
            else Interval.point(e["value"])
            for metric, e in metrics.items()
        }
        for task, metrics in entries.items()
    }


def relative_performance_check(
    deltas: pd.DataFrame,
    absolute: pd.DataFrame,
    *,
    reference: pd.DataFrame | None = None,
    reference_row: str = "Single-Task",
    check: str = "relative_performance",
) -> pd.DataFrame:
    """Printed Δ per task and Δ_T against Eq. 10-11 applied to the printed absolute numbers.

    Every row of ``deltas`` is checked.  The reference row itself has Δ = 0 exactly (the same
    numbers are compared), so its recomputed interval is ``[0, 0]``.

    Args:
        deltas: long-format numbers of a Δ table (metric ``delta``; task ``"all"`` is Δ_T).
        absolute: long-format absolute numbers with the same row names and
            ``lower_is_better`` set for every metric; entries with task ``""`` (parameters)
            are ignored.
        reference: long-format numbers holding ``reference_row`` (default: ``absolute``).
        reference_row: name of the single-task row.
        check: name written in the ``check`` column.
    """
    reference = absolute if reference is None else reference
    deltas = deltas[deltas["metric"] == "delta"]
    tasks = [t for t in dict.fromkeys(deltas["task"]) if t != "all"]
    measured = absolute[absolute["task"].isin(tasks)]
    if measured["lower_is_better"].isna().any():
        raise ValueError("every absolute metric needs lower_is_better for Eq. 10")
    lower = set(measured.loc[measured["lower_is_better"].astype(bool), "metric"])
    higher = set(measured.loc[~measured["lower_is_better"].astype(bool), "metric"])
    if lower & higher:
        raise ValueError(f"metrics with both directions across tasks: {sorted(lower & higher)}")
    ref = _entries(reference, reference_row, tasks)
    definition = (
        f"paper D Eq. 10-11 from {absolute['table'].iloc[0]} against {reference_row} of "
        f"{reference['table'].iloc[0]}"
    )
    rows: list[dict[str, object]] = []
    for method in dict.fromkeys(deltas["row"]):
        if method == reference_row:
            boxes = dict.fromkeys([*tasks, "all"], Interval.point(0.0))
            points = dict.fromkeys([*tasks, "all"], 0.0)
        else:
            scores = _entries(absolute, method, tasks)
            boxes = relative_performance_interval(
                _intervals(scores, True), _intervals(ref, True), lower
            )
            exact = relative_performance_interval(
                _intervals(scores, False), _intervals(ref, False), lower
            )
            points = {task: interval.mid for task, interval in exact.items()}
        for _, entry in deltas[deltas["row"] == method].iterrows():
            task = entry["task"]
            rows.append(_result_row(check, entry, points[task], boxes[task], definition))
    return _frame(rows)


def mean_check(
    frame: pd.DataFrame,
    parts: Sequence[str],
    *,
    total_task: str = "all",
    check: str = "mean_of_columns",
) -> pd.DataFrame:
    """A printed average (task ``total_task``) against the mean of the printed ``parts`` tasks.

    Args:
        frame: long-format numbers of one table and one metric.
        parts: the task names averaged.
        total_task: the task name of the printed average.
        check: name written in the ``check`` column.
    """
    rows: list[dict[str, object]] = []
    definition = f"{total_task} = mean of {', '.join(parts)}"
    for method in dict.fromkeys(frame["row"]):
        in_row = frame[frame["row"] == method].set_index("task")
        missing = [p for p in [*parts, total_task] if p not in in_row.index]
        if missing:
            raise ValueError(f"row {method!r} lacks task(s) {missing}")
        boxes = [Interval.printed(in_row.at[p, "value"], in_row.at[p, "decimals"]) for p in parts]
        point = sum(float(in_row.at[p, "value"]) for p in parts) / len(parts)
        entry = in_row.loc[total_task].copy()
        entry["task"] = total_task
        rows.append(_result_row(check, entry, point, mean_interval(boxes), definition))
    return _frame(rows)


def hidden_size_check(frame: pd.DataFrame, *, check: str = "hidden_size") -> pd.DataFrame:
    """Paper A: printed compression and feature utilisation against the hidden sizes.

    Definitions (paper A, Sec. 5.2-5.3 and the printed numbers): compression % =
    100·(h_initial − h_final)/h_initial, the share of hidden units pruned; feature
    utilisation % = 100·h_final/h_initial = 100 − compression.  Hidden sizes are counts of
    units, printed exactly, so the recomputed value is exact.

    Args:
        frame: long-format numbers with metrics ``hidden_initial``, ``hidden_final``,
            ``compression`` and ``utilisation`` per row.
        check: name written in the ``check`` column.
    """
    formulas = {
        "compression": ("100*(h_initial - h_final)/h_initial", lambda a, b: 100.0 * (a - b) / a),
        "utilisation": ("100*h_final/h_initial", lambda a, b: 100.0 * b / a),
    }
    rows: list[dict[str, object]] = []
    for method in dict.fromkeys(frame["row"]):
        in_row = frame[frame["row"] == method].set_index("metric")
        initial = float(in_row.at["hidden_initial", "value"])
        final = float(in_row.at["hidden_final", "value"])
        for metric, (text, formula) in formulas.items():
            exact = formula(initial, final)
            entry = in_row.loc[metric].copy()
            entry["metric"] = metric
            rows.append(
                _result_row(check, entry, exact, Interval.point(exact), f"{metric} = {text}")
            )
    return _frame(rows)


def summarise(checks: pd.DataFrame) -> pd.DataFrame:
    """Per check: how many printed numbers were recomputed, and how many disagree.

    Args:
        checks: a frame of :data:`RESULT_COLUMNS` rows (e.g. a paper's ``consistency.checks()``).

    Returns:
        One row per ``check`` with ``numbers``, ``consistent``, ``inconsistent`` and the
        ``findings`` (``table/row/task/metric`` of each inconsistent number, ``; ``-separated).
    """
    records = []
    for name, group in checks.groupby("check", sort=False):
        bad = group[~group["consistent"]]
        records.append(
            {
                "check": name,
                "numbers": len(group),
                "consistent": int(group["consistent"].sum()),
                "inconsistent": len(bad),
                "findings": "; ".join(
                    "/".join(part for part in (r.table, r.row, r.task, r.metric) if part)
                    for r in bad.itertuples()
                ),
            }
        )
    return pd.DataFrame.from_records(records)
