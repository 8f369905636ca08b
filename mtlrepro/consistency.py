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

Explanations (:func:`explain`, :func:`findings`): each paper's ``consistency.groups()`` gives
its checks with their inputs (:class:`CheckGroup`), so a check can be re-run under a
hypothesis (:func:`hypotheses`: two columns or two rows of a table swapped -- values or
headers, two values of one row swapped, a row holding another table's numbers).  A hypothesis
that makes at least :data:`MIN_EXPLAINED` failing numbers agree and breaks no agreeing one is
reported once, with the re-run as evidence; unexplained failures stay listed one by one.
Findings are ranked by size, the ``rounding`` ones (within 0.01 + the last printed digit)
last; notebooks write them as ``findings.csv``.
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


# --------------------------------------------------------------------------------------------
# Explanations: one cause for many failing numbers, tested by re-running the check.
# --------------------------------------------------------------------------------------------

FINDING_COLUMNS: tuple[str, ...] = (
    "paper",
    "finding",
    "cause",
    "size",
    "kind",
    "checks",
    "evidence",
)
"""Columns of a paper's findings table (``findings.csv``), see :func:`findings`."""

ROUNDING_MARGIN = 0.01
"""A discrepancy is ``rounding`` when ``|difference| <= ROUNDING_MARGIN + 10^-decimals``."""

MIN_EXPLAINED = 2
"""A hypothesis must explain at least this many failing numbers: one number proves nothing."""

REAL = "real"
ROUNDING = "rounding"

_KEY = ["table", "row", "task", "metric"]


@dataclass(frozen=True)
class Hypothesis:
    """A reading of the printed tables under which a check is re-run.

    Attributes:
        cause: the finding if the hypothesis holds, e.g. "Table 6's depth and normal columns
            are swapped".
        inputs: the check's inputs edited as the hypothesis says.
    """

    cause: str
    inputs: Mapping[str, pd.DataFrame]


@dataclass(frozen=True)
class CheckGroup:
    """One check with its inputs, so that it can be re-run under a hypothesis.

    Attributes:
        check: the check's name (its ``check`` column).
        inputs: named long-format tables the check reads.
        run: ``run(inputs)`` -> a frame of :data:`RESULT_COLUMNS` rows.
        printed: the name of the input holding the printed (derived) numbers checked.
        sources: names of further inputs whose columns may be swapped (e.g. absolute numbers).
        candidates: long-format tables whose rows may stand in for a row of ``printed``
            (the same quantity printed elsewhere: another table, another run).
    """

    check: str
    inputs: Mapping[str, pd.DataFrame]
    run: Callable[[Mapping[str, pd.DataFrame]], pd.DataFrame]
    printed: str
    sources: tuple[str, ...] = ()
    candidates: tuple[pd.DataFrame, ...] = ()

    def results(self) -> pd.DataFrame:
        """The check on the inputs as printed."""
        return self.run(self.inputs)


def _columns(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """The (task, metric) columns of a long-format table, in order of appearance."""
    return list(dict.fromkeys(zip(frame["task"], frame["metric"], strict=True)))


def _label(column: tuple[str, str], columns: Sequence[tuple[str, str]]) -> str:
    """A column's name in words: the task, or the metric when tasks do not tell columns apart."""
    task, metric = column
    tasks = [t for t, _ in columns]
    if task and tasks.count(task) == 1:
        return task
    return f"{task} {metric}".strip()


def _swap_cells(frame: pd.DataFrame, mask_a: pd.Series, mask_b: pd.Series) -> pd.DataFrame:
    """Exchange ``value`` and ``decimals`` of the single cells selected by the two masks."""
    out = frame.copy()
    ia, ib = out.index[mask_a], out.index[mask_b]
    if len(ia) != 1 or len(ib) != 1:
        return out
    for field in ("value", "decimals"):
        va, vb = out.at[ia[0], field], out.at[ib[0], field]
        out.at[ia[0], field], out.at[ib[0], field] = vb, va
    return out


def _cell_mask(frame: pd.DataFrame, row: str, column: tuple[str, str]) -> pd.Series:
    return (frame["row"] == row) & (frame["task"] == column[0]) & (frame["metric"] == column[1])


Cell = tuple[str, str, str]
"""(row, task, metric) of a number in a long-format table."""


def column_swaps(
    frame: pd.DataFrame,
    table: str,
    allowed: Collection[tuple[str, str]] | None = None,
    suspect: Collection[tuple[str, str]] | None = None,
) -> list[Hypothesis]:
    """Hypotheses "two columns of ``table`` are swapped" (equivalently: their headers are).

    Args:
        frame: a long-format table.
        table: the table's name, for the cause.
        allowed: the (task, metric) columns that may move (default: all).
        suspect: one of the two columns must be among these (default: any).
    """
    columns = _columns(frame)
    movable = [c for c in columns if allowed is None or c in allowed]
    out = []
    for a, b in itertools.combinations(movable, 2):
        if suspect is not None and a not in suspect and b not in suspect:
            continue
        edited = frame
        for row in dict.fromkeys(frame["row"]):
            edited = _swap_cells(edited, _cell_mask(edited, row, a), _cell_mask(edited, row, b))
        cause = (
            f"{table}'s {_label(a, columns)} and {_label(b, columns)} columns are swapped "
            "(values or headers)"
        )
        out.append(Hypothesis(cause, {"frame": edited}))
    return out


def row_swaps(
    frame: pd.DataFrame, table: str, checked: Collection[Cell], suspect: Collection[str]
) -> list[Hypothesis]:
    """Hypotheses "the printed numbers of two rows of ``table`` are swapped" (row labels).

    Only the ``checked`` cells move (a row's inputs moving with it would prove nothing); one
    of the two rows must be ``suspect`` (have a failing number).
    """
    rows = list(dict.fromkeys(frame["row"]))
    columns = _columns(frame)
    out = []
    for a, b in itertools.combinations(rows, 2):
        if a not in suspect and b not in suspect:
            continue
        edited = frame
        for col in columns:
            if (a, *col) in checked and (b, *col) in checked:
                edited = _swap_cells(edited, _cell_mask(edited, a, col), _cell_mask(edited, b, col))
        out.append(Hypothesis(f"{table}'s rows {a!r} and {b!r} are swapped", {"frame": edited}))
    return out


def cell_swaps(
    frame: pd.DataFrame, table: str, checked: Collection[Cell], suspect: Collection[str]
) -> list[Hypothesis]:
    """Hypotheses "in one (``suspect``) row of ``table`` two checked values are swapped"."""
    columns = _columns(frame)
    out = []
    for row in dict.fromkeys(frame["row"]):
        if row not in suspect:
            continue
        for a, b in itertools.combinations(columns, 2):
            if (row, *a) not in checked or (row, *b) not in checked:
                continue
            ma, mb = _cell_mask(frame, row, a), _cell_mask(frame, row, b)
            cause = (
                f"{table}'s {row!r} row has its {_label(a, columns)} and "
                f"{_label(b, columns)} values swapped"
            )
            out.append(Hypothesis(cause, {"frame": _swap_cells(frame, ma, mb)}))
    return out


def row_substitutions(
    frame: pd.DataFrame,
    table: str,
    candidates: Sequence[pd.DataFrame],
    checked: Collection[Cell],
    suspect: Collection[str],
) -> list[Hypothesis]:
    """Hypotheses "a printed row of ``table`` holds the numbers of another row (another
    table or run)".

    The candidate row's values replace the ``checked`` cells of a ``suspect`` row that it
    shares (same task and metric); candidates sharing fewer than two such cells, or equal on
    all of them, are skipped.
    """
    out = []
    for source in candidates:
        if source.empty:
            continue
        src_table = str(source["table"].iloc[0])
        for src_row in dict.fromkeys(source["row"]):
            src = source[source["row"] == src_row].set_index(["task", "metric"])
            for row in dict.fromkeys(frame["row"]):
                if row not in suspect or (src_table == table and src_row == row):
                    continue
                edited = frame.copy()
                shared = changed = 0
                for idx in edited.index[edited["row"] == row]:
                    cell = (edited.at[idx, "task"], edited.at[idx, "metric"])
                    if (row, *cell) not in checked or cell not in src.index:
                        continue
                    shared += 1
                    if edited.at[idx, "value"] != src.at[cell, "value"]:
                        edited.at[idx, "value"] = src.at[cell, "value"]
                        edited.at[idx, "decimals"] = src.at[cell, "decimals"]
                        changed += 1
                if changed == 0 or shared < 2:
                    continue
                cause = f"{table}'s {row!r} row holds the numbers of {src_table}'s {src_row!r} row"
                out.append(Hypothesis(cause, {"frame": edited}))
    return out


def hypotheses(group: CheckGroup, base: pd.DataFrame | None = None) -> list[Hypothesis]:
    """The hypotheses tried for a group, most general first: column swaps of the printed
    table, then of the source tables, row swaps, single-row value swaps, rows from candidate
    tables.  Only hypotheses touching a failing number's row or column are generated.

    Args:
        group: the check and its inputs.
        base: the check's results as printed (default: re-run).
    """
    base = group.results() if base is None else base

    def place(name: str, hyps: list[Hypothesis]) -> list[Hypothesis]:
        return [Hypothesis(h.cause, {**group.inputs, name: h.inputs["frame"]}) for h in hyps]

    def table_of(name: str) -> str:
        return str(group.inputs[name]["table"].iloc[0])

    printed = group.inputs[group.printed]
    table = table_of(group.printed)
    mine = base[base["table"] == table]
    checked = set(zip(mine["row"], mine["task"], mine["metric"], strict=True))
    bad = mine[~mine["consistent"]]
    if bad.empty:
        return []
    suspect_rows = set(bad["row"])
    suspect_cols = set(zip(bad["task"], bad["metric"], strict=True))
    checked_cols = {(t, m) for _, t, m in checked}
    out = place(group.printed, column_swaps(printed, table, checked_cols, suspect_cols))
    for name in group.sources:
        source = group.inputs[name]
        tasks = {t for t, _ in suspect_cols}
        suspect = {c for c in _columns(source) if c[0] in tasks}
        out += place(name, column_swaps(source, table_of(name), None, suspect))
    out += place(group.printed, row_swaps(printed, table, checked, suspect_rows))
    out += place(group.printed, cell_swaps(printed, table, checked, suspect_rows))
    out += place(
        group.printed,
        row_substitutions(printed, table, group.candidates, checked, suspect_rows),
    )
    return out


def _keys(frame: pd.DataFrame) -> pd.Series:
    return frame[_KEY].astype(str).agg("/".join, axis=1)


def _name(row: pd.Series) -> str:
    return "/".join(str(row[k]) for k in _KEY if str(row[k]))


def discrepancy_kind(result: pd.Series) -> str:
    """``rounding`` when ``|difference| <= ROUNDING_MARGIN + 10^-decimals`` (the printed
    number's last digit), else ``real``."""
    unit = float(result["paper_high"]) - float(result["paper_low"])
    small = abs(float(result["difference"])) <= ROUNDING_MARGIN + unit + FLOAT_SLACK
    return ROUNDING if small else REAL


@dataclass(frozen=True)
class Explanation:
    """A hypothesis that explains failing numbers of a check without breaking passing ones."""

    cause: str
    explained: tuple[str, ...]
    failing: int
    agreeing: int
    numbers: int


def explain(group: CheckGroup, min_explained: int = MIN_EXPLAINED) -> list[Explanation]:
    """Hypotheses that explain failing numbers of ``group``'s check, greedily.

    A hypothesis is accepted when, re-running the check under it, at least ``min_explained``
    of the still unexplained failing numbers agree within rounding and no number that agreed
    as printed stops agreeing.  The one explaining most is taken (ties: the more general, see
    :func:`hypotheses`); then the rest of the failures are tried again.

    Returns:
        The accepted explanations, in order; the failures they cover are ``explained``
        (``table/row/task/metric`` keys).
    """
    base = group.results()
    base_keys = _keys(base)
    if base["consistent"].all():
        return []
    failing = set(base_keys[~base["consistent"]])
    passing = set(base_keys[base["consistent"]])
    tried = []
    for hyp in hypotheses(group, base):
        result = group.run(hyp.inputs)
        keys = _keys(result)
        good = set(keys[result["consistent"]])
        if passing - good:
            continue
        tried.append((hyp.cause, failing & good, len(result), int(result["consistent"].sum())))
    out: list[Explanation] = []
    remaining = set(failing)
    while remaining:
        best = None
        for cause, fixed, numbers, agreeing in tried:
            gain = fixed & remaining
            if len(gain) >= min_explained and (best is None or len(gain) > len(best[1])):
                best = (cause, gain, numbers, agreeing)
        if best is None:
            break
        cause, gain, numbers, agreeing = best
        ordered = tuple(k for k in base_keys if k in gain)
        out.append(Explanation(cause, ordered, len(failing), agreeing, numbers))
        remaining -= gain
    return out


def findings(groups: Sequence[CheckGroup], paper: str) -> pd.DataFrame:
    """A paper's findings: one row per explained group of failures, one per unexplained one.

    ``size`` is the largest ``|difference|`` (printed minus recomputed, in the numbers' own
    units, i.e. points for percentages) the finding covers; ``kind`` is ``real`` or
    ``rounding`` (every covered number within :func:`discrepancy_kind`'s margin).  Rows are
    ranked: real findings by size, then rounding ones by size; ``finding`` numbers them.
    ``checks`` lists the covered numbers (count and ``check: table/row/task/metric``);
    ``evidence`` names the re-run that confirms an explanation, or the recomputation.

    Args:
        groups: the paper's checks (its ``consistency.groups()``).
        paper: the paper letter.
    """
    records: list[dict[str, object]] = []
    for group in groups:
        base = group.results()
        keyed = base.assign(_key=_keys(base)).set_index("_key")
        covered: set[str] = set()
        for exp in explain(group):
            rows = keyed.loc[list(exp.explained)]
            covered |= set(exp.explained)
            kinds = {discrepancy_kind(r) for _, r in rows.iterrows()}
            records.append(
                {
                    "paper": paper,
                    "cause": exp.cause,
                    "size": float(rows["difference"].abs().max()),
                    "kind": REAL if REAL in kinds else ROUNDING,
                    "checks": f"{len(rows)}: "
                    + "; ".join(f"{group.check}: {_name(r)}" for _, r in rows.iterrows()),
                    "evidence": (
                        f"re-running {group.check} under this hypothesis: "
                        f"{exp.agreeing} of {exp.numbers} numbers agree within rounding "
                        f"(as printed: {exp.numbers - exp.failing}); it explains "
                        f"{len(rows)} of the {exp.failing} disagreeing numbers and breaks none"
                    ),
                }
            )
        for key, r in keyed[~keyed["consistent"]].iterrows():
            if key in covered:
                continue
            records.append(
                {
                    "paper": paper,
                    "cause": (
                        f"unexplained: {_name(r)} printed {r['paper_value']:g}, "
                        f"recomputed {r['recomputed']:.4g}"
                    ),
                    "size": abs(float(r["difference"])),
                    "kind": discrepancy_kind(r),
                    "checks": f"1: {group.check}: {_name(r)}",
                    "evidence": (
                        f"{r['definition']}: recomputed interval [{r['recomputed_low']:.4g}, "
                        f"{r['recomputed_high']:.4g}] misses the printed "
                        f"[{r['paper_low']:.4g}, {r['paper_high']:.4g}]; no hypothesis tried "
                        "explains it"
                    ),
                }
            )
    return rank_findings(pd.DataFrame.from_records(records, columns=list(FINDING_COLUMNS)))


def rank_findings(frame: pd.DataFrame) -> pd.DataFrame:
    """Real findings first, each part by decreasing size; ``finding`` renumbered
    ``<paper>1, <paper>2, ...`` (stable for equal sizes)."""
    order = frame.assign(_rounding=frame["kind"] == ROUNDING).sort_values(
        ["_rounding", "size"], ascending=[True, False], kind="stable"
    )
    out = order.drop(columns="_rounding").reset_index(drop=True)
    out["finding"] = out["paper"].astype(str) + (out.groupby("paper").cumcount() + 1).astype(str)
    return out[list(FINDING_COLUMNS)]
