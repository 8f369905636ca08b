"""Tests for mtlrepro.consistency: interval arithmetic and the papers' internal arithmetic."""

from __future__ import annotations

import pandas as pd
import pytest

from mtlrepro import consistency as cs
from mtlrepro import paper_numbers as pn
from mtlrepro.consistency import Interval
from mtlrepro.experiments.baselines import consistency as paper_d
from mtlrepro.experiments.distinctiveness import consistency as paper_a
from mtlrepro.experiments.partition import consistency as paper_e
from mtlrepro.metrics import relative_performance

# Float comparisons of recomputed numbers: double precision on a handful of terms.
TOL = 1e-9

# The rows that disagree with their inputs beyond rounding (the findings reported for the
# results); pinned so that an edit of the data or of the checks cannot change them silently.
KNOWN_FINDINGS = {
    ("D_table2_from_table11", "AdaShare", "segmentation", "delta"),
    ("D_table2_from_table11", "AdaShare", "normal", "delta"),
    ("D_table3_from_table12", "Ours (M=7)", "segmentation", "delta"),
    *(
        ("D_table6_from_table14", row, task, "delta")
        for row in (
            "Ours (M=7)",
            "w/o flow-restriction",
            "w/o read-in/out",
            "w/o flow-based reduction",
            "w/o L_sq",
        )
        for task in ("depth", "normal")
    ),
    ("A_table1_average", "D-Prune", "all", "accuracy"),
    *(
        (check, row, "", metric)
        for check, row in (
            ("A_table2_hidden_sizes", "ResNet-50"),
            ("A_table2_hidden_sizes", "NFNet-L0"),
            ("A_table2_hidden_sizes", "VGG-11"),
            ("A_table3_hidden_sizes", "3 tasks"),
        )
        for metric in ("compression", "utilisation")
    ),
}


def test_printed_interval_is_the_half_unit_rounding_box() -> None:
    box = Interval.printed(0.25, 2)
    assert box.low == pytest.approx(0.245, abs=TOL)
    assert box.high == pytest.approx(0.255, abs=TOL)
    assert Interval.printed(3.0, 0) == Interval(2.5, 3.5)


def test_interval_rejects_reversed_bounds() -> None:
    with pytest.raises(ValueError, match="reversed"):
        Interval(1.0, 0.0)


def test_overlap_is_closed_at_the_boundary() -> None:
    assert Interval(0.0, 1.0).overlaps(Interval(1.0, 2.0))
    assert not Interval(0.0, 1.0).overlaps(Interval(1.001, 2.0))


def test_relative_change_takes_the_extremes_over_the_box() -> None:
    # Higher is better: (M - R)/R ranges over [11/10 - 1, 12/10 - 1] for R fixed at 10.
    up = cs.relative_change(Interval(11.0, 12.0), Interval.point(10.0), lower_is_better=False)
    assert (up.low, up.high) == pytest.approx((10.0, 20.0), abs=TOL)
    down = cs.relative_change(Interval(11.0, 12.0), Interval.point(10.0), lower_is_better=True)
    assert (down.low, down.high) == pytest.approx((-20.0, -10.0), abs=TOL)
    # The reference box widens it: the extremes are at opposite corners.
    both = cs.relative_change(Interval(11.0, 12.0), Interval(8.0, 10.0), lower_is_better=False)
    assert (both.low, both.high) == pytest.approx((10.0, 50.0), abs=TOL)


def test_relative_change_rejects_a_non_positive_reference() -> None:
    with pytest.raises(ValueError, match="not positive"):
        cs.relative_change(Interval.point(1.0), Interval(-0.05, 0.05), lower_is_better=False)


def test_relative_performance_interval_points_match_a_hand_computation() -> None:
    # Paper D Table 11, Shared Bottom against Single-Task, segmentation only (Eq. 10-11).
    scores = {"segmentation": {"miou": Interval.point(24.1), "pixel_acc": Interval.point(57.2)}}
    reference = {"segmentation": {"miou": Interval.point(27.5), "pixel_acc": Interval.point(58.9)}}
    result = cs.relative_performance_interval(scores, reference, set())
    expected = 50.0 * ((24.1 - 27.5) / 27.5 + (57.2 - 58.9) / 58.9)
    assert result["segmentation"].low == pytest.approx(expected, abs=TOL)
    assert result["all"].high == pytest.approx(expected, abs=TOL)


def test_d_table2_check_has_every_method_row_and_task() -> None:
    result = paper_d.checks()
    table2 = result[result["check"] == "D_table2_from_table11"]
    printed = pn.table("D", "Table 2")
    assert list(dict.fromkeys(table2["row"])) == list(dict.fromkeys(printed["row"]))
    assert len(table2) == 11 * 4  # 11 methods x (sem, norm, dep, Delta_T)
    assert set(table2["task"]) == {"segmentation", "normal", "depth", "all"}


def test_shared_bottom_row_of_d_table2_is_consistent() -> None:
    result = paper_d.checks()
    row = result[
        (result["check"] == "D_table2_from_table11") & (result["row"] == "Shared Bottom")
    ].set_index("task")
    assert row.loc[["segmentation", "normal", "depth", "all"], "paper_value"].tolist() == [
        -7.6,
        7.5,
        5.2,
        1.7,
    ]
    assert row["consistent"].all()
    # Point estimates from the printed inputs (hand-checked): -7.62, +7.47, +5.17, +1.67.
    assert row.at["segmentation", "recomputed"] == pytest.approx(-7.625, abs=1e-3)
    assert row.at["all", "recomputed"] == pytest.approx(1.672, abs=1e-3)


def test_reference_row_recomputes_to_exactly_zero() -> None:
    result = paper_d.checks()
    single = result[result["row"] == "Single-Task"]
    assert len(single) == 4 + 3 + 6  # Tables 2, 3, 4
    assert (single[["recomputed", "recomputed_low", "recomputed_high"]] == 0.0).all().all()


def test_perturbed_absolute_input_is_detected() -> None:
    deltas = pn.table("D", "Table 2")
    absolute = pn.table("D", "Table 11")
    clean = cs.relative_performance_check(deltas, absolute)
    assert clean[clean["row"] == "Shared Bottom"]["consistent"].all()
    hit = (absolute["row"] == "Shared Bottom") & (absolute["metric"] == "miou")
    absolute.loc[hit, "value"] = 26.1  # printed 24.1
    perturbed = cs.relative_performance_check(deltas, absolute).set_index(["row", "task"])
    assert not perturbed.at[("Shared Bottom", "segmentation"), "consistent"]
    assert perturbed.at[("Shared Bottom", "depth"), "consistent"]


def test_perturbed_printed_delta_is_detected() -> None:
    deltas = pn.table("D", "Table 2")
    hit = (deltas["row"] == "Shared Bottom") & (deltas["task"] == "depth")
    deltas.loc[hit, "value"] = 6.5  # printed +5.2; recomputed range is about [4.0, 6.3]
    result = cs.relative_performance_check(deltas, pn.table("D", "Table 11"))
    flagged = result[~result["consistent"]]
    assert ("Shared Bottom", "depth") in set(zip(flagged["row"], flagged["task"], strict=True))


@pytest.mark.parametrize(
    ("delta_table", "absolute_table"),
    [("Table 2", "Table 11"), ("Table 3", "Table 12"), ("Table 4", "Table 13")],
)
def test_point_estimate_agrees_with_metrics_relative_performance(
    delta_table: str, absolute_table: str
) -> None:
    absolute = pn.table("D", absolute_table)
    result = cs.relative_performance_check(pn.table("D", delta_table), absolute)
    measured = absolute[absolute["task"] != ""]
    lower = set(measured.loc[measured["lower_is_better"].astype(bool), "metric"])

    def scores(row: str) -> dict[str, dict[str, float]]:
        entries = measured[measured["row"] == row]
        out: dict[str, dict[str, float]] = {}
        for task, metric, value in zip(
            entries["task"], entries["metric"], entries["value"], strict=True
        ):
            out.setdefault(task, {})[metric] = float(value)
        return out

    reference = scores("Single-Task")
    for row in dict.fromkeys(result["row"]):
        theirs = relative_performance(scores(row), reference, lower)
        ours = result[result["row"] == row].set_index("task")["recomputed"]
        for task, value in ours.items():
            assert value == pytest.approx(theirs[task], abs=TOL), (row, task)


def test_table6_findings_vanish_when_its_dep_and_norm_headers_are_swapped() -> None:
    # Evidence for the finding: Table 6's printed columns 2-3 are (norm, dep), not (dep, norm).
    deltas = pn.table("D", "Table 6")
    renamed = deltas["task"].map({"depth": "normal", "normal": "depth"})
    deltas["task"] = renamed.fillna(deltas["task"])
    result = cs.relative_performance_check(
        deltas, pn.table("D", "Table 14"), reference=pn.table("D", "Table 11")
    )
    assert result["consistent"].all()


def test_hidden_size_definitions_of_paper_a() -> None:
    result = paper_a.checks().set_index(["check", "row", "metric"])
    key = ("A_table2_hidden_sizes", "EfficientNet-B0")
    assert result.at[(*key, "compression"), "recomputed"] == pytest.approx(100 * 19 / 128)
    assert result.at[(*key, "utilisation"), "recomputed"] == pytest.approx(100 * 109 / 128)
    # 76/128 = 59.375 exactly: printed 59.37 sits on its rounding interval's edge.
    assert result.at[("A_table3_hidden_sizes", "1 task", "utilisation"), "consistent"]


def test_paper_e_total_is_the_mean_of_the_nine_tasks() -> None:
    result = paper_e.checks().set_index("row")
    independent = [53.2, 74.1, 97.8, 49.4, 99.7, 78.3, 87.7, 94.3, 77.1]
    assert result.at["independent", "recomputed"] == pytest.approx(sum(independent) / 9)
    assert result["consistent"].all()
    assert len(result) == 4


def test_all_checks_is_tidy_and_reports_exactly_the_known_findings() -> None:
    result = pd.concat([paper_d.checks(), paper_a.checks(), paper_e.checks()], ignore_index=True)
    assert list(result.columns) == list(cs.RESULT_COLUMNS)
    assert result["consistent"].dtype == bool
    assert set(result["check"]) == {
        "D_table2_from_table11",
        "D_table3_from_table12",
        "D_table4_from_table13",
        "D_table6_from_table14",
        "A_table2_hidden_sizes",
        "A_table3_hidden_sizes",
        "A_table1_average",
        "E_table2_total",
    }
    assert (result["recomputed_low"] <= result["recomputed_high"]).all()
    difference = result["paper_value"] - result["recomputed"]
    pd.testing.assert_series_equal(result["difference"], difference, check_names=False)
    flagged = result[~result["consistent"]]
    found = set(
        zip(flagged["check"], flagged["row"], flagged["task"], flagged["metric"], strict=True)
    )
    assert found == KNOWN_FINDINGS


def test_summary_counts_every_number_and_names_each_finding():
    checks = paper_d.checks()
    summary = cs.summarise(checks).set_index("check")
    assert summary["numbers"].sum() == len(checks)
    assert (summary["consistent"] + summary["inconsistent"] == summary["numbers"]).all()
    table2 = summary.loc["D_table2_from_table11"]
    assert table2["inconsistent"] == 2
    assert table2["findings"] == (
        "Table 2/AdaShare/segmentation/delta; Table 2/AdaShare/normal/delta"
    )


# --- explanations and ranked findings ------------------------------------------------------

_TASKS = ("seg", "dep", "norm")


def _long(
    table: str, rows: dict[str, dict[str, float]], metric: str, decimals: int
) -> pd.DataFrame:
    """A long-format table of one metric per task, like :func:`paper_numbers.table`."""
    return pd.DataFrame(
        [
            {"paper": "X", "table": table, "row": row, "task": task, "metric": metric,
             "value": value, "std": float("nan"), "unit": "%", "lower_is_better": False,
             "note": "", "decimals": decimals}
            for row, values in rows.items()
            for task, value in values.items()
        ]
    )


def _delta_group(offsets: dict[str, dict[str, float]] | None, swap: bool) -> cs.CheckGroup:
    """Δ table of four methods printed from an absolute table: with its dep and norm columns
    swapped (``swap``), or with ``offsets`` added to some printed numbers."""
    absolute = {
        "Single-Task": {"seg": 40.0, "dep": 50.0, "norm": 60.0},
        "m1": {"seg": 44.0, "dep": 52.0, "norm": 66.0},
        "m2": {"seg": 42.0, "dep": 56.0, "norm": 63.0},
        "m3": {"seg": 38.0, "dep": 53.0, "norm": 69.0},
        "m4": {"seg": 46.0, "dep": 49.0, "norm": 64.0},
    }
    ref = absolute["Single-Task"]
    deltas: dict[str, dict[str, float]] = {}
    for row, values in absolute.items():
        d = {t: 100.0 * (values[t] - ref[t]) / ref[t] for t in _TASKS}
        if swap:
            d["dep"], d["norm"] = d["norm"], d["dep"]
        for task, off in (offsets or {}).get(row, {}).items():
            d[task] += off
        d["all"] = sum(100.0 * (values[t] - ref[t]) / ref[t] for t in _TASKS) / 3
        deltas[row] = {t: round(v, 1) for t, v in d.items()}
    inputs = {
        "printed": _long("Table P", deltas, "delta", 1),
        "absolute": _long("Table Q", absolute, "score", 1),
    }

    def run(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
        return cs.relative_performance_check(tables["printed"], tables["absolute"], check="p")

    return cs.CheckGroup("p", inputs, run, "printed", ("absolute",))


def test_column_swap_is_found_and_reported_once() -> None:
    group = _delta_group(None, swap=True)
    assert (~group.results()["consistent"]).sum() == 8  # dep and norm of m1..m4
    found = cs.findings([group], "X")
    assert len(found) == 1
    only = found.iloc[0]
    assert only["cause"].startswith("Table P's dep and norm columns are swapped")
    assert only["checks"].startswith("8: ") and only["kind"] == "real"
    assert "20 of 20 numbers agree" in only["evidence"] and "breaks none" in only["evidence"]


def test_random_errors_are_not_explained() -> None:
    offsets = {
        "m1": {"dep": 1.3, "norm": -2.2},
        "m2": {"dep": -0.9, "norm": 3.1},
        "m3": {"dep": 2.6, "norm": 0.8},
        "m4": {"dep": -1.7, "norm": -1.1},
    }
    group = _delta_group(offsets, swap=False)
    failing = int((~group.results()["consistent"]).sum())
    assert failing == 8
    assert cs.explain(group) == []
    found = cs.findings([group], "X")
    assert len(found) == failing
    assert found["cause"].str.startswith("unexplained").all()


def test_findings_are_ranked_real_before_rounding() -> None:
    frame = pd.DataFrame(
        [
            {"paper": "X", "finding": "", "cause": "small", "size": 0.01, "kind": cs.ROUNDING,
             "checks": "1: a", "evidence": ""},
            {"paper": "X", "finding": "", "cause": "big", "size": 2.0, "kind": cs.REAL,
             "checks": "1: b", "evidence": ""},
            {"paper": "X", "finding": "", "cause": "medium", "size": 0.3, "kind": cs.REAL,
             "checks": "1: c", "evidence": ""},
        ]
    )
    ranked = cs.rank_findings(frame)
    assert list(ranked["cause"]) == ["big", "medium", "small"]
    assert list(ranked["finding"]) == ["X1", "X2", "X3"]


def test_rounding_label_allows_the_last_printed_digit_plus_a_hundredth() -> None:
    row = {"paper_low": 27.325, "paper_high": 27.335}
    assert cs.discrepancy_kind(pd.Series({**row, "difference": -0.01375})) == cs.ROUNDING
    assert cs.discrepancy_kind(pd.Series({**row, "difference": -2.369})) == cs.REAL


def test_paper_a_findings_rank_real_discrepancies_before_rounding() -> None:
    found = paper_a.findings()
    real = found[found["kind"] == cs.REAL]
    assert list(real["checks"].str.extract(r"Table \d/([^/]+)/", expand=False)) == [
        "VGG-11", "VGG-11", "D-Prune"
    ]
    rounding = found[found["kind"] == cs.ROUNDING]
    assert len(rounding) == 6 and (rounding["size"] < 0.02).all()
    assert found.index[found["kind"] == cs.ROUNDING].min() > real.index.max()


def test_paper_d_table6_is_one_finding_the_depth_normal_swap() -> None:
    found = paper_d.findings()
    first = found.iloc[0]
    assert first["cause"].startswith("Table 6's depth and normal columns are swapped")
    assert first["checks"].startswith("10: ")
    assert not found["checks"].str.contains("D_table6").iloc[1:].any()
    assert found["cause"].str.startswith("unexplained").sum() == 1  # Table 3's Ours (M=7)
