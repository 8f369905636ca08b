"""Paper E's partition matrix: P = MᵀM / c, the refinement (App. A.1 Eq. 1-4), masks from P̃
by the MILP (Eq. 5-10) and by the authors' sampler, the search (§4.1) and the CSV export."""

from __future__ import annotations

import csv
import types

import numpy as np
import pytest

import mtlrepro.methods.partition as partition
from mtlrepro.config import ConfigError
from mtlrepro.methods.partition import (
    EvolutionStrategy,
    MaskSolverError,
    average_use,
    baseline_partition,
    benchmark_masks,
    check_refined,
    diagonal_partition,
    mask_error,
    masks_milp,
    masks_sampled,
    overlap_bounds,
    partition_matrix,
    random_partition,
    refine,
    solve_masks_milp,
    unrefine,
    write_partition,
)


def _random_mask(channels: int, tasks: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((channels, tasks)) < 0.5).astype(np.uint8)


def _quadratic_target() -> np.ndarray:
    raw = np.array(
        [
            [0.3, 0.2, 0.7, 0.5],
            [0.2, 0.6, 0.3, 0.9],
            [0.7, 0.3, 0.4, 0.1],
            [0.5, 0.9, 0.1, 0.8],
        ]
    )
    return refine(raw)


# ------------------------------------------------------------------------ P = MᵀM / c (§3.1)
def test_partition_matrix_of_a_known_mask_by_hand():
    masks = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    # usage: 2, 2, 1 of 4 channels; overlaps: (0,1) channel 1, (0,2) channel 0, (1,2) none
    expected = np.array([[2, 1, 1], [1, 2, 0], [1, 0, 1]]) / 4
    np.testing.assert_array_equal(partition_matrix(masks), expected)
    np.testing.assert_array_equal(partition_matrix(masks.astype(bool)), expected)
    assert average_use(expected) == pytest.approx(5 / 12)


# ------------------------------------------------------------------ refinement (Eq. 1-4)
def test_refine_maps_the_off_diagonal_between_the_least_and_most_possible_overlap():
    raw = np.array([[0.5, 0.5], [0.5, 0.8]])
    # P_min = max(0, 0.5 + 0.8 - 1) = 0.3, P_max = min(0.5, 0.8) = 0.5
    np.testing.assert_allclose(refine(raw), [[0.5, 0.4], [0.4, 0.8]])
    np.testing.assert_allclose(refine(np.array([[0.5, 0.0], [0.0, 0.8]]))[0, 1], 0.3)
    np.testing.assert_allclose(refine(np.array([[0.5, 1.0], [1.0, 0.8]]))[0, 1], 0.5)


@pytest.mark.parametrize("seed", range(20))
def test_refined_random_partitions_respect_the_overlap_bounds(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    raw = rng.random((n, n))
    raw = np.triu(raw) + np.triu(raw, 1).T
    P_tilde = refine(raw)
    d = np.diag(P_tilde)
    np.testing.assert_array_equal(d, np.diag(raw))
    np.testing.assert_array_equal(P_tilde, P_tilde.T)
    low = np.maximum(0, d[:, None] + d[None, :] - 1)
    high = np.minimum(d[:, None], d[None, :])
    assert (low - 1e-12 <= P_tilde).all() and (P_tilde <= high + 1e-12).all()
    check_refined(P_tilde)  # no error
    assert np.allclose(random_partition(n, seed), random_partition(n, seed))


def test_refine_is_a_reparameterisation_exactly_undone_by_unrefine():
    # Eq. 4 maps raw overlap x to P_min + x (P_max - P_min): applied to an already refined P̃ it
    # moves it again (so the search refines raw samples exactly once) ...
    P_tilde = partition_matrix(_random_mask(16, 4, 0))
    assert not np.allclose(refine(P_tilde), P_tilde)
    # ... and the inverse brings feasible matrices back exactly, both ways
    np.testing.assert_allclose(refine(unrefine(P_tilde)), P_tilde, atol=1e-12)
    raw = np.array([[0.5, 0.25, 0.9], [0.25, 0.7, 0.4], [0.9, 0.4, 0.6]])
    np.testing.assert_allclose(unrefine(refine(raw)), raw, atol=1e-12)
    # checking a feasible P̃ leaves it as it is, and repeating the check too
    np.testing.assert_array_equal(check_refined(check_refined(P_tilde)), P_tilde)


def test_diagonal_partition_keeps_the_diagonal_and_spans_the_overlap_range():
    d = [0.4, 0.7, 0.5]
    low, high = overlap_bounds(d)
    least, most = diagonal_partition(d, 0.0), diagonal_partition(d, 1.0)
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(least[off], low[off])
    np.testing.assert_allclose(most[off], high[off])
    for P in (least, most, diagonal_partition(d, 0.5)):
        np.testing.assert_array_equal(np.diag(P), d)
    assert average_use(diagonal_partition(d, 0.3)) == pytest.approx(np.mean(d))


# ------------------------------------------------------------------ masks from P̃ (Eq. 5-10)
@pytest.mark.parametrize("formulation", ["channels", "patterns"])
@pytest.mark.parametrize("seed", range(2))
def test_the_milp_reproduces_a_partition_built_from_a_known_mask_exactly(formulation, seed):
    P_tilde = partition_matrix(_random_mask(12, 4, seed))
    solved = solve_masks_milp(P_tilde, 12, formulation=formulation, time_limit=20)
    assert solved.status == "optimal"
    assert solved.objective == pytest.approx(0, abs=1e-9)
    np.testing.assert_allclose(partition_matrix(solved.masks), P_tilde, atol=1e-12)
    assert solved.masks.shape == (12, 4) and set(np.unique(solved.masks)) <= {0, 1}


@pytest.mark.parametrize("kind", ["independent", "share_half", "share_all"])
def test_milp_and_sampler_reproduce_table_2_baselines_exactly(kind):
    P_tilde = baseline_partition(kind, 3)
    for masks in (masks_milp(P_tilde, 12, time_limit=20), masks_sampled(P_tilde, 12, seed=0)):
        np.testing.assert_allclose(partition_matrix(masks), P_tilde, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_the_sampler_reproduces_any_two_task_mask_exactly(seed):
    P_tilde = partition_matrix(_random_mask(16, 2, seed))
    masks = masks_sampled(P_tilde, 16, seed=seed)
    np.testing.assert_allclose(partition_matrix(masks), P_tilde, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_on_random_partitions_the_milp_is_optimal_and_the_sampler_is_close(seed):
    """Random P̃ need not be realisable (c·P̃ is fractional, pairs may conflict): the pattern
    MILP's optimum is the least total deviation; the stated tolerances, in channels (c = 32,
    n = 4): MILP every entry within 1, sampler within 1.5 and 0.75 on average."""
    P_tilde = random_partition(4, seed)
    solved = solve_masks_milp(P_tilde, 32, formulation="patterns")
    milp_error = mask_error(solved.masks, P_tilde)
    sampler_error = mask_error(masks_sampled(P_tilde, 32, seed=seed), P_tilde)
    assert solved.status == "optimal"
    assert milp_error.total_channels == pytest.approx(solved.objective, abs=1e-6)
    assert milp_error.total_channels <= sampler_error.total_channels + 1e-9
    assert milp_error.max_channels <= 1.0
    assert sampler_error.max_channels <= 1.5 and sampler_error.mean_channels <= 0.75
    # no mask beats the fractional parts of the targets
    targets = 32 * P_tilde[np.triu_indices(4)]
    assert milp_error.total_channels >= np.abs(targets - np.rint(targets)).sum() - 1e-9
    assert sampler_error.usage_max_channels <= 0.5  # the sampler meets every usage


@pytest.mark.parametrize("seed", [0, 3])
def test_both_milp_formulations_reach_the_same_optimum(seed):
    P_tilde = random_partition(3, seed)  # (Eq. 5-10 proves optimality slowly: keep c small)
    channels = solve_masks_milp(P_tilde, 8, formulation="channels", time_limit=20)
    patterns = solve_masks_milp(P_tilde, 8, formulation="patterns")
    assert channels.status == patterns.status == "optimal"
    assert channels.objective == pytest.approx(patterns.objective, abs=1e-4)


def test_masks_are_deterministic_for_a_seed():
    P_tilde = random_partition(5, 3)
    a, b = masks_sampled(P_tilde, 40, seed=7), masks_sampled(P_tilde, 40, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, masks_sampled(P_tilde, 40, seed=8))
    np.testing.assert_array_equal(
        masks_milp(P_tilde, 20, formulation="patterns"),
        masks_milp(P_tilde, 20, formulation="patterns"),
    )


def test_an_unrealisable_request_is_refused_clearly():
    P_tilde = np.array([[0.5, 0.7], [0.7, 0.9]])  # overlap above a task's own usage
    for find in (lambda: masks_milp(P_tilde, 10), lambda: masks_sampled(P_tilde, 10, seed=0)):
        with pytest.raises(ConfigError, match=r"P_tilde\[0, 1\] = 0.7 is outside the overlap"):
            find()
    with pytest.raises(ConfigError, match="at most 12 tasks"):
        masks_milp(np.eye(13) * 0.5, 8, formulation="patterns")
    with pytest.raises(ConfigError, match="formulation"):
        masks_milp(np.eye(2) * 0.5, 8, formulation="lp")


def test_a_solver_without_a_mask_raises_a_clear_error(monkeypatch):
    failed = types.SimpleNamespace(x=None, status=1, message="Time limit reached", fun=None)
    monkeypatch.setattr(partition, "milp", lambda *args, **kwargs: failed)
    with pytest.raises(MaskSolverError, match="found no mask within time_limit=0.5 s"):
        masks_milp(np.eye(2) * 0.5, 8, time_limit=0.5)


def test_a_time_limited_solve_says_so(monkeypatch):
    real = partition.milp

    def stopped(*args, **kwargs):
        result = real(*args, **kwargs)
        result.status = 1
        return result

    monkeypatch.setattr(partition, "milp", stopped)
    assert solve_masks_milp(np.eye(2) * 0.5, 8).status == "time_limit"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: refine([[0.5, 0.2], [0.3, 0.5]]), r"symmetric.*P\[0, 1\] = 0.2"),
        (lambda: refine([[1.2, 0.2], [0.2, 0.5]]), r"\[0, 1\].*P\[0, 0\] = 1.2"),
        (lambda: refine([[0.5, -0.1], [-0.1, 0.5]]), r"\[0, 1\]"),
        (lambda: refine(np.zeros((2, 3))), "square"),
        (lambda: refine(np.zeros((0, 0))), "at least one task"),
        (lambda: refine([[np.nan]]), "finite"),
        (lambda: masks_sampled(np.eye(2) * 0.5, 0, seed=0), "channels must be an integer"),
        (lambda: masks_milp(np.eye(2) * 0.5, 2.5), "channels must be an integer"),
        (lambda: random_partition(0, 0), "n_tasks must be an integer"),
        (lambda: EvolutionStrategy(0, seed=0), "n_tasks"),
        (lambda: EvolutionStrategy(3, seed=0, top_k=9), "top_k"),
        (lambda: EvolutionStrategy(3, seed=0, momentum=1.0), "momentum"),
        (lambda: partition_matrix(np.zeros((0, 3))), "at least one channel"),
        (lambda: partition_matrix([[0, 2]]), "only 0 and 1"),
        (lambda: baseline_partition("share_most", 3), "baseline partition"),
        (lambda: diagonal_partition([0.5, 0.5], np.zeros((3, 3))), "sharing"),
        (lambda: masks_sampled(np.eye(2) * 0.5, 4, seed=0, draws=0), "draws"),
    ],
)
def test_bad_input_raises_config_error_naming_the_problem(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


# ------------------------------------------------------------------ evolution strategies (§4.1)
def _distance_score(target: np.ndarray):
    return lambda P: -float(((P - target) ** 2).sum())


def test_es_climbs_a_known_quadratic_towards_its_optimum():
    target = _quadratic_target()
    score = _distance_score(target)
    start = np.full((4, 4), 0.5)
    es = EvolutionStrategy(4, seed=0, penalty=0.0)
    result = es.run(score, 40, start=start)
    before = np.sqrt(-score(refine(start)))
    after = np.sqrt(-score(result.final))
    assert after < 0.25 * before
    assert len(result.history) == 40 * 2 * 8
    # a single step already moves the diagonal towards the target's
    es = EvolutionStrategy(4, seed=1, penalty=0.0)
    es.start(start)
    plus, minus = es.propose()
    es.update([score(P) for P in plus], [score(P) for P in minus])
    moved = np.diag(es.current) - 0.5
    wanted = np.diag(target) - 0.5
    assert np.dot(moved, wanted) > 0


def test_the_gradient_sign_raises_the_score():
    es = EvolutionStrategy(3, seed=2, penalty=0.0)
    es.start(np.full((3, 3), 0.5))
    plus, minus = es.propose()
    linear = lambda P: float(np.trace(P))  # noqa: E731 (score rises with every usage)
    grad = es.gradient([linear(P) for P in plus], [linear(P) for P in minus])
    assert (grad[:3] < 0).all()  # descending the loss gradient raises the diagonal


def test_the_penalty_lowers_the_diagonal():
    # a flat score leaves only the weight decay: the diagonal shrinks, the rest stays
    es = EvolutionStrategy(3, seed=0, penalty=0.1)
    raw = np.array([[0.8, 0.3, 0.6], [0.3, 0.6, 0.2], [0.6, 0.2, 0.7]])
    es.start(raw)
    for _ in range(3):
        plus, minus = es.propose()
        es.update([1.0] * 8, [1.0] * 8)
    now = es.to_matrix(es.theta)
    assert (np.diag(now) < np.diag(raw)).all()
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(now[off], raw[off])
    # on the quadratic, a strong penalty ends at a lower average use than none
    score = _distance_score(_quadratic_target())
    free = EvolutionStrategy(4, seed=0, penalty=0.0).run(score, 30, start=np.full((4, 4), 0.5))
    tight = EvolutionStrategy(4, seed=0, penalty=0.2).run(score, 30, start=np.full((4, 4), 0.5))
    assert average_use(tight.final) < average_use(free.final) - 0.1


def test_es_starts_from_the_best_initial_sample_and_is_deterministic():
    score = _distance_score(_quadratic_target())
    first = EvolutionStrategy(4, seed=3).run(score, 0)
    assert len(first.history) == 32 and all(s.step == 0 for s in first.history)
    np.testing.assert_allclose(first.final, first.best.P_tilde)
    diagonals = np.array([np.diag(s.P_tilde) for s in first.history])
    assert diagonals.min() >= 0.05 and diagonals.max() <= 1.0
    runs = [EvolutionStrategy(4, seed=3).run(score, 3) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].final, runs[1].final)
    assert [s.score for s in runs[0].history] == [s.score for s in runs[1].history]
    other = EvolutionStrategy(4, seed=4).run(score, 3)
    assert not np.array_equal(other.final, runs[0].final)


def test_es_update_checks_its_scores():
    es = EvolutionStrategy(3, seed=0)
    es.start(np.full((3, 3), 0.5))
    with pytest.raises(RuntimeError, match="propose"):
        es.update([0.0] * 8, [0.0] * 8)
    es.propose()
    with pytest.raises(ConfigError, match="scores_plus must hold 8 finite scores"):
        es.update([0.0] * 7, [0.0] * 8)


# ------------------------------------------------------------------ benchmark and export
def test_benchmark_reports_time_and_error_of_each_method():
    out = benchmark_masks(16, 3, 0, time_limit=20)
    assert out["milp_patterns"]["status"] == "optimal"
    for method in ("milp_channels", "milp_patterns", "sampler"):
        assert out[method]["seconds"] >= 0
        assert out[method]["error"]["total_channels"] >= 0
    assert (
        out["milp_patterns"]["error"]["total_channels"]
        <= out["sampler"]["error"]["total_channels"] + 1e-9
    )


def test_write_partition_writes_both_csvs_atomically(tmp_path):
    masks = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    P_tilde = partition_matrix(masks)
    names = ["segmentation", "depth", "normal"]
    p_path, m_path = write_partition(P_tilde, masks, names, tmp_path / "out", "es_best")
    assert p_path.name == "es_best_P.csv" and m_path.name == "es_best_M.csv"
    with p_path.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == names
    np.testing.assert_array_equal(np.array(rows[1:], dtype=float), P_tilde)
    with m_path.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == names
    np.testing.assert_array_equal(np.array(rows[1:], dtype=int), masks)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "es_best_M.csv",
        "es_best_P.csv",
    ]
    with pytest.raises(ConfigError, match="same tasks"):
        write_partition(P_tilde, masks, names[:2], tmp_path, "x")
    with pytest.raises(ConfigError, match="file-name stem"):
        write_partition(P_tilde, masks, names, tmp_path, "../x")
