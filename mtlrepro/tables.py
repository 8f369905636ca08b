"""Tables as the rendered reports show them.

A notebook that ends a cell with a plain ``DataFrame`` gets pandas' HTML view, which cuts every
cell after 50 characters ("…", so a claim's paper value and ours cannot be read) and prints
``NaN`` wherever a combination lacks a task.  :func:`show` renders the frame without either:
every cell in full, wrapped within its column, missing values blank, numbers rounded for reading
(the CSV files keep every digit).
"""

from __future__ import annotations

from collections.abc import Sequence
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
