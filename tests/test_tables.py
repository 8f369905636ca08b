"""Tests of mtlrepro.tables: tables shown in full, blanks for missing values."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mtlrepro.config import ConfigError
from mtlrepro.report import make_check, make_claim
from mtlrepro.tables import compare_claims, show, show_claims, verdict_changes

LONG = "the paper's sentence, quoted in full so that a reader can check it " * 3


def test_show_keeps_every_character_and_leaves_missing_values_blank() -> None:
    frame = pd.DataFrame({"claim": [LONG, "short"], "value": [1.23456789, math.nan]})
    html = show(frame).to_html()
    assert LONG in html and "…" not in html and "..." not in html
    assert "nan" not in html.lower()
    assert "1.23" in html and "1.2346" not in html  # 3 significant digits by default
    assert "1.2346" in show(frame, digits=5).to_html()


def test_show_hides_only_a_default_index() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    assert ">0<" not in show(frame).to_html()
    named = frame.set_axis(["seg", "depth"]).rename_axis("task")
    html = show(named).to_html()
    assert "seg" in html and "task" in html


@pytest.mark.parametrize("bad", [{"digits": 0}, {"max_width_em": 2}])
def test_show_validates_its_options(bad: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        show(pd.DataFrame({"x": [1]}), **bad)
    with pytest.raises(ConfigError, match="DataFrame"):
        show([1, 2])  # type: ignore[arg-type]


def test_show_claims_prints_the_readers_columns_and_the_kind_only_when_mixed() -> None:
    claim = make_claim("B1", LONG, "paper +1.0 %", "ours -2.0 %", False, profile="cpu",
                       dataset="scenes", details="how it was decided")
    html = show_claims([claim]).to_html()
    assert LONG in html and "not reproduced" in html and "how it was decided" in html
    assert "profile" not in html and ">kind<" not in html
    check = make_check("BL5", "a check", 1, 1, True, profile="cpu", dataset="scenes")
    assert ">kind<" in show_claims([claim, check]).to_html()
    with pytest.raises(ConfigError):
        show_claims([])


def test_compare_claims_puts_the_verdicts_of_each_run_side_by_side() -> None:
    def claims(verdict: bool) -> list:
        return [
            make_claim("A1", "first", "p", f"ours {verdict}", verdict, profile="cpu", dataset="d"),
            make_claim("A2", "second", "p", "o", None, profile="cpu", dataset="d"),
            make_check("A5", "a check", 1, 1, True, profile="cpu", dataset="d"),
        ]

    table = compare_claims({"from scratch": claims(False), "pretrained": claims(True)})
    assert list(table.columns) == ["claim_id", "claim", "from scratch", "from scratch: ours",
                                   "pretrained", "pretrained: ours"]
    assert table["claim_id"].tolist() == ["A1", "A2"]  # the check is left out
    assert table.loc[0, "from scratch"] == "not reproduced"
    assert table.loc[0, "pretrained"] == "reproduced"
    assert table.loc[1, "pretrained: ours"] == "o"
    with pytest.raises(ConfigError, match="differ"):
        compare_claims({"a": claims(True), "b": claims(True)[:1]})
    with pytest.raises(ConfigError):
        compare_claims({})


def test_verdict_changes_names_the_claims_that_moved() -> None:
    table = pd.DataFrame({"claim_id": ["A1", "A2", "A3"],
                          "from scratch": ["not reproduced", "reproduced", "inconclusive"],
                          "pretrained": ["reproduced", "reproduced", "inconclusive"]})
    assert verdict_changes(table, "from scratch", "pretrained") == (
        "Pretrained instead of from scratch changes A1 (not reproduced → reproduced); 2 other "
        "claims keep their verdict."
    )
    same = table.assign(pretrained=table["from scratch"])
    assert "every claim keeps its verdict" in verdict_changes(same, "from scratch", "pretrained")
    assert verdict_changes(table, "from scratch", "imagenet") is None  # one run only
    assert verdict_changes(None, "from scratch", "pretrained") is None
    with pytest.raises(ConfigError, match="no run named"):
        verdict_changes(table, "imagenet", "pretrained")
