"""The five papers' reported numbers, transcribed once as data (``<paper>.csv`` beside this file).

Notebooks and claims read the papers' numbers from here instead of retyping them.

Papers (id -- authors, title -- what is transcribed):

* ``A`` -- Singh, "Analysing Efficiency of Deep Multi-Task Networks Using Distinctiveness
  Pruning" -- Tables 1-3, the pink-colour share of Sec. 2.2 and P(type | pink) of Eq. 2.
* ``B`` -- Upadhyay et al., "Less is More -- Towards parsimonious multi-task models using
  structured sparsity" -- Tables 1-3 (mean ± std) and the inference-time gains stated for
  Fig. 3(d).
* ``C`` -- Ren & Shi, "Learning Compact Neural Networks with Deep Overparameterised
  Multitask Learning" -- Tables 1-3.
* ``D`` -- Choi & Im, "Dynamic Neural Network for Multi-Task Learning Searching across
  Diverse Network Topologies" -- Tables 1-6 and 10-14 (Tables 7-9 are architecture and
  hyperparameters, not results) and the numbers stated in Secs. 4.2-4.4.
* ``E`` -- Newell et al., "Feature Partitioning for Efficient Multi-Task Architectures" --
  Tables 1-2.

Each CSV is long format, one printed number per line, with the columns

* ``table`` -- where the number is printed (``"Table 2"``, ``"Section 4.3"``, ``"Eq. 2"``);
* ``row`` -- the method or setting as printed, cleaned of LaTeX debris and citation markers
  (``"Ours (M=7)"``, ``"Cross-Stitch"``; paper D's "Single Task" is spelt "Single-Task"
  everywhere so that its tables join);
* ``task`` -- canonical task name (``segmentation``, ``depth``, ``normal``, ``edge``,
  ``saliency``, ``parts``, a classification task such as ``colour`` / ``type`` / ``id``,
  ``male`` / ``smile`` or a Visual-Decathlon domain), ``"all"`` for an average over tasks,
  ``""`` when the number belongs to no task (parameters, sparsity);
* ``metric`` -- the metric names of :mod:`mtlrepro.metrics` where they apply (``miou``,
  ``abs_err``, ``delta1``, ``within_11_25``, ``cosine``, ``accuracy`` ...), ``delta`` for the
  relative performance Δ in % (paper D, Eq. 10-11), ``params``, and snake_case names for the
  rest (``group_sparsity``, ``param_sparsity``, ``hidden_initial``, ``hidden_final``,
  ``compression``, ``utilisation``, ``correlation``, ``graph_depth`` ...);
* ``value`` -- the number exactly as printed (a leading ``+`` dropped, trailing zeros kept in
  the file so that :func:`load` knows the printed precision);
* ``std`` -- the printed standard deviation of a ``mean ± std`` cell, else empty;
* ``unit`` -- ``%``, ``°``, ``M`` (millions of parameters), ``x`` (multiples of the
  shared-bottom model's parameter count, paper D), ``ms``, or empty (plain numbers and
  fractions of 1 -- paper B prints IoU, cosine and accuracy and paper C prints "within t" as
  fractions; their ``note`` says so);
* ``lower_is_better`` -- ``true`` / ``false`` where the paper prints ↓ / ↑, empty where it
  prints no arrow (paper D, Table 4's Δ_norm is printed with ↓ and kept so);
* ``note`` -- what the reader of the number should know (printed header, dataset, caveats).

Transcription notes: paper B's λ values were lost in the text extraction, so its rows are
labelled ``lambda=0``, ``lambda_1`` and ``lambda_2`` (the table's first, second and third λ),
and its arrows were lost too, so its ``lower_is_better`` is empty.  Paper D's Table 13 edge
column is printed only as "Mean ↓" (metric ``mean_error``).
Paper D's Tables 6 and 10 are transcribed with their printed header order (sem, dep, norm);
Table 6's "Ours (M=7)" row equals Table 2's (sem, norm, dep) values, so the two headers look
swapped -- :mod:`mtlrepro.consistency` reports it.  Paper C's Table 2 (COCO) is transcribed
although its experiment is out of reach here.
"""

from __future__ import annotations

import functools
from importlib import resources

import pandas as pd

from mtlrepro.config import ConfigError, check_choice

PAPERS: dict[str, str] = {
    "A": "Analysing Efficiency of Deep Multi-Task Networks Using Distinctiveness Pruning",
    "B": "Less is More - Towards parsimonious multi-task models using structured sparsity",
    "C": "Learning Compact Neural Networks with Deep Overparameterised Multitask Learning",
    "D": "Dynamic Neural Network for Multi-Task Learning Searching across Diverse Network "
    "Topologies",
    "E": "Feature Partitioning for Efficient Multi-Task Architectures",
}
CSV_COLUMNS: tuple[str, ...] = (
    "table",
    "row",
    "task",
    "metric",
    "value",
    "std",
    "unit",
    "lower_is_better",
    "note",
)
KEY: tuple[str, ...] = ("table", "row", "task", "metric")
_BOOL = {"true": True, "false": False, "": pd.NA}


def _decimals(text: str) -> int:
    """Number of printed decimal places of a number written as ``text`` (``"0.20"`` -> 2)."""
    return len(text.split(".", 1)[1]) if "." in text else 0


@functools.cache
def _read(paper: str) -> pd.DataFrame:
    """Parse and validate ``<paper>.csv`` (cached; callers get copies)."""
    source = resources.files(__package__).joinpath(f"{paper}.csv")
    with resources.as_file(source) as path:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    if tuple(raw.columns) != CSV_COLUMNS:
        raise ValueError(f"{paper}.csv: columns {list(raw.columns)}, expected {list(CSV_COLUMNS)}")
    bad_bool = sorted(set(raw["lower_is_better"]) - set(_BOOL))
    if bad_bool:
        raise ValueError(f"{paper}.csv: lower_is_better must be true/false/empty; got {bad_bool}")
    duplicated = raw[raw.duplicated(list(KEY), keep=False)]
    if not duplicated.empty:
        raise ValueError(f"{paper}.csv: duplicate keys:\n{duplicated[list(KEY)]}")
    frame = pd.DataFrame(
        {
            "paper": paper,
            "table": raw["table"],
            "row": raw["row"],
            "task": raw["task"],
            "metric": raw["metric"],
            "value": pd.to_numeric(raw["value"], errors="raise").astype("float64"),
            "std": pd.to_numeric(raw["std"].replace("", None), errors="raise").astype("float64"),
            "unit": raw["unit"],
            "lower_is_better": pd.array([_BOOL[b] for b in raw["lower_is_better"]], "boolean"),
            "note": raw["note"],
            "decimals": raw["value"].map(_decimals).astype("int64"),
        }
    )
    return frame


def load(paper: str) -> pd.DataFrame:
    """All transcribed numbers of one paper, long format.

    Columns: ``paper``, ``table``, ``row``, ``task``, ``metric``, ``value`` (float), ``std``
    (float, NaN when none was printed), ``unit``, ``lower_is_better`` (nullable boolean),
    ``note`` and ``decimals`` (the number of decimal places printed, for rounding intervals).

    Args:
        paper: paper id, one of :data:`PAPERS` (``"A"`` ... ``"E"``).
    """
    check_choice("paper", paper, tuple(PAPERS))
    return _read(paper).copy()


def tables(paper: str) -> list[str]:
    """Names of the transcribed tables of ``paper`` in file order.

    Args:
        paper: paper id, one of :data:`PAPERS`.
    """
    return list(load(paper)["table"].unique())


def table(paper: str, table_name: str) -> pd.DataFrame:
    """The long-format numbers of one table (e.g. ``table("D", "Table 11")``).

    Args:
        paper: paper id, one of :data:`PAPERS`.
        table_name: as in the ``table`` column, e.g. ``"Table 2"``.
    """
    frame = load(paper)
    check_choice(f"table of paper {paper}", table_name, list(frame["table"].unique()))
    return frame[frame["table"] == table_name].reset_index(drop=True)


def wide(paper: str, table_name: str) -> pd.DataFrame:
    """One table as printed: rows × (task, metric) columns of values, in the paper's order.

    Args:
        paper: paper id, one of :data:`PAPERS`.
        table_name: as in the ``table`` column, e.g. ``"Table 11"``.
    """
    long = table(paper, table_name)
    rows = list(long["row"].unique())
    columns = list(dict.fromkeys(zip(long["task"], long["metric"], strict=True)))
    out = long.pivot(index="row", columns=["task", "metric"], values="value")
    out = out.reindex(
        index=rows, columns=pd.MultiIndex.from_tuples(columns, names=["task", "metric"])
    )
    out.index.name = "row"
    return out


def value(paper: str, table_name: str, row: str, task: str, metric: str) -> float:
    """One printed number; a missing entry raises :class:`ConfigError` listing what exists.

    Args:
        paper: paper id, one of :data:`PAPERS`.
        table_name: e.g. ``"Table 2"``.
        row: method / setting as in the ``row`` column, e.g. ``"Shared Bottom"``.
        task: task name, ``"all"`` or ``""``.
        metric: metric name, e.g. ``"delta"``.
    """
    long = table(paper, table_name)
    check_choice(f"row of paper {paper} {table_name}", row, list(long["row"].unique()))
    in_row = long[long["row"] == row]
    hit = in_row[(in_row["task"] == task) & (in_row["metric"] == metric)]
    if hit.empty:
        pairs = ", ".join(
            f"({t!r}, {m!r})" for t, m in zip(in_row["task"], in_row["metric"], strict=True)
        )
        raise ConfigError(
            f"paper {paper} {table_name} row {row!r} has no (task, metric) = ({task!r}, "
            f"{metric!r}); available: {pairs}"
        )
    return float(hit["value"].iloc[0])
