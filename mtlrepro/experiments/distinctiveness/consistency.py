"""Paper A's internal arithmetic: compression and utilisation of Tables 2 and 3, and Table 1's
average (:mod:`mtlrepro.consistency`); :func:`findings` groups and ranks the disagreements."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from mtlrepro import consistency as cs
from mtlrepro import paper_numbers


def _hidden(check: str, table: str, other: str) -> cs.CheckGroup:
    def run(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        return cs.hidden_size_check(tables["printed"], check=check)

    return cs.CheckGroup(
        check,
        {"printed": paper_numbers.table("A", table)},
        run,
        "printed",
        candidates=(paper_numbers.table("A", other).query("task == ''"),),
    )


def _average() -> cs.CheckGroup:
    def run(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        return cs.mean_check(tables["printed"], ["colour", "type", "id"], check="A_table1_average")

    return cs.CheckGroup(
        "A_table1_average", {"printed": paper_numbers.table("A", "Table 1")}, run, "printed"
    )


def groups() -> list[cs.CheckGroup]:
    """Paper A's checks with their inputs."""
    return [
        _hidden("A_table2_hidden_sizes", "Table 2", "Table 3"),
        _hidden("A_table3_hidden_sizes", "Table 3", "Table 2"),
        _average(),
    ]


def checks() -> pd.DataFrame:
    """Paper A: Tables 2 and 3 (compression, utilisation) and Table 1's average."""
    return pd.concat([g.results() for g in groups()], ignore_index=True)


def findings() -> pd.DataFrame:
    """Paper A's findings, ranked: real discrepancies first, 0.01-point rounding ones last."""
    return cs.findings(groups(), "A")
