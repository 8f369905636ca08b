"""Paper D's experiments: units, tables, claims that can fail, figures and the Discussion, on
one smoke-profile study (trained once per module, ~10 s)."""

from __future__ import annotations

import json

import networkx as nx
import pandas as pd
import pytest

from mtlrepro.config import ConfigError
from mtlrepro.experiments.dag import claims, discussion, figures, study, units
from mtlrepro.models import count_parameters
from mtlrepro.report import NOT_REPRODUCED, REPRODUCED, VERDICTS


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    config = units.study_config("smoke", threads=1)
    runs_dir = tmp_path_factory.mktemp("runs")
    records = units.run_study(config, runs_dir, progress=False)
    return config, runs_dir, study.runs_frame(records)


def _with_test(runs: pd.DataFrame, row: str, task: str, metric: str, value: float):
    """``runs`` with one row's test metric replaced (every seed)."""
    changed = runs.copy()
    changed["test"] = [
        {t: {**m, metric: value} if t == task else m for t, m in test.items()}
        if r == row else test
        for r, test in zip(changed["row"], changed["test"], strict=True)
    ]
    return changed


def test_units_write_one_file_per_kind_and_seed_and_reuse_them(smoke):
    config, runs_dir, runs = smoke
    files = sorted(p.relative_to(runs_dir).as_posix() for p in runs_dir.rglob("*.json"))
    assert files == [f"{k}/seed{s}.json" for k in sorted(units.UNIT_KINDS) for s in config.seeds]
    before = {p: p.stat().st_mtime_ns for p in runs_dir.rglob("*.json")}
    again = units.run_study(config, runs_dir, progress=False)  # read, not retrained
    assert len(again) == len(runs)
    assert {p: p.stat().st_mtime_ns for p in runs_dir.rglob("*.json")} == before
    stored = json.loads((runs_dir / "nyu" / "seed0.json").read_text())
    assert stored["settings"]["topology_flow"] == config.topology_flow


def test_one_search_yields_every_branch_and_the_tables_rows(smoke):
    config, _, runs = smoke
    nyu = set(runs.loc[runs["kind"] == "nyu", "row"])
    ours = units.ours(config.topology_flow)
    assert {ours, *units.BRANCH_ROWS.values(), "w/o read-in/out", "w/o L_sq", "w/o warm-up",
            "w/o search + FBR", "Ours (complete DAG)", "Shared Bottom", "MTAN"} <= nyu
    branches = runs[(runs["kind"] == "nyu") & runs["row"].isin([ours, *units.BRANCH_ROWS.values()])]
    assert len(branches) == len(units.SEARCH_BRANCHES) * len(config.seeds)
    # the branches of one search share its search space
    assert branches.groupby("seed")["search_parameters"].nunique().max() == 1


def test_study_config_rejects_bad_values_with_the_params_name():
    with pytest.raises(ConfigError, match=r"dag\.flows"):
        units.study_config("smoke", flows=[0])
    with pytest.raises(ConfigError, match=r"dag\.topology_flow"):
        units.study_config("smoke", topology_flow=9)
    with pytest.raises(ConfigError, match=r"dag\.budget_fraction"):
        units.study_config("smoke", budget_fraction=-0.1)
    with pytest.raises(ConfigError, match=r"unknown dag parameter 'nope'"):
        units.study_config("smoke", nope=1)


def test_deltas_are_zero_for_single_task_and_eq_10_for_the_others(smoke):
    _, _, runs = smoke
    frame = study.deltas(runs, "nyu")
    single = frame[frame["row"] == "Single-Task"]
    assert (single[["segmentation", "depth", "normal", "all"]] == 0).all().all()
    shared = frame[frame["row"] == "Shared Bottom"].iloc[0]
    assert shared["params"] == 1.0
    assert shared["all"] == pytest.approx(shared[["segmentation", "depth", "normal"]].mean())


def test_table1_averages_the_alphabets_and_counts_every_single_task_network(smoke):
    config, _, runs = smoke
    table1 = study.accuracy_table(runs)
    assert list(table1.index)[:2] == ["Single-Task", "Shared Bottom"]
    assert table1.loc["Single-Task", "accuracy_paper"] == pytest.approx(93.48)
    glyphs = runs[runs["kind"] == "glyphs"]
    singles = glyphs[glyphs["network"] == "single"]
    assert len(singles) == config.alphabets * len(config.seeds)
    shared = glyphs.loc[glyphs["row"] == "Shared Bottom", "parameters"].iloc[0]
    seed0 = singles[singles["seed"] == config.seeds[0]]
    assert table1.loc["Single-Task", "params"] == pytest.approx(seed0["parameters"].sum() / shared)
    record = glyphs[glyphs["row"] == "Shared Bottom"].iloc[0]
    mean = sum(record.test[t]["accuracy"] for t in record.tasks) / len(record.tasks)
    assert table1.loc["Shared Bottom", "accuracy"] == pytest.approx(mean)


def test_d1_fails_when_the_shared_bottom_wins_on_glyphs(smoke):
    config, _, runs = smoke
    glyph_tasks = units.tasks_of("glyphs", config)
    strong = runs
    for task in glyph_tasks:
        strong = _with_test(strong, "Shared Bottom", task, "accuracy", 100.0)
    assert claims.evaluate(strong, config)[0].verdict == NOT_REPRODUCED


def test_every_scenario_has_its_own_single_task_networks(smoke):
    config, _, runs = smoke
    for kind in units.UNIT_KINDS:
        tasks = units.tasks_of(kind, config)
        singles = runs[(runs["kind"] == kind) & (runs["network"] == "single")]
        assert sorted(t[0] for t in singles["tasks"]) == sorted(tasks)
    table4 = study.delta_table(runs, "pascal", "Table 4", study.main_rows(runs, "pascal"))
    assert table4.loc["Shared Bottom", "delta_T_paper"] == pytest.approx(-5.0)
    assert set(study.absolute_table(runs, "pascal").columns.get_level_values(0)) == {
        *units.SCENARIO_TASKS["pascal"], ""}


def test_tables_carry_the_paper_values(smoke):
    config, _, runs = smoke
    table2 = study.delta_table(runs, "nyu", "Table 2", study.main_rows(runs, "nyu"))
    assert table2.loc["Shared Bottom", "delta_T_paper"] == pytest.approx(1.7)
    assert table2.loc["MTAN", "params_paper"] == pytest.approx(3.11)
    table6 = study.ablation_table(runs, config)
    assert table6.iloc[0]["delta_T_paper"] == pytest.approx(11.1)
    table10 = study.stage_table(runs, config)
    assert table10.loc["with three-stages", "delta_T"] == 0.0
    assert table10.loc["w/o fine-tune", "delta_T_paper"] == pytest.approx(-8.9)


def test_topology_and_graph_export(smoke, tmp_path):
    config, _, runs = smoke
    table5 = study.topology_table(runs, units.ours(config.topology_flow))
    assert list(table5.index) == ["segmentation", "depth", "normal"]
    assert ((table5["sparsity"] >= 0) & (table5["sparsity"] <= 1)).all()
    first = study.searched(runs, units.ours(config.topology_flow)).iloc[0]
    graph = study.graphs(first)["segmentation"]
    hidden = [(i, j) for i, j in graph.edges if 1 <= i and j <= config.n_states]
    if len(config.seeds) == 1:
        assert table5.loc["segmentation", "sparsity"] == len(hidden) / first.search_edges
    written = study.export_graphs(runs, tmp_path)
    assert len(written) == sum(len(t) for t in runs.loc[runs["network"] == "dag", "tasks"])
    graph = nx.node_link_graph(json.loads(written[0].read_text()), edges="edges")
    n = config.n_states
    assert set(graph.nodes) == set(range(n + 2))
    assert nx.has_path(graph, 0, n + 1)


def test_a_finalised_network_rebuilt_from_its_graphs_has_the_trained_size(smoke):
    config, _, runs = smoke
    for record in runs[runs["network"] == "dag"].itertuples():
        if record.branch in (None, "flow", "random", "threshold"):
            rebuilt = study.finalised_network(record, config)
            assert count_parameters(rebuilt) == record.parameters, record.row


def test_flow_curve_measures_degradation_against_the_complete_dag(smoke):
    config, _, runs = smoke
    curve = study.flow_curve(runs, config)
    assert curve.loc["Ours (complete DAG)", "degradation"] == 0.0
    assert curve.loc["Ours (complete DAG)", "flow"] == config.n_states - 1
    assert (curve["search_params"] >= curve["params"] - 1e-9).all()


def test_claims_have_valid_verdicts(smoke):
    config, _, runs = smoke
    verdicts = claims.evaluate(runs, config)
    assert [c.claim_id for c in verdicts] == ["D1", "D2", "D3", "D4", "D5", "D6"]
    assert all(c.verdict in VERDICTS and c.profile == "smoke" for c in verdicts)


def test_d3_follows_which_reduction_performs_better(smoke):
    config, _, runs = smoke
    ours = units.ours(config.topology_flow)
    better = _with_test(runs, "random reduction", "segmentation", "miou", 100.0)
    assert claims.evaluate(better, config)[2].verdict == NOT_REPRODUCED
    for row in ("random reduction", "threshold reduction"):
        runs = _with_test(runs, row, "segmentation", "miou", 1e-3)
    assert claims.evaluate(_with_test(runs, ours, "segmentation", "miou", 100.0),
                           config)[2].verdict == REPRODUCED


def test_d1_fails_when_the_shared_bottom_wins(smoke):
    config, _, runs = smoke
    strong = _with_test(runs, "Shared Bottom", "segmentation", "miou", 100.0)
    assert claims.evaluate(strong, config)[0].verdict == NOT_REPRODUCED


def test_the_discussion_quotes_this_runs_numbers(smoke):
    config, _, runs = smoke
    tables = {k: study.delta_table(runs, k, units.SCENARIO_TABLE[k], study.main_rows(runs, k))
              for k in units.SCENARIO_TASKS}
    table2 = tables["nyu"]
    table1 = study.accuracy_table(runs)
    verdicts = claims.evaluate(runs, config)
    text = discussion.discussion(config, runs, tables, table1, verdicts)
    assert f"Shared Bottom {table1.loc['Shared Bottom', 'accuracy']:.2f} ±" in text
    assert not text.startswith("#")
    assert f"Shared Bottom {table2.loc['Shared Bottom', 'delta_T']:+.2f} ±" in text
    for claim in verdicts:
        if claim.verdict not in (REPRODUCED, "not applicable"):
            assert f"{claim.claim_id} is {claim.verdict}" in text


def test_the_glyph_sentence_names_small_searched_networks_only_when_they_trail(smoke):
    config, _, runs = smoke
    table1 = study.accuracy_table(runs)
    ours = [r for r in table1.index if r.startswith("Ours")]
    shared = table1.loc["Shared Bottom", "accuracy"]
    small = table1.copy()
    small.loc[ours, "params"] = 0.2
    small.loc[ours, "accuracy"] = shared - 10
    text = discussion._accuracy_sentence(small, config)
    assert f"{ours[0]} 0.20×" in text and "less than half" in text
    large = small.copy()
    large.loc[ours, "params"] = 1.1
    assert "less than half" not in discussion._accuracy_sentence(large, config)
    better = small.copy()
    better.loc[ours, "accuracy"] = shared + 10
    assert "less than half" not in discussion._accuracy_sentence(better, config)
    used = discussion.hidden_edges_used(runs)
    assert set(used) == set(ours)
    assert all(0 <= n <= space for n, space in used.values())
    none_used = {r: (0.0, 18.0) for r in ours}
    assert "skips the central network's convolutions" in discussion._accuracy_sentence(
        small, config, none_used)
    some_used = {r: (3.0, 18.0) for r in ours}
    text = discussion._accuracy_sentence(small, config, some_used)
    assert "3.0 of the 18 searched edges" in text and "skips" not in text
    # the search's read-in gates explain it, when N_α sits at the last state
    peaks = discussion.read_in_peaks(runs)
    assert set(peaks) == set(ours)
    assert all(0 <= p["last"] <= 1 and 0 < p["first"] < 1 for p in peaks.values())
    at_last = {r: {"last": 1.0, "first": 0.52, "last_gate": 0.84} for r in ours}
    text = discussion._accuracy_sentence(small, config, none_used, at_last)
    assert "100% of the tasks" in text and "0.84 there, 0.52 at v_1" in text
    assert "BatchNorm" in text
    moved = {r: {"last": 1.0, "first": 0.8, "last_gate": 0.9} for r in ours}
    assert "BatchNorm" not in discussion._accuracy_sentence(small, config, none_used, moved)
    at_first = {r: {"last": 0.0, "first": 0.9, "last_gate": 0.1} for r in ours}
    assert "largest at the last" not in discussion._accuracy_sentence(
        small, config, none_used, at_first)


def test_figures_draw_and_refuse_bad_input(smoke):
    config, _, runs = smoke
    first = study.searched(runs, units.ours(config.topology_flow)).iloc[0]
    assert figures.plot_topologies(study.graphs(first)).axes
    assert figures.plot_flow_curve(study.flow_curve(runs, config)).axes
    assert figures.plot_reductions(study.reduction_table(runs, config)).axes
    with pytest.raises(ConfigError):
        figures.plot_topologies({})
    with pytest.raises(ConfigError):
        figures.plot_flow_curve(pd.DataFrame())


def test_latency_table_compares_finalised_search_space_and_shared_bottom(smoke):
    config, _, runs = smoke
    table = study.latency_table(runs, config)
    assert list(table.index) == ["finalised", "search space", "Shared Bottom",
                                 "finalised, inference form", "Shared Bottom, inference form"]
    assert table.loc["finalised", "parameters"] <= table.loc["search space", "parameters"]
    for name in study.DEPLOYED:  # BatchNorm folded: fewer parameters, the same convolutions
        deployed = table.loc[f"{name}, inference form"]
        assert deployed["parameters"] < table.loc[name, "parameters"]
        assert deployed["macs"] == table.loc[name, "macs"]
    assert (table[["latency_b1_ms", "latency_b16_ms"]] > 0).all().all()
