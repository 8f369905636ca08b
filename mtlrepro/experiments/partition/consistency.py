"""Paper E's internal arithmetic: Table 2's "Total" column (:mod:`mtlrepro.consistency`)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from mtlrepro import consistency as cs
from mtlrepro import paper_numbers


def groups() -> list[cs.CheckGroup]:
    """Paper E's check with its input: Table 2's "Total" against its nine task columns."""
    frame = paper_numbers.table("E", "Table 2")
    parts = [t for t in dict.fromkeys(frame["task"]) if t != "all"]

    def run(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        return cs.mean_check(tables["printed"], parts, check="E_table2_total")

    return [cs.CheckGroup("E_table2_total", {"printed": frame}, run, "printed")]


def checks() -> pd.DataFrame:
    """Paper E: Table 2's "Total" column against the mean of its nine task columns."""
    return pd.concat([g.results() for g in groups()], ignore_index=True)


def findings() -> pd.DataFrame:
    """Paper E's findings, ranked (:func:`mtlrepro.consistency.findings`)."""
    return cs.findings(groups(), "E")
