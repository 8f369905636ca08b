"""Tables as the rendered reports show them.

A notebook that ends a cell with a plain ``DataFrame`` gets pandas' HTML view, which cuts every
cell after 50 characters ("…", so a claim's paper value and ours cannot be read) and prints
``NaN`` wherever a combination lacks a task.  :func:`show` renders the frame without either:
every cell in full, wrapped within its column, missing values blank, numbers rounded for reading
(the CSV files keep every digit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict

import pandas as pd
from pandas.io.formats.style import Styler

from mtlrepro.config import ConfigError, check_range
from mtlrepro.report import Claim

CLAIM_COLUMNS: tuple[str, ...] = ("claim_id", "claim", "paper_value", "our_value", "verdict",
                                  "details")
"""The columns of a claims table a reader needs (profile and dataset are in the notebook)."""
_CELL_STYLE = {"white-space": "normal", "text-align": "left", "vertical-align": "top"}


def show(frame: pd.DataFrame, *, digits: int = 3, max_width_em: int = 40) -> Styler:
    """``frame`` for display: full cells, blank for missing values, floats to ``digits``
    significant digits, the index shown only when it carries names or non-default labels.

    Args:
        frame: the table.
        digits: significant digits of floats (``>= 1``).
        max_width_em: widest a column grows before its text wraps, in em (``>= 5``).
    """
    if not isinstance(frame, pd.DataFrame):
        raise ConfigError(f"show needs a DataFrame; got {type(frame).__name__}")
    check_range("digits", digits, 1, integer=True)
    check_range("max_width_em", max_width_em, 5, integer=True)
    styler = frame.style.format(
        lambda v: f"{v:.{digits}g}" if isinstance(v, float) else str(v), na_rep=""
    )
    default_index = frame.index.equals(pd.RangeIndex(len(frame))) and frame.index.name is None
    if default_index:
        styler = styler.hide(axis="index")
    return styler.set_properties(**_CELL_STYLE, **{"max-width": f"{max_width_em}em"})


def show_claims(claims: Sequence[Claim]) -> Styler:
    """A claims scorecard (claims and checks) for display: :data:`CLAIM_COLUMNS`, in full.

    Args:
        claims: the claims and checks, in order.
    """
    rows = [asdict(c) for c in claims]
    if not rows:
        raise ConfigError("show_claims needs at least one claim")
    frame = pd.DataFrame(rows)
    kinds = frame["kind"].unique()
    columns = [*CLAIM_COLUMNS[:1], *(["kind"] if len(kinds) > 1 else []), *CLAIM_COLUMNS[1:]]
    return show(frame[columns], max_width_em=30)


def compare_claims(named: Mapping[str, Sequence[Claim]]) -> pd.DataFrame:
    """The same claims decided on several runs side by side (e.g. from scratch and pretrained):
    one row per claim, its verdict and our value under each name.

    Args:
        named: run name -> its claims (the same ids in each; checks are left out).

    Returns:
        Columns ``claim_id``, ``claim``, then ``<name>`` (the verdict) and ``<name>: ours`` per
        name, in the order given.
    """
    if not named:
        raise ConfigError("compare_claims needs at least one named set of claims")
    frames = []
    for name, claims in named.items():
        rows = [c for c in claims if not c.is_check]
        frames.append(
            pd.DataFrame(
                {
                    "claim_id": [c.claim_id for c in rows],
                    "claim": [c.claim for c in rows],
                    name: [c.verdict for c in rows],
                    f"{name}: ours": [c.our_value for c in rows],
                }
            )
        )
    ids = [list(f["claim_id"]) for f in frames]
    if any(i != ids[0] for i in ids):
        raise ConfigError(f"the named claims differ in their ids: {ids}")
    out = frames[0]
    for frame in frames[1:]:
        out = out.merge(frame.drop(columns="claim"), on="claim_id")
    return out


def verdict_changes(table: pd.DataFrame | None, before: str, after: str) -> str | None:
    """A sentence naming the claims whose verdict differs between two columns of
    :func:`compare_claims`' table, e.g. from scratch and pretrained.

    Args:
        table: :func:`compare_claims`' frame, or ``None`` when there is none.
        before: the first run's name (a column of ``table``).
        after: the second run's name.

    Returns:
        The sentence, or ``None`` when ``table`` is ``None`` or has no run ``after`` (only the
        first run was made).
    """
    if table is None or after not in table.columns:
        return None
    if before not in table.columns:
        raise ConfigError(f"no run named {before!r} in the table; it has {list(table.columns)}")
    changed = table[table[before] != table[after]]
    if changed.empty:
        return f"{after.capitalize()} instead of {before}, every claim keeps its verdict."
    moves = ", ".join(
        f"{row['claim_id']} ({row[before]} → {row[after]})" for _, row in changed.iterrows()
    )
    kept = len(table) - len(changed)
    return (
        f"{after.capitalize()} instead of {before} changes {moves}; {kept} other claim"
        f"{'s keep their' if kept != 1 else ' keeps its'} verdict."
    )
