"""Paper E's experiments: units, tables, claims that can fail, figures, the partition export and
the Discussion, on one smoke-profile study (trained once per module, ~20 s)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mtlrepro import report
from mtlrepro.config import ConfigError
from mtlrepro.experiments.partition import claims, discussion, figures, study, units
from mtlrepro.report import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, VERDICTS


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    config = units.study_config("smoke", threads=1)
    runs_dir = tmp_path_factory.mktemp("runs")
    records = units.run_study(config, runs_dir, progress=False)
    return config, runs_dir, study.runs_frame(records)


def _replace(runs: pd.DataFrame, mask: pd.Series, column: str, values: list) -> pd.DataFrame:
    """``runs`` with ``column`` of the rows selected by ``mask`` replaced, row by row."""
    changed = runs.copy()
    changed[column] = changed[column].astype(object)
    for index, value in zip(changed.index[mask], values, strict=True):
        changed.at[index, column] = value
    return changed


# --- units ---------------------------------------------------------------------------------------
def test_units_write_one_file_per_kind_and_its_seeds_and_reuse_them(smoke):
    config, runs_dir, runs = smoke
    files = sorted(p.relative_to(runs_dir).as_posix() for p in runs_dir.rglob("*.json"))
    expected = [f"{k}/seed{s}.json" for k in units.UNIT_KINDS for s in units.seeds_of(k, config)]
    assert files == sorted(expected)
    before = {p: p.stat().st_mtime_ns for p in runs_dir.rglob("*.json")}
    again = units.run_study(config, runs_dir, progress=False)  # read, not retrained
    assert len(again) == len(runs)
    assert {p: p.stat().st_mtime_ns for p in runs_dir.rglob("*.json")} == before
    stored = json.loads((runs_dir / "search" / "seed0.json").read_text())
    assert stored["settings"]["distill_iterations"] == config.distill_iterations
    assert "weights" not in runs.columns  # the teachers' weights stay in their file


def test_the_search_scores_every_partition_it_plans(smoke):
    config, _, runs = smoke
    search = study.of_kind(runs, "search")
    counts = search.groupby("job").size()
    assert counts["random"] == config.random_partitions
    assert counts["diagonal"] == len(config.diagonals) * (2 + config.sharing_samples)
    per_es = config.es_initial + 2 * config.es_directions * config.es_steps
    assert counts["es"] == len(config.es_penalties) * per_es
    assert counts["es_final"] == len(config.es_penalties)
    assert ((search["score"] >= 0) & np.isfinite(search["score"])).all()
    # every task's score is its accuracy over the teacher's (floored at chance)
    for r in search.itertuples():
        assert r.score == pytest.approx(np.mean(list(r.task_scores.values())))
    # the diagonal partitions keep their diagonal whatever the sharing
    for r in study.of_kind(runs, "search", "diagonal").itertuples():
        np.testing.assert_allclose(np.diag(r.P), r.diagonal)


def test_table1_trains_the_random_partitions_the_search_scored(smoke):
    config, _, runs = smoke
    scored = study.of_kind(runs, "search", "random").set_index("index")
    for r in study.of_kind(runs, "table1").itertuples():
        np.testing.assert_array_equal(r.P, scored.at[r.index, "P"])
        assert set(r.val) == {str(b) for b in (*config.short_epochs, config.epochs)}
        seconds = [r.cpu_seconds[str(b)] for b in (*config.short_epochs, config.epochs)]
        assert seconds == sorted(seconds) and seconds[0] > 0


def test_random_partitions_are_seeded_and_distinct():
    a, b = units.random_P(6, 0, 3), units.random_P(6, 0, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, units.random_P(6, 0, 4))
    assert not np.array_equal(a, units.random_P(6, 1, 3))


def test_table2_trains_the_baselines_and_the_es_partition_found(smoke):
    config, _, runs = smoke
    table2 = study.of_kind(runs, "table2")
    assert set(table2["row"]) == set(study.table2_row_order(config))
    found = study.found_partitions(runs)
    found = found[(found["penalty"] == config.table2_penalty)
                  & (found["seed"] == config.search_seeds[0])].iloc[0]
    es = table2[table2["row"] == units.es_row(config.table2_penalty)]
    for P in es["P"]:
        np.testing.assert_allclose(P, found["P"])
    share_all = table2[table2["partition"] == "share_all"].iloc[0]
    assert share_all["average_use"] == 1.0
    assert share_all["channels"] == {t: config.channels for t in study.tasks_of(runs)}


def test_search_needs_the_runs_folder_to_read_its_teachers():
    config = units.study_config("smoke")
    with pytest.raises(ConfigError, match="runs folder"):
        units.score_partition(units.random_P(6, 0, 0), 0, config)


def test_es_row_matches_the_papers_label():
    assert units.es_row(1e-3) == "es (wd 1e-3)"
    assert units.es_row(0.0) == "es (wd 0)"
    assert units.es_row(2.5e-4) == "es (wd 2.5e-4)"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"short_epochs": [2, 1]}, r"partition\.short_epochs must be two increasing"),
        ({"short_epochs": [1, 3]}, r"partition\.short_epochs"),  # not below epochs (3)
        ({"table1_partitions": 9}, r"must not exceed partition\.random_partitions"),
        ({"table1_partitions": 2}, r"at least 3"),
        ({"table2_penalty": 0.5}, r"partition\.table2_penalty \(0\.5\) must be one of"),
        ({"diagonals": [0.0]}, r"partition\.diagonals"),
        ({"mask_method": "greedy"}, r"mask_method"),
        ({"es_top_k": 3}, r"partition\.es_top_k"),
        ({"seeds": []}, r"partition\.seeds must hold at least one seed"),
        ({"nope": 1}, r"unknown partition parameter 'nope'"),
    ],
)
def test_study_config_rejects_bad_values_with_the_params_name(overrides, message):
    with pytest.raises(ConfigError, match=message):
        units.study_config("smoke", **overrides)


def test_presets_keep_table1_within_the_search():
    for profile in ("smoke", "cpu", "paper"):
        config = units.study_config(profile)
        assert config.table1_partitions <= config.random_partitions
        assert config.table2_penalty in config.es_penalties


# --- tables ----------------------------------------------------------------------------------
def test_correlation_table_is_pearson_of_each_proxy_with_the_final_accuracy(smoke):
    config, _, runs = smoke
    frame = study.correlation_frame(runs, config)
    trained = study.of_kind(runs, "table1").sort_values("index")
    scored = study.of_kind(runs, "search", "random").set_index("index")
    task = study.tasks_of(runs)[0]
    final = [v[str(config.epochs)][task] for v in trained["val"]]
    dist = [scored.at[i, "task_scores"][task] for i in trained["index"]]
    row = frame[frame["task"] == task].iloc[0]
    if np.std(final) > 0 and np.std(dist) > 0:
        assert row[study.DISTILL] == pytest.approx(np.corrcoef(dist, final)[0, 1])
    else:
        assert np.isnan(row[study.DISTILL])
    table = study.correlation_table(runs, config)
    assert list(table.index) == [*study.tasks_of(runs), "mean"]
    # the paper's column: pedestrians stand for daimlerpedcls
    assert table.loc["pedestrian", f"{study.DISTILL}_paper"] == pytest.approx(0.477)


def test_pearson_is_undefined_for_a_constant_side():
    assert np.isnan(study.correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert study.correlation([1.0, 2.0, 3.0], [2.0, 4.0, 7.0]) > 0.9


def test_teacher_table_has_a_row_per_task_and_a_column_per_search_seed(smoke):
    config, _, runs = smoke
    table = study.teacher_table(runs)
    assert list(table.index) == list(study.tasks_of(runs))
    assert list(table.columns) == [f"seed {s}" for s in config.search_seeds]
    assert ((table >= 0) & (table <= 100)).all().all()


def test_cost_table_ratios_are_against_the_distillation(smoke):
    config, _, runs = smoke
    costs = study.cost_table(runs, config)
    assert costs.at["distillation", "relative_to_distillation"] == 1.0
    full = costs.at["full training", "cpu_seconds"]
    assert costs.at["full training", "relative_to_distillation"] == pytest.approx(
        full / costs.at["distillation", "cpu_seconds"])


def test_summary_metrics_name_their_source_and_headline_numbers(smoke, tmp_path):
    config, _, runs = smoke
    table1, costs = study.correlation_table(runs, config), study.cost_table(runs, config)
    table2 = study.accuracy_table(runs, config)
    metrics = study.summary_metrics(config, table1, costs, table2)
    assert metrics["profile"] == "smoke" and metrics["dataset"] == "decathlon"
    assert metrics["table2_total"]["share all"] == table2.loc["share all", study.TOTAL]
    assert set(metrics["table1_mean_correlation"]) == {
        *(study.short_label(b) for b in config.short_epochs), study.DISTILL}
    report.write_metrics(metrics, tmp_path)  # JSON-able (NaN correlations become null)


def test_table2_total_is_the_mean_of_the_task_columns(smoke):
    config, _, runs = smoke
    table = study.accuracy_table(runs, config)
    tasks = list(study.tasks_of(runs))
    assert list(table.index) == study.table2_row_order(config)
    frame = study.accuracy_frame(runs)
    np.testing.assert_allclose(frame[study.TOTAL], frame[tasks].mean(axis=1))
    assert table.loc["share all", "total_paper"] == pytest.approx(79.8)
    assert table.loc["es (wd 1e-3)", "flowers_paper"] == pytest.approx(81.3)
    assert (table["seeds"] == len(config.seeds)).all()


def test_every_found_partition_is_exported_with_its_mask(smoke, tmp_path):
    config, _, runs = smoke
    paths = study.export_partitions(runs, config, tmp_path)
    names = {p.name for p in paths}
    assert "es-wd0p001-seed0_P.csv" in names and "es-wd0p001-seed0_M.csv" in names
    assert "random-best-seed0_M.csv" in names and "share_all_P.csv" in names
    P = pd.read_csv(tmp_path / "partitions" / "es-wd0p001-seed0_P.csv")
    M = pd.read_csv(tmp_path / "partitions" / "es-wd0p001-seed0_M.csv")
    assert list(P.columns) == list(study.tasks_of(runs)) == list(M.columns)
    assert M.shape == (config.channels, len(P.columns)) and set(np.unique(M)) <= {0, 1}
    found = study.table2_masks(runs, config)
    np.testing.assert_allclose(P.to_numpy(), found[0])
    np.testing.assert_array_equal(M.to_numpy(), found[1])


def test_the_deployment_table_times_each_tasks_path_with_and_without_the_partition(smoke):
    config, _, runs = smoke
    _, masks = study.table2_masks(runs, config)
    table = study.deployment_table(config, masks)
    assert list(table.index) == list(study.tasks_of(runs))
    assert (table["channels"] == masks.sum(0)).all()
    assert (table["of_channels"] == config.channels).all()
    fewer = table["channels"] < table["of_channels"]  # masked channels leave the path
    assert (table.loc[fewer, "parameters_partitioned"]
            < table.loc[fewer, "parameters_unpartitioned"]).all()
    assert (table.loc[fewer, "macs_partitioned"] < table.loc[fewer, "macs_unpartitioned"]).all()
    for batch in study.DEPLOYMENT_BATCH_SIZES:
        latency = f"latency_b{batch}_ms"
        ratio = table[f"{latency}_unpartitioned"] / table[f"{latency}_partitioned"]
        np.testing.assert_allclose(table[f"speedup_b{batch}"], ratio)


def test_benchmark_compares_both_milps_and_the_sampler():
    config = units.study_config("smoke")
    table = study.benchmark_table(config)
    assert set(table["method"]) == {"milp_channels", "milp_patterns", "sampler"}
    patterns = table[table["method"] == "milp_patterns"].iloc[0]
    sampler = table[table["method"] == "sampler"].iloc[0]
    assert patterns["status"] == "optimal"
    # the optimal mask is at least as close to P̃ as the sampler's
    assert patterns["total_error_channels"] <= sampler["total_error_channels"] + 1e-9


# --- claims --------------------------------------------------------------------------------------
def test_claims_have_valid_verdicts(smoke):
    config, _, runs = smoke
    verdicts = claims.evaluate(runs, config)
    assert [c.claim_id for c in verdicts] == ["E1", "E2", "E3", "E4", "E5", "E6"]
    assert all(c.verdict in VERDICTS and c.profile == "smoke" for c in verdicts)


def test_e2_follows_the_es_partitions_accuracy(smoke):
    config, _, runs = smoke
    es = units.es_row(config.table2_penalty)
    table2 = runs["kind"] == "table2"
    tasks = study.tasks_of(runs)
    values = [{t: (100.0 if row == es else 1.0) + seed for t in tasks}
              for row, seed in zip(runs.loc[table2, "row"], runs.loc[table2, "seed"],
                                   strict=True)]
    better = _replace(runs, table2, "test", values)
    assert claims.evaluate(better, config)[1].verdict == REPRODUCED
    worse = _replace(runs, table2, "test", [{t: 200.0 - v[t] for t in v} for v in values])
    assert claims.evaluate(worse, config)[1].verdict == NOT_REPRODUCED
    # an ES partition that uses every channel cannot reproduce E2
    full = _replace(better, table2, "average_use", [1.0] * int(table2.sum()))
    assert claims.evaluate(full, config)[1].verdict == NOT_REPRODUCED


def test_e5_follows_share_alls_lead_over_the_other_baselines(smoke):
    config, _, runs = smoke
    table2 = runs["kind"] == "table2"
    tasks = study.tasks_of(runs)
    rows, seeds = runs.loc[table2, "row"], runs.loc[table2, "seed"]

    def with_totals(totals: dict[str, float]) -> pd.DataFrame:
        values = [{t: totals.get(row, 50.0) + seed for t in tasks}
                  for row, seed in zip(rows, seeds, strict=True)]
        return _replace(runs, table2, "test", values)

    best = with_totals({study.SHARE_ALL: 60.0, "independent": 40.0})
    assert claims.evaluate(best, config)[4].verdict == REPRODUCED
    beaten = with_totals({study.SHARE_ALL: 45.0, "share half": 55.0})
    assert claims.evaluate(beaten, config)[4].verdict == NOT_REPRODUCED


def test_e6_follows_each_tasks_score_against_its_channels(smoke):
    config, _, runs = smoke
    random = (runs["kind"] == "search") & (runs["job"] == "random")
    tasks = study.tasks_of(runs)
    shares = [[P[k][k] for k in range(len(tasks))] for P in runs.loc[random, "P"]]

    def with_scores(sign: float) -> pd.DataFrame:
        values = [{t: 0.5 + sign * share[k] / 2 for k, t in enumerate(tasks)}
                  for share in shares]
        return _replace(runs, random, "task_scores", values)

    assert claims.evaluate(with_scores(+1.0), config)[5].verdict == REPRODUCED
    assert claims.evaluate(with_scores(-1.0), config)[5].verdict == NOT_REPRODUCED


def test_e3_follows_each_tasks_spread_over_sharings(smoke):
    config, _, runs = smoke
    tasks = study.tasks_of(runs)
    diagonal = (runs["kind"] == "search") & (runs["job"] == "diagonal")
    low = list((runs["diagonal"] == min(config.diagonals))[diagonal])

    def with_scores(wide_at_low: Any) -> pd.DataFrame:
        """Per sharing k and task j: scores alternating 0/1 where ``wide_at_low(j)`` says the
        task varies (at the lowest diagonal if true, else at the others), 0.5 elsewhere."""
        values = [{t: float(k % 2) if wide_at_low(j) == lo else 0.5 for j, t in enumerate(tasks)}
                  for k, lo in enumerate(low)]
        return _replace(runs, diagonal, "task_scores", values)

    assert claims.evaluate(with_scores(lambda j: True), config)[2].verdict == REPRODUCED
    assert claims.evaluate(with_scores(lambda j: False), config)[2].verdict == NOT_REPRODUCED
    mixed = claims.evaluate(with_scores(lambda j: j % 2 == 0), config)[2]
    assert mixed.verdict == INCONCLUSIVE  # half the tasks one way, half the other
    spread = study.sharing_spread(with_scores(lambda j: True), by_task=True)
    assert len(spread) == len(config.search_seeds) * len(config.diagonals) * len(tasks)
    assert set(spread.loc[spread["diagonal"] == min(config.diagonals), "range"]) == {1.0}


def test_e4_follows_the_channels_given_to_easy_tasks(smoke):
    config, _, runs = smoke
    tasks = study.tasks_of(runs)
    teachers = runs["kind"] == "teachers"
    accuracy = [10.0 * (k % len(tasks) + 1) for k in range(int(teachers.sum()))]
    runs = _replace(runs, teachers, "val_accuracy", accuracy)
    finals = (runs["kind"] == "search") & (runs["job"] == "es_final")
    n = len(tasks)
    easy_small = [np.diag(np.linspace(0.9, 0.1, n) + 0.01 * k).tolist()
                  for k in range(int(finals.sum()))]
    assert claims.evaluate(_replace(runs, finals, "P", easy_small), config)[3].verdict == (
        REPRODUCED)
    easy_large = [np.diag(np.linspace(0.1, 0.9, n) + 0.01 * k).tolist()
                  for k in range(int(finals.sum()))]
    assert claims.evaluate(_replace(runs, finals, "P", easy_large), config)[3].verdict == (
        NOT_REPRODUCED)


def test_spearman_ranks():
    assert study.correlation([1, 2, 3], [10, 30, 20], "spearman") == pytest.approx(0.5)
    # ties at average ranks: ranks (1, 2, 3, 4) and (2.5, 2.5, 4, 1), r = -1.5 / sqrt(5 * 4.5)
    tied = study.correlation([1, 2, 3, 4], [5, 5, 9, 1], "spearman")
    assert tied == pytest.approx(-1.5 / np.sqrt(22.5))
    assert np.isnan(study.correlation([1, 1, 1], [1, 2, 3], "spearman"))


# --- figures and the discussion --------------------------------------------------------------
def test_figures_draw_and_refuse_bad_input(smoke):
    config, _, runs = smoke
    search = study.of_kind(runs, "search")
    assert figures.plot_distillation_vs_accuracy(study.fig3_frame(runs, config)).axes
    fig = figures.plot_search(search[search["job"] == "random"], study.sharing_frame(runs),
                              search[search["job"].isin(["es", "es_final"])])
    assert all(ax.get_xlabel() for ax in fig.axes[:3]) and fig.axes[0].get_ylabel()
    assert figures.plot_task_channels(study.task_channels_frame(runs)).axes
    P_tilde, masks = study.table2_masks(runs, config)
    assert figures.plot_partition(P_tilde, masks, study.tasks_of(runs)).axes
    with pytest.raises(ConfigError, match="lacks column"):
        figures.plot_task_channels(pd.DataFrame())
    with pytest.raises(ConfigError, match="n × n"):
        figures.plot_partition(P_tilde, masks, ["a"])
    many = pd.DataFrame({"diagonal": np.arange(9) / 10 + 0.05, "overlap": 0.1, "score": 0.5})
    with pytest.raises(ConfigError, match="at most 8 series"):
        figures.plot_search(search[search["job"] == "random"], many,
                            search[search["job"].isin(["es", "es_final"])])


def test_the_discussion_quotes_this_runs_numbers(smoke):
    config, _, runs = smoke
    table1 = study.correlation_table(runs, config)
    costs = study.cost_table(runs, config)
    table2 = study.accuracy_table(runs, config)
    verdicts = claims.evaluate(runs, config)
    text = discussion.discussion(config, runs, table1, costs, table2, verdicts)
    assert not text.startswith("#")
    assert f"share all {table2.loc['share all', 'total']:.1f} ±" in text
    assert f"{costs.at['distillation', 'cpu_seconds']:.1f} CPU s" in text
    for claim in verdicts:
        if claim.verdict not in (REPRODUCED, "not applicable"):
            assert f"{claim.claim_id} is {claim.verdict}" in text
    assert "Deployed one task at a time" not in text
    deployment = pd.DataFrame({
        "macs_partitioned": [50.0, 80.0], "macs_unpartitioned": [100.0, 100.0],
        "speedup_b1": [1.1, 1.3], "speedup_b16": [1.4, 1.2],
    }, index=["a", "b"])
    text = discussion.discussion(config, runs, table1, costs, table2, verdicts, deployment)
    assert ("each task 50-80 % of the unpartitioned path's multiply-accumulates; at batch 16 "
            "the task paths run 1.20-1.40× as fast as unpartitioned (batch 1: 1.10-1.30×" in text)

