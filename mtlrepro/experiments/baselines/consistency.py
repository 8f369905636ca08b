"""Paper D's internal arithmetic (Eq. 10-11): Tables 2, 3, 4 and 6 recomputed from its absolute
numbers (Tables 11-14), with the rounding of printed numbers propagated
(:mod:`mtlrepro.consistency`).  Shown by the baselines notebook beside paper D's Table 2
layout."""

from __future__ import annotations

import pandas as pd

from mtlrepro import paper_numbers
from mtlrepro.consistency import relative_performance_check


def checks() -> pd.DataFrame:
    """Paper D, Eq. 10-11: Tables 2/3/4 from Tables 11/12/13, and Table 6 from Table 14."""
    nyu = paper_numbers.table("D", "Table 11")
    return pd.concat(
        [
            relative_performance_check(
                paper_numbers.table("D", "Table 2"), nyu, check="D_table2_from_table11"
            ),
            relative_performance_check(
                paper_numbers.table("D", "Table 3"),
                paper_numbers.table("D", "Table 12"),
                check="D_table3_from_table12",
            ),
            relative_performance_check(
                paper_numbers.table("D", "Table 4"),
                paper_numbers.table("D", "Table 13"),
                check="D_table4_from_table13",
            ),
            relative_performance_check(
                paper_numbers.table("D", "Table 6"),
                paper_numbers.table("D", "Table 14"),
                reference=nyu,
                check="D_table6_from_table14",
            ),
        ],
        ignore_index=True,
    )
