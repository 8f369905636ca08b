"""Tests of mtlrepro.report (atomic writes, output folders, tables, metrics, claims) and of
mtlrepro.results_index (the results index)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtlrepro import report, results_index
from mtlrepro.config import ConfigError
from mtlrepro.files import atomic_write_bytes, atomic_write_text
from mtlrepro.report import (
    FAILED,
    INCONCLUSIVE,
    NOT_APPLICABLE,
    NOT_REPRODUCED,
    PASSED,
    REPRODUCED,
    Claim,
    at_least,
    at_most,
    comparison_verdict,
    describe,
    make_check,
    make_claim,
    ordering_matches,
    paired,
    read_claims,
    resolve_output_dir,
    same_sign,
    verdict,
    write_claims,
    write_metrics,
    write_table,
)
from mtlrepro.results_index import build_results_index


def _claim(claim_id: str, holds: bool | None, ours: float = 1.5) -> Claim:
    """A claim with fixed words, for scorecard tests."""
    return make_claim(claim_id, f"claim {claim_id} | with a pipe", 2.0, ours, holds,
                      profile="smoke", dataset="scenes", details="d")


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_replaces_content_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.txt"
    atomic_write_text(target, "old\n")
    atomic_write_bytes(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]
    assert target.stat().st_mode & 0o777 != 0o600  # not mkstemp's private mode


def test_atomic_write_failure_keeps_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "file.txt"
    atomic_write_text(target, "old\n")

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


# --------------------------------------------------------------------------- output folders


def test_repo_root_is_parent_of_package() -> None:
    assert (report.REPO_ROOT / "mtlrepro" / "report.py").is_file()


def test_default_output_dir_is_scratch_never_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "REPO_ROOT", tmp_path)
    folder = resolve_output_dir(None, "00_baselines")
    assert folder == tmp_path / ".scratch" / "00_baselines"
    assert folder.is_dir()
    assert not (tmp_path / "results").exists()


def test_relative_output_dir_is_relative_to_repo_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    folder = resolve_output_dir("results/00_baselines", "00_baselines")
    assert folder == tmp_path / "repo" / "results" / "00_baselines"
    assert folder.is_dir()
    assert resolve_output_dir(str(tmp_path / "abs"), "x") == tmp_path / "abs"


def test_output_dir_rejects_notebook_names_with_folders() -> None:
    with pytest.raises(ConfigError, match="plain file name"):
        resolve_output_dir(None, "../escape")


# --------------------------------------------------------------------------- tables, metrics


def test_write_table_round_trips_csv_and_markdown(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {"method": ["single-task", "a|b"], "miou": [45.25, float("nan")], "params": [10, 20]}
    )
    paths = write_table(df, tmp_path, "table2_nyuv2")
    assert paths == {"csv": tmp_path / "table2_nyuv2.csv", "md": tmp_path / "table2_nyuv2.md"}
    back = pd.read_csv(paths["csv"])
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    md = paths["md"].read_text()
    assert md.splitlines()[0].split("|")[1].strip() == "method"
    assert "45.25" in md and "a\\|b" in md and "—" in md  # NaN shown as a dash
    first = {k: p.read_bytes() for k, p in paths.items()}
    write_table(df, tmp_path, "table2_nyuv2")
    assert {k: p.read_bytes() for k, p in paths.items()} == first


def test_write_table_keeps_a_named_index_as_column(tmp_path: Path) -> None:
    df = pd.DataFrame({"miou": [1.0, 2.0]}, index=pd.Index(["a", "b"], name="method"))
    paths = write_table(df, tmp_path, "table1_x")
    assert list(pd.read_csv(paths["csv"]).columns) == ["method", "miou"]


@pytest.mark.parametrize("name", ["table1.csv", "sub/table1", ""])
def test_write_table_rejects_names_with_folder_or_extension(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="file stem"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path, name)


def test_write_metrics_sorts_keys_and_rounds_floats(tmp_path: Path) -> None:
    metrics = {
        "b": 1 / 3,
        "a": {"y": np.float32(0.1), "x": [np.int64(1), 2.0000000001, True]},
        "diverged": float("nan"),
        "profile": "smoke",
    }
    path = write_metrics(metrics, tmp_path)
    text = path.read_text()
    assert text.index('"a"') < text.index('"b"') < text.index('"diverged"')
    assert json.loads(text) == {
        "a": {"x": [1, 2.0, True], "y": 0.1},  # float32 0.1 rounded to 6 significant digits
        "b": 0.333333,
        "cpu_model": report.cpu_model(),
        "diverged": None,
        "profile": "smoke",
    }


def test_write_metrics_records_the_cpu_model(tmp_path: Path) -> None:
    written = json.loads(write_metrics({"profile": "smoke"}, tmp_path).read_text())
    assert written["cpu_model"] == report.cpu_model()
    assert isinstance(written["cpu_model"], str) and written["cpu_model"]
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text(errors="replace"):
        names = [line.split(":", 1)[1].strip()
                 for line in cpuinfo.read_text(errors="replace").splitlines()
                 if line.startswith("model name")]
        assert written["cpu_model"] == names[0]
    # a caller's own value is kept
    kept = json.loads(write_metrics({"cpu_model": "given"}, tmp_path).read_text())
    assert kept["cpu_model"] == "given"


def test_run_provenance_uses_the_same_cpu_model() -> None:
    from mtlrepro import runs

    assert runs.provenance()["cpu"] == report.cpu_model()


def test_write_metrics_rejects_objects(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="metrics.model"):
        write_metrics({"model": object()}, tmp_path)


# --------------------------------------------------------------------------- verdicts


def test_verdict_maps_holds_to_words() -> None:
    assert verdict(True) == REPRODUCED
    assert verdict(False) == NOT_REPRODUCED
    assert verdict(None) == NOT_APPLICABLE
    with pytest.raises(ConfigError):
        verdict("yes")  # type: ignore[arg-type]


def test_same_sign_follows_the_numbers() -> None:
    assert same_sign(-2.0, -0.5)
    assert not same_sign(-2.0, 0.5)  # flipping our number flips the verdict
    assert same_sign(3.0, 0.1)
    assert not same_sign(3.0, 0.1, tol=0.2)  # within the dead zone counts as zero
    assert same_sign(0.0, 0.1, tol=0.2)


def test_at_least_and_at_most_respect_tolerance() -> None:
    assert at_least(44.0, 45.0, tol=1.0)
    assert not at_least(43.9, 45.0, tol=1.0)
    assert at_most(0.51, 0.5, tol=0.01)
    assert not at_most(0.52, 0.5, tol=0.01)
    with pytest.raises(ConfigError, match="tol"):
        at_least(1.0, 1.0, tol=-1.0)


def test_ordering_matches_compares_every_pair() -> None:
    paper = {"equal": 40.0, "pcgrad": 42.0, "uncertainty": 41.0}
    assert ordering_matches(paper, {"equal": 30.0, "pcgrad": 35.0, "uncertainty": 31.0})
    assert not ordering_matches(paper, {"equal": 31.5, "pcgrad": 35.0, "uncertainty": 31.0})
    assert ordering_matches(paper, {"equal": 30.0, "pcgrad": 35.0, "uncertainty": 31.0}, tol=0.5)
    assert not ordering_matches(paper, {"equal": 30.0, "pcgrad": 35.0, "uncertainty": 30.2},
                                tol=0.5)  # a tie in ours where the paper has an order
    with pytest.raises(ConfigError, match="same items"):
        ordering_matches(paper, {"equal": 1.0, "pcgrad": 2.0})


@pytest.mark.parametrize("bad", [None, "45.0", float("nan"), True])
def test_comparisons_need_finite_numbers(bad: object) -> None:
    with pytest.raises(ConfigError, match="number"):
        at_least(bad, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="number"):
        same_sign(1.0, bad)  # type: ignore[arg-type]


def test_claim_rejects_a_typed_in_verdict() -> None:
    with pytest.raises(ConfigError, match="unknown verdict"):
        Claim("A1", "words", 1.0, 1.0, "probably", "smoke", "scenes")


def test_claims_round_trip(tmp_path: Path) -> None:
    claims = [_claim("A1", True), _claim("A2", None, ours=0.123456789),
              make_claim("A3", "text values", "fig. 3", "see fig3_x.png", False,
                         profile="cpu", dataset="vehicles")]
    path = write_claims(claims, tmp_path)
    back = read_claims(path)
    assert back[0] == claims[0]
    assert back[1].our_value == pytest.approx(0.123457, abs=1e-12)  # 6 significant digits
    assert back[2] == claims[2]
    with pytest.raises(ConfigError, match="duplicate claim ids: A1"):
        write_claims([_claim("A1", True), _claim("A1", False)], tmp_path)


def _check(check_id: str, passed: bool | None) -> Claim:
    return make_check(check_id, f"check {check_id}", 5.29, 5.288, passed, profile="smoke",
                      dataset="constructors", details="rounding")


def test_checks_have_their_own_kind_and_verdicts(tmp_path: Path) -> None:
    passed, failed, unknown = _check("A5", True), _check("A6", False), _check("A7", None)
    assert (passed.kind, passed.verdict, passed.is_check) == ("check", PASSED, True)
    assert failed.verdict == FAILED and unknown.verdict == NOT_APPLICABLE
    assert _claim("A1", True).kind == "claim" and not _claim("A1", True).is_check
    with pytest.raises(ConfigError, match="unknown verdict 'passed' for a claim"):
        Claim("A1", "words", 1.0, 1.0, PASSED, "smoke", "scenes")
    with pytest.raises(ConfigError, match="unknown verdict 'reproduced' for a check"):
        Claim("A1", "words", 1.0, 1.0, REPRODUCED, "smoke", "scenes", "", "check")
    with pytest.raises(ConfigError, match="unknown kind"):
        Claim("A1", "words", 1.0, 1.0, REPRODUCED, "smoke", "scenes", "", "fact")
    rows = [_claim("A1", True), passed, failed]
    back = read_claims(write_claims(rows, tmp_path))
    assert back == rows
    assert report.claims_only(back) == [rows[0]] and report.checks_only(back) == rows[1:]
    with pytest.raises(ConfigError, match="duplicate claim ids: A5"):
        write_claims([_claim("A5", True), passed], tmp_path)


def test_claims_files_without_a_kind_column_read_as_claims(tmp_path: Path) -> None:
    path = write_claims([_claim("A1", True)], tmp_path)
    lines = path.read_text().splitlines()
    old = "\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n"
    assert old.splitlines()[0].endswith(",details")
    path.write_text(old)
    assert read_claims(path) == [_claim("A1", True)]


# --------------------------------------------------------------------------- results index


def _fake_results(root: Path) -> None:
    """A tiny results tree: two notebook folders, a benchmark, and a hidden leftover."""
    a = root / "00_alpha"
    a.mkdir(parents=True)
    for suffix in (".ipynb", ".html"):
        (a / f"00_alpha{suffix}").write_text("x")
    for stem in ("table10_late", "table2_early", "table1_first"):
        write_table(pd.DataFrame({"method": ["m"], "miou": [1.5]}), a, stem)
    (a / "fig3_curves.png").write_bytes(b"png")
    write_metrics({"profile": "smoke"}, a)
    write_claims([_claim("A1", True), _claim("A2", False), _check("A3", True)], a)
    b = root / "01_beta"
    b.mkdir()
    write_claims([_claim("B1", None), _claim("B2", True), _check("B3", False)], b)
    (root / "benchmarks").mkdir()
    pd.DataFrame({"model": ["segnet"], "ms": [12.5]}).to_csv(root / "benchmarks" / "latency.csv",
                                                             index=False)
    (root / ".00_alpha.previous").mkdir()
    (root / "runs" / "01_beta").mkdir(parents=True)  # training runs, not a notebook folder


def test_results_index_has_scorecard_links_and_is_deterministic(tmp_path: Path) -> None:
    _fake_results(tmp_path)
    path = build_results_index(tmp_path)
    text = path.read_text()
    assert text.index("## Claims scorecard") < text.index("## 00_alpha") < text.index("## 01_beta")
    assert "| **all** | 2 | 1 | 0 | 1 | 4 |" in text  # reproduced, not, inconclusive, n/a, total
    assert "| 00_alpha | A2 | claim A2 \\| with a pipe | 2 | 1.5 | not reproduced |" in text
    # checks are listed apart, out of the verdict counts
    assert text.index("## Claims scorecard") < text.index("### Checks") < text.index("## 00_alpha")
    assert "| notebook | id | statement | paper | ours | passed | details |" in text
    assert "| 00_alpha | A3 | check A3 | 5.29 | 5.288 | yes | rounding |" in text
    assert "| 01_beta | B3 | check B3 | 5.29 | 5.288 | no | rounding |" in text
    claims_table = text[: text.index("### Checks")]
    assert "check A3" not in claims_table and "passed" not in claims_table.split("|")
    assert "[00_alpha.ipynb](00_alpha/00_alpha.ipynb), [00_alpha.html](00_alpha/00_alpha.html)" \
        in text
    assert text.index("table1_first") < text.index("table2_early") < text.index("table10_late")
    assert "### table2_early ([CSV](00_alpha/table2_early.csv))" in text
    assert "![fig3_curves](00_alpha/fig3_curves.png)" in text
    assert "### latency ([CSV](benchmarks/latency.csv))" in text and "12.5" in text
    assert ".previous" not in text and str(tmp_path) not in text
    assert "## runs" not in text
    assert build_results_index(tmp_path).read_text() == text


def test_results_index_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_results(tmp_path)
    assert results_index.main([str(tmp_path)]) == 0
    assert (tmp_path / "README.md").is_file()
    with pytest.raises(SystemExit) as exit_info:
        results_index.main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_claim_values_written_with_six_significant_digits(tmp_path: Path) -> None:
    path = write_claims([_claim("A1", True, ours=math.pi)], tmp_path)
    assert "3.14159" in path.read_text() and "3.141592" not in path.read_text()


def test_seed_comparisons_decide_reproduced_not_reproduced_or_inconclusive() -> None:
    better = paired([3.0, 2.0, 4.0])
    assert better.difference == pytest.approx(3.0)
    assert better.spread == pytest.approx(1.0)
    assert better.outcome == 1
    within = paired([0.5, -0.3])
    assert within.outcome == 0
    assert comparison_verdict([better, better]) == "reproduced"
    assert comparison_verdict([better, within]) == INCONCLUSIVE
    worse = paired([-1.0])  # one seed: no spread, every difference counts
    assert (worse.spread, worse.outcome) == (0.0, -1)
    assert comparison_verdict([better, within, worse]) == "not reproduced"
    claim = make_claim("X1", "x beats y", "+3", "+3.0", [better, within], profile="cpu",
                       dataset="d")
    assert claim.verdict == INCONCLUSIVE
    assert describe([("x vs y", better)], " %") == "x vs y: +3.00 ± 1.00 %"
    with pytest.raises(ConfigError, match="at least one"):
        comparison_verdict([])
    with pytest.raises(ConfigError, match="at least one per-seed difference"):
        paired([])
    with pytest.raises(ConfigError, match="finite"):
        paired([float("nan")])


def test_results_index_gathers_the_findings_about_the_papers_ranked(tmp_path: Path) -> None:
    _fake_results(tmp_path)
    columns = ["paper", "finding", "cause", "size", "kind", "checks", "evidence"]
    write_table(
        pd.DataFrame([["A", "A1", "tiny rounding", 0.01, "rounding", "2: x; y", "re-run"]],
                     columns=columns),
        tmp_path / "00_alpha", "findings",
    )
    write_table(
        pd.DataFrame([["B", "B1", "columns swapped", 2.09, "real", "10: z", "20 of 20 agree"]],
                     columns=columns),
        tmp_path / "01_beta", "findings",
    )
    text = build_results_index(tmp_path).read_text()
    assert text.index("## Claims scorecard") < text.index("## Findings about the papers") \
        < text.index("## 00_alpha")
    section = text[text.index("## Findings about the papers"):text.index("## 00_alpha")]
    assert section.index("columns swapped") < section.index("tiny rounding")
    row = "| B1 | [01_beta](01_beta/findings.csv) | real | 2.09 | columns swapped | 10 |"
    assert row in section


def test_results_index_shows_the_claims_both_ways_and_which_move(tmp_path: Path) -> None:
    _fake_results(tmp_path)
    both = pd.DataFrame({
        "claim_id": ["A1", "A2"], "claim": ["c1", "c2"],
        "from scratch": ["not reproduced", "reproduced"], "from scratch: ours": ["1", "2"],
        "pretrained": ["reproduced", "reproduced"], "pretrained: ours": ["3", "4"],
    })
    write_table(both, tmp_path / "00_alpha", report.CLAIMS_COMPARED)
    text = build_results_index(tmp_path).read_text()
    section = text[text.index("## Claims both ways"):text.index("## 00_alpha")]
    assert "1 of 2 verdicts move" in section
    assert "| notebook | id | from scratch | pretrained | moves |" in section
    row = "| [00_alpha](00_alpha/claims_both_ways.csv) | A1 | not reproduced | reproduced | yes |"
    assert row in section
    assert "| [00_alpha](00_alpha/claims_both_ways.csv) | A2 | reproduced | reproduced |  |" \
        in section
    write_table(both.rename(columns={"pretrained": "imagenet"}), tmp_path / "01_beta",
                report.CLAIMS_COMPARED)
    with pytest.raises(ConfigError, match="the same runs everywhere"):
        build_results_index(tmp_path)
