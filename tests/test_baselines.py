"""Baselines tables and claims follow paper D's definitions and are computed from the numbers."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mtlrepro import paper_numbers
from mtlrepro.config import ConfigError
from mtlrepro.experiments.baselines import claims, discussion, units
from mtlrepro.experiments.baselines import study as baselines
from mtlrepro.metrics import LOWER_IS_BETTER, relative_performance
from mtlrepro.report import FAILED, INCONCLUSIVE, NOT_REPRODUCED, PASSED, REPRODUCED
from mtlrepro.tasks import TaskSpec

TASKS = ("segmentation", "depth", "normal")
SPECS = {
    "segmentation": TaskSpec("segmentation", "segmentation", 13),
    "depth": TaskSpec("depth", "depth"),
    "normal": TaskSpec("normal", "normal"),
}
SINGLE = {
    "segmentation": {"miou": 27.5, "pixel_acc": 58.9},
    "depth": {"abs_err": 0.62, "rel_err": 0.25, "delta1": 57.9, "delta2": 85.8, "delta3": 95.7},
    "normal": {
        "mean_angle": 17.5,
        "median_angle": 15.2,
        "within_11_25": 34.9,
        "within_22_5": 73.3,
        "within_30": 85.7,
        "cosine": 0.9,
    },
}
SHARED = {  # paper D's Table 11 "Shared Bottom" row
    "segmentation": {"miou": 24.1, "pixel_acc": 57.2},
    "depth": {"abs_err": 0.58, "rel_err": 0.23, "delta1": 62.4, "delta2": 88.2, "delta3": 96.5},
    "normal": {
        "mean_angle": 16.6,
        "median_angle": 13.4,
        "within_11_25": 42.5,
        "within_22_5": 73.2,
        "within_30": 84.6,
        "cosine": 0.2,
    },
}


def _paper_row(row: str) -> dict[str, dict[str, float]]:
    """Task -> metric -> value of a row of paper D's Table 11."""
    table = paper_numbers.table("D", "Table 11")
    out: dict[str, dict[str, float]] = {}
    for _, entry in table[(table["row"] == row) & (table["task"] != "")].iterrows():
        out.setdefault(entry["task"], {})[entry["metric"]] = float(entry["value"])
    return out


CROSS_STITCH = _paper_row("Cross-Stitch")
MTAN = _paper_row("MTAN")
PAPER_ARCHITECTURES = {"Cross-Stitch": (CROSS_STITCH, 300), "MTAN": (MTAN, 311)}
"""Row -> (test metrics, parameters): paper D's Tables 11 and 2 (shared bottom: 100)."""


def _result(
    shared: dict,
    single_params: int = 300,
    shared_params: int = 100,
    architectures: dict[str, tuple[dict, int]] | None = None,
):
    """A BaselinesResult with given test metrics (no training); ``architectures``: row ->
    (test metrics, parameters) of the cross-stitch/MTAN rows (default: none)."""
    architectures = architectures or {}
    names = {row: name for name, row in baselines.ARCHITECTURE_ROWS.items()}
    config = baselines.baselines_config(
        "smoke", architectures=tuple(names[row] for row in architectures)
    )
    result = baselines.BaselinesResult(config, SPECS)
    empty = pd.DataFrame()
    for task in TASKS:
        result.runs.append(
            baselines.RunResult(
                baselines.SINGLE_TASK, (task,), single_params // 3, empty, {task: SINGLE[task]}, {}
            )
        )
    for name in config.balancers:
        result.runs.append(
            baselines.RunResult(baselines.shared_row(name), TASKS, shared_params, empty, shared, {})
        )
    for row, (scores, params) in architectures.items():
        result.runs.append(baselines.RunResult(row, TASKS, params, empty, scores, {}))
    return result


def _seeded(shared_miou: dict[int, float], single_miou: dict[int, float]):
    """A result of several seeds: paper D's rows, with the given segmentation mIoU per seed for
    the shared bottom (every balancer) and the single-task network."""
    config = baselines.baselines_config("smoke", architectures=(), seeds=tuple(shared_miou))
    result = baselines.BaselinesResult(config, SPECS)
    empty = pd.DataFrame()
    for seed in config.seeds:
        for task in TASKS:
            scores = {task: SINGLE[task]}
            if task == "segmentation":
                scores = {task: {**SINGLE[task], "miou": single_miou[seed]}}
            result.runs.append(
                baselines.RunResult(baselines.SINGLE_TASK, (task,), 100, empty, scores, {}, seed)
            )
        scores = {**SHARED, "segmentation": {**SHARED["segmentation"], "miou": shared_miou[seed]}}
        for name in config.balancers:
            result.runs.append(
                baselines.RunResult(baselines.shared_row(name), TASKS, 100, empty, scores, {}, seed)
            )
    return result


def test_each_seed_is_measured_against_its_own_single_task_networks():
    # the shared bottom loses 10 % of mIoU in both seeds; against the mean single-task mIoU
    # (30) it would lose 20 % in seed 0 and gain 33 % in seed 1
    result = _seeded({0: 18.0, 1: 40.0}, {0: 20.0, 1: 44.4444444})
    per_seed = baselines.seed_deltas(result)
    shared = per_seed[per_seed["method"] == baselines.shared_row("equal")]
    miou_only = {"segmentation": {"miou": 18.0}}
    expected = relative_performance(miou_only, {"segmentation": {"miou": 20.0}}, LOWER_IS_BETTER)
    pixel = relative_performance(
        {"segmentation": {"pixel_acc": 57.2}}, {"segmentation": {"pixel_acc": 58.9}},
        LOWER_IS_BETTER,
    )
    first = (expected["segmentation"] + pixel["segmentation"]) / 2
    assert shared["delta_segmentation"].tolist() == pytest.approx([first, first], abs=1e-5)
    table = baselines.delta_table(result).set_index("method")
    row = table.loc[baselines.shared_row("equal")]
    assert row["delta_segmentation"] == pytest.approx(first, abs=1e-5)
    assert row["delta_segmentation_std"] == pytest.approx(0.0, abs=1e-5)
    means = baselines.metrics_table(result).set_index("method")
    assert means.loc[baselines.SINGLE_TASK, "segmentation/miou"] == pytest.approx(32.2222222)
    assert means.loc[baselines.SINGLE_TASK, "segmentation/miou_std"] == pytest.approx(
        pd.Series([20.0, 44.4444444]).std()
    )


def test_a_sign_the_seeds_disagree_on_is_inconclusive_and_the_discussion_says_so():
    # seed 0: the shared bottom loses segmentation (as paper D), seed 1: it wins it
    split = _seeded({0: 20.0, 1: 33.0}, {0: 27.5, 1: 27.5})
    verdicts = {c.claim_id: c for c in claims.evaluate(split)}
    assert verdicts["BL1"].verdict == INCONCLUSIVE
    per_seed = claims.seed_values(split)["BL1"]
    assert per_seed[0] < 0 < per_seed[1]
    text = discussion.discussion(split, list(verdicts.values()))
    assert "Every row is the mean of 2 seeds" in text
    assert f"BL1 is inconclusive (ours {verdicts['BL1'].our_value}" in text
    assert f"per seed {per_seed[0]:+.2f}, {per_seed[1]:+.2f}" in text
    # both seeds lose it, beyond their spread: reproduced
    agreeing = _seeded({0: 20.0, 1: 21.0}, {0: 27.5, 1: 27.5})
    assert {c.claim_id: c for c in claims.evaluate(agreeing)}["BL1"].verdict == REPRODUCED
    # both win it: not reproduced
    winning = _seeded({0: 33.0, 1: 34.0}, {0: 27.5, 1: 27.5})
    assert {c.claim_id: c for c in claims.evaluate(winning)}["BL1"].verdict == NOT_REPRODUCED


def test_delta_table_reproduces_paper_d_table2_from_its_table11_values():
    table = baselines.delta_table(_result(SHARED)).set_index("method")
    row = table.loc[baselines.shared_row("equal")]
    # the paper prints Δ rounded to 0.1: agreement within half a unit (+ float slack)
    assert row["delta_segmentation"] == pytest.approx(-7.6, abs=0.05)
    assert row["delta_normal"] == pytest.approx(7.5, abs=0.05)
    assert row["delta_depth"] == pytest.approx(5.2, abs=0.05)
    assert row["delta_all"] == pytest.approx(1.7, abs=0.05)


def test_delta_table_single_task_row_is_zero_and_ignores_cosine():
    table = baselines.delta_table(_result(SHARED)).set_index("method")
    deltas = table.loc[
        baselines.SINGLE_TASK, ["delta_segmentation", "delta_normal", "delta_depth", "delta_all"]
    ]
    assert (deltas == 0).all()
    # cosine is not one of paper D's normal metrics: changing it must not move Δ_normal
    changed = {**SHARED, "normal": {**SHARED["normal"], "cosine": -1.0}}
    other = baselines.delta_table(_result(changed)).set_index("method")
    row = baselines.shared_row("equal")
    assert other.loc[row, "delta_normal"] == table.loc[row, "delta_normal"]


def test_delta_table_excludes_metrics_with_zero_reference_and_says_so():
    result = _result(SHARED)
    result.runs[1].test["depth"] = {**SINGLE["depth"], "delta1": 0.0}
    table = baselines.delta_table(result)
    assert set(table["excluded"]) == {"depth/delta1"}
    expected = relative_performance(
        {"depth": {k: v for k, v in SHARED["depth"].items() if k != "delta1"}},
        {"depth": SINGLE["depth"]},
        LOWER_IS_BETTER,
    )["depth"]
    assert table.set_index("method").loc[baselines.shared_row("equal"), "delta_depth"] == (
        pytest.approx(expected)
    )


def test_metrics_table_reports_parameters_relative_to_the_shared_network():
    table = baselines.metrics_table(_result(SHARED)).set_index("method")
    assert table.loc[baselines.SINGLE_TASK, "params_rel"] == pytest.approx(3.0)
    assert table.loc[baselines.shared_row("pcgrad"), "segmentation/miou"] == 24.1


def test_claims_follow_the_measured_numbers():
    agreeing = {c.claim_id: c.verdict for c in claims.evaluate(_result(SHARED))}
    assert agreeing == {f"BL{i}": REPRODUCED for i in range(1, 5)} | {"BL5": PASSED}
    # swap the roles: shared bottom now wins segmentation and loses the rest -> all flip
    flipped = {
        c.claim_id: c.verdict
        for c in claims.evaluate(
            _result(
                {
                    **SINGLE,
                    "segmentation": {"miou": 30.0, "pixel_acc": 60.0},
                    "depth": SINGLE["depth"] | {"abs_err": 0.9},
                    "normal": SINGLE["normal"] | {"mean_angle": 30.0},
                },
                single_params=100,
                shared_params=100,
            )
        )
    }
    assert flipped == {f"BL{i}": NOT_REPRODUCED for i in range(1, 5)} | {"BL5": FAILED}


def test_parameter_ratios_are_checks_not_claims():
    result = _result(SHARED, architectures=PAPER_ARCHITECTURES)
    rows = {c.claim_id: c for c in claims.evaluate(result)}
    assert {i for i, c in rows.items() if c.is_check} == {"BL5", "BL9", "BL10"}
    assert all(c.kind == "claim" for i, c in rows.items() if i not in {"BL5", "BL9", "BL10"})


def test_delta_table_reproduces_paper_d_cross_stitch_and_mtan_rows():
    result = _result(SHARED, architectures=PAPER_ARCHITECTURES)
    assert result.rows[-2:] == ["Cross-Stitch", "MTAN"]
    table = baselines.delta_table(result).set_index("method")
    for row in ("Cross-Stitch", "MTAN"):
        for task in ("segmentation", "normal", "depth", "all"):
            paper = paper_numbers.value("D", "Table 2", row, task, "delta")
            assert table.loc[row, f"delta_{task}"] == pytest.approx(paper, abs=0.05), (row, task)
    # parameters stay relative to the shared bottom (paper D: 3.00 and 3.11)
    assert table.loc["Cross-Stitch", "params_rel"] == pytest.approx(3.0)
    assert table.loc["MTAN", "params_rel"] == pytest.approx(3.11)
    metrics = baselines.metrics_table(result).set_index("method")
    assert metrics.loc["MTAN", "segmentation/miou"] == 26.0
    assert metrics.loc["MTAN", "params_rel"] == pytest.approx(3.11)
    summary = baselines.summary_metrics(result)
    assert summary["params"]["Cross-Stitch"] == 300
    assert summary["delta"]["MTAN"]["delta_all"] == pytest.approx(2.7, abs=0.05)
    assert summary["config"]["architectures"] == ["cross_stitch", "mtan"]


def test_paper_table2_adds_the_configured_architectures_rows():
    both = baselines.paper_table2().set_index("method")
    assert list(both.index) == [
        "paper D: Single-Task",
        "paper D: Shared Bottom",
        "paper D: Cross-Stitch",
        "paper D: MTAN",
    ]
    assert both.loc["paper D: MTAN", "delta_all"] == 2.7
    assert both.loc["paper D: MTAN", "params_rel"] == 3.11
    assert both.loc["paper D: Cross-Stitch", "delta_segmentation"] == -4.9
    assert len(baselines.paper_table2(())) == 2
    assert list(baselines.paper_table2(("mtan",))["method"])[-1] == "paper D: MTAN"
    with pytest.raises(ConfigError, match="unknown architecture 'dag'"):
        baselines.paper_table2(("dag",))


def _verdicts(result) -> dict[str, str]:
    return {c.claim_id: c.verdict for c in claims.evaluate(result)}


def test_architecture_claims_follow_the_measured_numbers():
    agreeing = _verdicts(_result(SHARED, architectures=PAPER_ARCHITECTURES))
    checks = {"BL5": PASSED, "BL9": PASSED, "BL10": PASSED}
    assert agreeing == {f"BL{i}": REPRODUCED for i in (1, 2, 3, 4, 6, 7, 8)} | checks
    # cross-stitch and MTAN now lose to single-task (and MTAN to the shared bottom), and their
    # parameter ratios are 2.0 and 2.35 -> BL6-BL8 flip, checks BL9-BL10 fail, BL1-BL5 stay
    worse = {
        "segmentation": {"miou": 20.0, "pixel_acc": 50.0},
        "depth": SINGLE["depth"] | {"abs_err": 0.9},
        "normal": SINGLE["normal"] | {"mean_angle": 30.0},
    }
    flipped = _verdicts(
        _result(SHARED, architectures={"Cross-Stitch": (worse, 200), "MTAN": (worse, 235)})
    )
    assert flipped == (
        {f"BL{i}": REPRODUCED for i in range(1, 5)}
        | {"BL5": PASSED, "BL9": FAILED, "BL10": FAILED}
        | {f"BL{i}": NOT_REPRODUCED for i in range(6, 9)}
    )


def test_mtan_beating_single_task_but_not_the_shared_bottom_flips_only_bl8():
    # MTAN's Δ_T is positive but below the shared bottom's (paper: 2.7 > 1.7)
    shared_all = baselines.delta_table(_result(SHARED)).set_index("method")
    assert shared_all.loc[baselines.shared_row("equal"), "delta_all"] > 1.0
    weaker = {**SINGLE, "segmentation": {"miou": 28.0, "pixel_acc": 59.5}}  # Δ_T ≈ +0.5
    result = _result(SHARED, architectures={"MTAN": (weaker, 311)})
    measured = {c.claim_id: c for c in claims.evaluate(result)}
    assert set(measured) == {f"BL{i}" for i in range(1, 6)} | {"BL7", "BL8", "BL10"}
    assert measured["BL7"].verdict == REPRODUCED
    assert measured["BL8"].verdict == NOT_REPRODUCED
    assert measured["BL8"].paper_value == pytest.approx(1.0)
    assert measured["BL8"].our_value.startswith("-")  # one seed: "-x.xx ± 0.00"
    assert measured["BL8"].our_value.endswith("± 0.00")


def test_parameter_claims_say_why_a_ratio_differs():
    result = _result(
        SHARED, architectures={"Cross-Stitch": (CROSS_STITCH, 297), "MTAN": (MTAN, 235)}
    )
    measured = {c.claim_id: c for c in claims.evaluate(result)}
    assert measured["BL9"].verdict == PASSED  # 2.97 is within 5% of 3.00
    assert measured["BL9"].paper_value == pytest.approx(3.0)
    assert "below" not in measured["BL9"].details
    assert measured["BL10"].verdict == FAILED  # 2.35 vs 3.11
    assert measured["BL10"].our_value == pytest.approx(2.35)
    assert measured["BL10"].paper_value == pytest.approx(3.11)
    assert "24% below the paper's (3.11)" in measured["BL10"].details
    assert "lorenmt/mtan" in measured["BL10"].details


def test_no_architectures_gives_the_two_baselines_and_claims_bl1_to_bl5():
    result = _result(SHARED)
    assert result.config.architectures == ()
    assert "Cross-Stitch" not in result.rows and "MTAN" not in result.rows
    assert _verdicts(result) == {f"BL{i}": REPRODUCED for i in range(1, 5)} | {"BL5": PASSED}
    assert len(baselines.delta_table(result)) == 4


def test_config_validation_names_what_is_allowed():
    with pytest.raises(ConfigError, match="allowed: 'equal', 'uncertainty', 'pcgrad'"):
        baselines.baselines_config("smoke", balancers=("equal", "gradnorm"))
    with pytest.raises(ConfigError, match="at least two tasks"):
        baselines.baselines_config("smoke", tasks=("depth",))
    with pytest.raises(ConfigError, match="unknown baselines parameter 'epoch'"):
        baselines.baselines_config("smoke", epoch=3)
    with pytest.raises(ConfigError, match="unknown profile"):
        baselines.baselines_config("laptop")


def test_architectures_are_validated_like_balancers():
    with pytest.raises(
        ConfigError,
        match="^baselines.architectures: unknown architecture 'dag'; "
        "allowed: 'cross_stitch', 'mtan'$",
    ):
        baselines.baselines_config("smoke", architectures=("mtan", "dag"))
    with pytest.raises(ConfigError, match="^baselines.architectures has 'mtan' twice"):
        baselines.baselines_config("smoke", architectures=("mtan", "mtan"))
    assert baselines.baselines_config("smoke", architectures=[]).architectures == ()
    assert baselines.baselines_config("smoke", architectures=["mtan"]).architectures == ("mtan",)
    assert baselines.BaselinesConfig().architectures == ("cross_stitch", "mtan")


def test_smoke_units_train_every_network_log_it_and_predict_the_samples(tmp_path):
    config = baselines.baselines_config("smoke", balancers=("equal",), seeds=(3, 1), workers=2)
    result = baselines.result_from_runs(config, units.run_study(config, tmp_path, progress=False))
    shared = baselines.shared_row("equal")
    assert result.rows == [baselines.SINGLE_TASK, shared, "Cross-Stitch", "MTAN"]
    assert result.seeds == [3, 1]
    assert {p.name for p in (tmp_path / "networks").iterdir()} == {
        "seed3.json", "seed1.json", "logs"
    }
    for seed in (3, 1):
        logs = tmp_path / "networks" / "logs" / f"seed{seed}"
        assert {p.name for p in logs.iterdir()} == {
            "single-segmentation",
            "single-depth",
            "single-normal",
            "shared-equal",
            "cross_stitch",
            "mtan",
        }
        assert (logs / "mtan" / "metrics.json").is_file()
    params = {row: result.row_parameters(row) for row in result.rows}
    assert params["Cross-Stitch"] > params[shared] and params["MTAN"] > params[shared]
    assert {c.claim_id for c in claims.evaluate(result)} == {f"BL{i}" for i in range(1, 11)}
    # only the figure seed's (the first) networks predict the samples
    assert all(bool(run.predictions) == (run.seed == 3) for run in result.runs)
    predictions = baselines.sample_predictions(result)
    for row in result.rows:
        assert set(predictions[row]) == set(TASKS)
        assert predictions[row]["segmentation"].shape == result.sample_targets["segmentation"].shape
        assert predictions[row]["segmentation"].dtype == torch.int64
        assert predictions[row]["normal"].dtype == torch.float32
    assert torch.isfinite(torch.tensor(baselines.delta_table(result)["delta_all"].to_numpy())).all()
    history = baselines.training_history(result)
    assert set(history["run"]) == set(result.rows) and set(history["seed"]) == {3, 1}
    # a seed's networks do not depend on the other seeds or on the other networks
    alone = baselines.baselines_config(
        "smoke", balancers=("equal",), architectures=(), seeds=(1,)
    )
    alone_result = baselines.result_from_runs(
        alone, units.run_study(alone, tmp_path / "alone", progress=False)
    )
    assert alone_result.rows == [baselines.SINGLE_TASK, shared]
    for row in alone_result.rows:
        assert alone_result.row_scores(row, 1) == result.row_scores(row, 1)
    assert [c.claim_id for c in claims.evaluate(alone_result)] == [f"BL{i}" for i in range(1, 6)]


def test_a_unit_is_read_back_when_its_settings_match_and_retrained_when_not(tmp_path):
    config = baselines.baselines_config("smoke", balancers=("equal",), architectures=())
    first = units.run_unit("networks", 0, config, tmp_path, progress=False)
    path = units.unit_path(tmp_path, "networks", 0)
    stamp = path.stat().st_mtime_ns
    assert units.run_unit("networks", 0, config, tmp_path, progress=False) == first
    assert path.stat().st_mtime_ns == stamp
    # another figure seed: this seed's networks no longer store the predictions
    other = baselines.baselines_config(
        "smoke", balancers=("equal",), architectures=(), seeds=(5, 0)
    )
    again = units.run_unit("networks", 0, other, tmp_path, progress=False)
    assert all(run["predictions"] == {} for run in again)
    assert [run["test"] for run in again] == [run["test"] for run in first]


def test_unit_jobs_run_the_costliest_first_and_the_result_restores_table_order():
    config = baselines.baselines_config("cpu")
    jobs = units.unit_jobs("networks", config)
    assert [job.row for job in jobs[:2]] == ["MTAN", "Cross-Stitch"]
    assert jobs[-1].row == baselines.SINGLE_TASK
    with pytest.raises(ConfigError, match="unknown baselines unit kind 'table'"):
        units.unit_jobs("table", config)
    assert config.seeds == (0, 1, 2) and config.threads == 1 and config.workers == 2


def test_encoded_predictions_round_trip_at_the_stored_precision():
    normals = torch.nn.functional.normalize(torch.randn(2, 3, 6, 8), dim=1)
    back = baselines.decode_tensor(baselines.encode_tensor(normals))
    assert back.dtype == torch.float32 and back.shape == normals.shape
    assert (back - normals).abs().max() < 1e-3
    classes = torch.randint(-1, 13, (2, 6, 8))
    assert torch.equal(baselines.decode_tensor(baselines.encode_tensor(classes)), classes)


def _worse_normals(mean_angle: float) -> dict:
    """Paper D's shared-bottom row with a worse mean angle on surface normals."""
    return {**SHARED, "normal": {**SHARED["normal"], "mean_angle": mean_angle}}


def test_the_discussion_quotes_this_runs_numbers():
    result = _result(_worse_normals(40.0), architectures=PAPER_ARCHITECTURES)
    verdicts = claims.evaluate(result)
    text = discussion.discussion(result, verdicts)
    assert not text.startswith("#")
    table = baselines.delta_table(result).set_index("method")
    shared = baselines.shared_row("equal")
    delta_normal = table.loc[shared, "delta_normal"]
    assert delta_normal < 0
    assert f"loses most on surface normals: Δ {delta_normal:+.2f} %" in text
    assert "(40.00° mean angle against single-task 17.50° mean angle)" in text
    constant = discussion.constant_predictor(result.config)
    assert 0 < constant["segmentation"]["miou"] < 100
    assert 0 < constant["normal"]["mean_angle"] < 90 and constant["depth"]["abs_err"] > 0
    assert (
        f"segmentation {constant['segmentation']['miou']:.2f} % mIoU, "
        f"{constant['segmentation']['pixel_acc']:.2f} % pixel accuracy (single-task 27.50 % mIoU"
    ) in text
    assert f"seed {result.config.seeds[0]} only, {result.config.epochs} epochs" in text
    for claim in verdicts:
        if claim.is_check:
            failed = f"Check {claim.claim_id} failed (ours {claim.our_value},"
            assert (failed in text) == (claim.verdict == FAILED)
        elif claim.verdict == REPRODUCED:
            assert f"{claim.claim_id} is" not in text
        else:
            assert f"{claim.claim_id} is not reproduced (ours {claim.our_value}," in text
    by_id = {c.claim_id: c for c in verdicts}
    assert by_id["BL2"].verdict == NOT_REPRODUCED and by_id["BL4"].verdict == NOT_REPRODUCED
    assert f"surface normals {delta_normal:+.2f} %), and the surface normals term" in text


def test_the_discussion_changes_when_a_number_changes():
    texts = []
    for angle in (30.0, 40.0):
        result = _result(_worse_normals(angle), architectures=PAPER_ARCHITECTURES)
        texts.append(discussion.discussion(result, claims.evaluate(result)))
    assert texts[0] != texts[1]
    assert "30.00° mean angle" in texts[0] and "30.00° mean angle" not in texts[1]


def test_the_discussion_names_signs_one_seed_cannot_settle():
    # paper D's own shared bottom: Δ_T +1.7, within SIGN_MARGIN of zero
    result = _result(SHARED)
    verdicts = {c.claim_id: c for c in claims.evaluate(result)}
    text = discussion.discussion(result, list(verdicts.values()))
    assert f"BL4 ({verdicts['BL4'].our_value})" in text
    assert "loses most" in text  # on segmentation (paper D: -7.6)
    assert "BL5 (" not in text  # parameter ratios have no sign to flip
