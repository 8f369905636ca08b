"""Paper A's internal arithmetic: compression and utilisation of Tables 2 and 3, and Table 1's
average (:mod:`mtlrepro.consistency`)."""

from __future__ import annotations

import pandas as pd

from mtlrepro import paper_numbers
from mtlrepro.consistency import hidden_size_check, mean_check


def checks() -> pd.DataFrame:
    """Paper A: Tables 2 and 3 (compression, utilisation) and Table 1's average."""
    return pd.concat(
        [
            hidden_size_check(paper_numbers.table("A", "Table 2"), check="A_table2_hidden_sizes"),
            hidden_size_check(paper_numbers.table("A", "Table 3"), check="A_table3_hidden_sizes"),
            mean_check(
                paper_numbers.table("A", "Table 1"),
                ["colour", "type", "id"],
                check="A_table1_average",
            ),
        ],
        ignore_index=True,
    )
