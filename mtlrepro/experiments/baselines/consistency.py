"""Paper D's internal arithmetic (Eq. 10-11): Tables 2, 3, 4 and 6 recomputed from its absolute
numbers (Tables 11-14), with the rounding of printed numbers propagated
(:mod:`mtlrepro.consistency`).  Shown by the baselines notebook beside paper D's Table 2
layout; :func:`findings` groups the disagreements by cause (column swaps, rows from another
table) and ranks them."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from mtlrepro import consistency as cs
from mtlrepro import paper_numbers

DELTA_TABLES = ("Table 2", "Table 3", "Table 4", "Table 6")


def _group(check: str, printed: str, absolute: str, reference: str | None = None) -> cs.CheckGroup:
    """One Eq. 10-11 check: ``printed`` Δ table from ``absolute`` (against ``reference``)."""
    inputs = {
        "printed": paper_numbers.table("D", printed),
        "absolute": paper_numbers.table("D", absolute),
    }
    if reference is not None:
        inputs["reference"] = paper_numbers.table("D", reference)

    def run(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        return cs.relative_performance_check(
            tables["printed"], tables["absolute"], reference=tables.get("reference"), check=check
        )

    others = tuple(
        paper_numbers.table("D", t).query("metric == 'delta'")
        for t in DELTA_TABLES
        if t != printed
    )
    return cs.CheckGroup(check, inputs, run, "printed", ("absolute",), others)


def groups() -> list[cs.CheckGroup]:
    """Paper D's checks with their inputs: Tables 2/3/4 from 11/12/13, Table 6 from 14."""
    return [
        _group("D_table2_from_table11", "Table 2", "Table 11"),
        _group("D_table3_from_table12", "Table 3", "Table 12"),
        _group("D_table4_from_table13", "Table 4", "Table 13"),
        _group("D_table6_from_table14", "Table 6", "Table 14", reference="Table 11"),
    ]


def checks() -> pd.DataFrame:
    """Paper D, Eq. 10-11: Tables 2/3/4 from Tables 11/12/13, and Table 6 from Table 14."""
    return pd.concat([g.results() for g in groups()], ignore_index=True)


def findings() -> pd.DataFrame:
    """Paper D's findings, explained ones once, ranked (:func:`mtlrepro.consistency.findings`)."""
    return cs.findings(groups(), "D")
