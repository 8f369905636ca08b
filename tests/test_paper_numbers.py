"""Tests for mtlrepro.paper_numbers: the transcribed CSVs, their dtypes and the loader API."""

from __future__ import annotations

import math
from importlib import resources

import pandas as pd
import pytest

from mtlrepro import paper_numbers as pn
from mtlrepro.config import ConfigError

ALLOWED_UNITS = {"%", "°", "M", "x", "ms", ""}
DENSE_TASKS = {"segmentation", "depth", "normal", "edge", "saliency", "parts"}


@pytest.mark.parametrize("paper", sorted(pn.PAPERS))
def test_csv_ships_as_package_data_with_documented_header(paper: str) -> None:
    source = resources.files("mtlrepro.paper_numbers").joinpath(f"{paper}.csv")
    header = source.read_text(encoding="utf-8").splitlines()[0]
    assert tuple(header.split(",")) == pn.CSV_COLUMNS


@pytest.mark.parametrize("paper", sorted(pn.PAPERS))
def test_load_gives_documented_columns_and_dtypes(paper: str) -> None:
    frame = pn.load(paper)
    assert list(frame.columns) == [
        "paper",
        *pn.CSV_COLUMNS,
        "decimals",
    ]
    assert frame["value"].dtype == "float64"
    assert frame["std"].dtype == "float64"
    assert isinstance(frame["lower_is_better"].dtype, pd.BooleanDtype)
    assert frame["decimals"].dtype == "int64"
    assert frame["value"].map(math.isfinite).all()
    assert (frame["paper"] == paper).all()
    assert set(frame["unit"]) <= ALLOWED_UNITS


@pytest.mark.parametrize("paper", sorted(pn.PAPERS))
def test_keys_are_unique(paper: str) -> None:
    frame = pn.load(paper)
    assert not frame.duplicated(list(pn.KEY)).any()


@pytest.mark.parametrize("paper", sorted(pn.PAPERS))
def test_rows_and_metrics_are_clean_names(paper: str) -> None:
    frame = pn.load(paper)
    # LaTeX debris of the extraction (\mathcal, subscript, math italic letters) must be gone.
    for text in frame["row"]:
        assert "\\" not in text and "subscript" not in text and "𝑀" not in text, text
    assert frame["metric"].str.fullmatch(r"[a-z][a-z0-9_]*").all()


def test_load_returns_an_independent_copy() -> None:
    first = pn.load("D")
    first.loc[:, "value"] = 0.0
    assert pn.value("D", "Table 2", "Shared Bottom", "segmentation", "delta") == -7.6


@pytest.mark.parametrize(
    ("paper", "table", "row", "task", "metric", "expected"),
    [
        # Paper D, read off the extracted text (Tables 1-6, 10-14).
        ("D", "Table 1", "Ours (M=5)", "all", "accuracy", 95.71),
        ("D", "Table 1", "Single-Task", "", "params", 20.00),
        ("D", "Table 2", "Shared Bottom", "normal", "delta", 7.5),
        ("D", "Table 2", "DEN", "depth", "delta", -35.2),
        ("D", "Table 2", "Ours (M=9)", "", "params", 1.63),
        ("D", "Table 3", "Ours (M=7)", "segmentation", "delta", 7.5),
        ("D", "Table 3", "MTAN", "", "params", 2.41),
        ("D", "Table 4", "Shared Bottom", "normal", "delta", -14.3),
        ("D", "Table 4", "Sluice", "edge", "delta", -6.0),
        ("D", "Table 4", "Ours (M=9)", "all", "delta", 1.4),
        ("D", "Table 5", "Ours (M=7)", "depth", "edge_sparsity", 0.192),
        ("D", "Table 5", "Ours (M=7)", "normal", "graph_width", 2),
        ("D", "Table 6", "w/o flow-based reduction", "", "params", 6.50),
        ("D", "Table 6", "w/o L_sq", "segmentation", "delta", 13.2),
        ("D", "Table 10", "w/o fine-tune", "all", "delta", -8.9),
        ("D", "Table 11", "DEN", "depth", "delta1", 22.8),
        ("D", "Table 11", "AdaShare", "normal", "within_11_25", 45.0),
        ("D", "Table 11", "Ours (M=9)", "depth", "delta3", 99.1),
        ("D", "Table 12", "Single-Task", "depth", "abs_err", 0.017),
        ("D", "Table 12", "Ours (M=9)", "segmentation", "miou", 46.5),
        ("D", "Table 13", "MTAN", "edge", "mean_error", 0.019),
        ("D", "Table 13", "LTB", "saliency", "miou", 65.3),
        ("D", "Table 14", "w/o flow-restriction", "normal", "within_30", 87.2),
        ("D", "Section 4.2", "search space (M=7)", "", "params", 5.38),
        # Paper A.
        ("A", "Table 1", "D-Prune", "all", "accuracy", 74.05),
        ("A", "Table 1", "Baseline", "id", "accuracy", 52.89),
        ("A", "Table 2", "VGG-11", "", "params", 132.87),
        ("A", "Table 2", "NFNet-L0", "", "compression", 37.51),
        ("A", "Table 3", "4 tasks", "", "hidden_final", 101),
        ("A", "Eq. 2", "type 8", "type", "conditional_probability", 0.11),
        # Paper B.
        ("B", "Table 1", "Depth estimation (lambda_2)", "", "group_sparsity", 89.90),
        (
            "B",
            "Table 1",
            "segmentation + surface normal estimation (lambda_2)",
            "segmentation",
            "miou",
            0.3480,
        ),
        ("B", "Table 2", "seg + male + smile (lambda_1)", "smile", "accuracy", 0.5241),
        ("B", "Table 3", "Depth est. + Surface Normal est. (L1)", "depth", "abs_err", 0.1545),
        (
            "B",
            "Figure 3(d)",
            "larger lambda (~70% group sparsity)",
            "",
            "inference_time_reduction",
            0.74,
        ),
        # Paper C.
        ("C", "Table 1", "SegNet-S ExpandNet", "segmentation", "pixel_acc", 51.44),
        ("C", "Table 2", "Fac", "panoptic", "rq", 26.64),
        ("C", "Table 3", "MTAN Fac", "normal", "within_22_5", 0.4499),
        ("C", "Table 3", "Fac-DeepLabv3 Pretrained", "segmentation", "pixel_acc", 90.10),
        # Paper E.
        ("E", "Table 1", "dist", "daimlerpedcls", "correlation", 0.477),
        ("E", "Table 2", "es (wd 1e-3)", "vgg-flowers", "accuracy", 81.3),
        ("E", "Table 2", "share all", "all", "accuracy", 79.8),
    ],
)
def test_spot_values_match_the_papers(
    paper: str, table: str, row: str, task: str, metric: str, expected: float
) -> None:
    # Exact equality: the CSV holds the printed decimal, parsed once by the same float parser.
    assert pn.value(paper, table, row, task, metric) == expected


def test_printed_precision_is_kept_in_decimals() -> None:
    frame = pn.table("D", "Table 11")
    single = frame[frame["row"] == "Single-Task"].set_index("metric")
    assert single.at["rel_err", "decimals"] == 2  # printed "0.25"
    assert single.at["params", "decimals"] == 0  # printed "3"
    deltas = pn.table("D", "Table 2").set_index(["row", "task", "metric"])
    assert deltas.at[("Single-Task", "all", "delta"), "decimals"] == 1  # printed "0.0"
    assert deltas.at[("Single-Task", "", "params"), "decimals"] == 2  # printed "3.00"


def test_std_column_holds_the_printed_standard_deviation() -> None:
    nyu = pn.table("B", "Table 1").set_index(["row", "task", "metric"])
    cell = nyu.loc[("Semantic Segmentation (lambda=0)", "segmentation", "miou")]
    assert (cell["value"], cell["std"]) == (0.3140, 0.0350)
    assert math.isnan(nyu.at[("Semantic Segmentation (lambda=0)", "", "group_sparsity"), "std"])
    decathlon = pn.table("E", "Table 2").set_index(["row", "task"])
    assert decathlon.at[("share all", "vgg-flowers"), "std"] == 0.6


def test_lower_is_better_follows_the_printed_arrows() -> None:
    nyu = pn.table("D", "Table 11").set_index(["row", "task", "metric"])
    assert nyu.at[("MTAN", "depth", "abs_err"), "lower_is_better"]
    assert not nyu.at[("MTAN", "segmentation", "miou"), "lower_is_better"]
    omniglot = pn.table("D", "Table 1").set_index(["row", "task", "metric"])
    assert pd.isna(omniglot.at[("MoE", "all", "accuracy"), "lower_is_better"])  # no arrow
    pascal = pn.table("D", "Table 4").set_index(["row", "task", "metric"])
    assert pascal.at[("PHN", "normal", "delta"), "lower_is_better"]  # printed down arrow


def test_wide_reproduces_the_printed_layout() -> None:
    wide = pn.wide("D", "Table 11")
    assert wide.shape == (11, 13)
    assert list(wide.index[:2]) == ["Single-Task", "Shared Bottom"]
    assert wide.columns[0] == ("", "params")
    assert wide.columns[-1] == ("normal", "within_30")
    assert wide.loc["Ours (M=7)", ("normal", "median_angle")] == 12.9
    assert wide.columns.names == ["task", "metric"]


def test_table_returns_only_the_requested_table() -> None:
    frame = pn.table("D", "Table 3")
    assert set(frame["table"]) == {"Table 3"}
    assert len(frame) == 11 * 4  # 11 methods x (sem, dep, all, params)


def test_tables_lists_what_was_transcribed() -> None:
    assert pn.tables("D")[:6] == [f"Table {i}" for i in range(1, 7)]
    assert {"Table 10", "Table 11", "Table 12", "Table 13", "Table 14"} <= set(pn.tables("D"))
    assert pn.tables("E") == ["Table 1", "Table 2"]


def test_unknown_paper_is_a_config_error_listing_the_papers() -> None:
    with pytest.raises(ConfigError, match="unknown paper 'F'.*'A'.*'E'"):
        pn.load("F")


def test_unknown_table_is_a_config_error_listing_the_tables() -> None:
    with pytest.raises(ConfigError, match="unknown table of paper D 'Table 7'.*'Table 11'"):
        pn.table("D", "Table 7")


def test_unknown_row_is_a_config_error_listing_the_rows() -> None:
    with pytest.raises(ConfigError, match="'Shared Bottom'"):
        pn.value("D", "Table 2", "Shared bottom", "depth", "delta")


def test_missing_entry_is_a_config_error_listing_what_exists() -> None:
    with pytest.raises(ConfigError, match=r"no \(task, metric\).*\('depth', 'delta'\)"):
        pn.value("D", "Table 2", "Shared Bottom", "depth", "miou")


def test_task_names_are_canonical_or_documented() -> None:
    for paper in ("B", "C", "D"):
        frame = pn.load(paper)
        named = set(frame["task"]) - {"", "all"}
        classification = {"male", "smile", "bbox", "instance_segmentation", "panoptic"}
        assert named <= DENSE_TASKS | classification, (paper, named)
