"""Paper E's internal arithmetic: Table 2's "Total" column (:mod:`mtlrepro.consistency`)."""

from __future__ import annotations

import pandas as pd

from mtlrepro import paper_numbers
from mtlrepro.consistency import mean_check


def checks() -> pd.DataFrame:
    """Paper E: Table 2's "Total" column against the mean of its nine task columns."""
    frame = paper_numbers.table("E", "Table 2")
    parts = [t for t in dict.fromkeys(frame["task"]) if t != "all"]
    return mean_check(frame, parts, check="E_table2_total")
