"""Paper D's method: the flow-restricted DAG network (Eq. 3-6), the squeeze loss (Eq. 9),
the flow-based reduction (Alg. 1) and its baselines (Fig. 5), topology metrics (§3.1) and the
three-stage schedule (§3.2) through the training loop's seams."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from mtlrepro.balancing import create_balancer
from mtlrepro.config import ConfigError
from mtlrepro.methods.dag import (
    DAGConfig,
    DAGNetwork,
    DAGSearch,
    DAGWarmup,
    TaskTopology,
    chain_network,
    chain_topology,
    dag_phases,
    edge_count,
    export_graph,
    flow_edges,
    flow_prune,
    flow_reduction,
    flow_scores,
    graph_data,
    merge_psi,
    psi_span,
    random_reduction,
    reduce_model,
    rewind_weights,
    squeeze_loss,
    task_graph,
    threshold_reduction,
    topology_metrics,
    trim_to_paths,
    vgg_like_config,
    window_psi,
)
from mtlrepro.models.multitask import count_parameters
from mtlrepro.phases import fit_phases
from mtlrepro.tasks import TaskSpec, make_tasks
from mtlrepro.train import Hooks, TrainConfig, TrainerState, fit, resolve_device

SPECS = (TaskSpec("segmentation", "segmentation", 3), TaskSpec("depth", "depth"))
MIXED = (TaskSpec("segmentation", "segmentation", 3), TaskSpec("colour", "classification", 4))
SIZE, N_TRAIN, BATCH = 8, 16, 4


def _config(**overrides: Any) -> DAGConfig:
    """Four states (4, 4, 8, 8 channels at scales 1, 1, 2, 2), M = 2, narrow ASPP heads."""
    base = dict(widths=(4, 4, 8, 8), scales=(1, 1, 2, 2), flow=2, head_width=4, atrous_rates=(1,))
    return DAGConfig(**(base | overrides))


def _reachable(psi: np.ndarray, span: tuple[int, int] | None = None) -> bool:
    """Alg. 1's reachability: the span's first state keeps its read-in, its last state its
    read-out, and a path joins them (``span``: :func:`psi_span` of ``psi`` by default)."""
    first, last = psi_span(psi) if span is None else span
    graph = nx.DiGraph(list(zip(*np.nonzero(psi), strict=True)))
    graph.add_nodes_from([first, last])
    sink = len(psi) - 1
    return bool(psi[0, first] and psi[last, sink]) and nx.has_path(graph, first, last)


def _essential(psi: np.ndarray, span: tuple[int, int]) -> bool:
    """Whether every hidden edge of ``psi`` is needed for reachability."""
    for i, j in zip(*np.nonzero(psi[1:-1, 1:-1]), strict=True):
        trial = psi.copy()
        trial[i + 1, j + 1] = 0
        if _reachable(trial, span):
            return False
    return True


class Data(torch.utils.data.Dataset):
    """Random images; segmentation = the brightest channel, depth = 1 + the mean."""

    def __init__(self, n: int, seed: int) -> None:
        x = torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
        self.tensors = {"image": x, "segmentation": x.argmax(1), "depth": 1 + x.mean(1, True)}

    def __len__(self) -> int:
        return len(self.tensors["image"])

    def batch(self, index: Tensor) -> dict[str, Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {key: value[i] for key, value in self.tensors.items()}


def _train_config(**overrides: Any) -> TrainConfig:
    base = dict(epochs=1, batch_size=BATCH, lr=1e-2, progress=False, device="auto")
    return TrainConfig(**(base | overrides))


def _copy(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --- the search space (§3.1) ---------------------------------------------------------------
@pytest.mark.parametrize(("n", "m"), [(1, 1), (4, 1), (5, 2), (12, 3), (12, 7), (8, 7)])
def test_flow_restriction_keeps_exactly_the_edges_of_length_at_most_m(n: int, m: int) -> None:
    edges = flow_edges(n, m)
    assert edges == sorted(edges)
    assert set(edges) == {
        (i, j) for i in range(1, n + 1) for j in range(1, n + 1) if 0 < j - i <= m
    }
    if m < n:
        assert len(edges) == n * m - m * (m + 1) // 2
    assert flow_edges(n, None) == flow_edges(n, n) and len(flow_edges(n, None)) == n * (n - 1) // 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: flow_edges(5, 0), r"flow constant M must be an integer in \[1"),
        (lambda: flow_edges(0, 2), r"n_states must be an integer in \[1"),
        (lambda: flow_edges(5, 1.5), "flow constant M"),
        (lambda: _config(scales=(1, 1, 2)), "one scale per hidden state"),
        (lambda: _config(scales=(1, 2, 3, 6)), "each divide the next"),
        (lambda: _config(flow=0), "flow constant M"),
        (lambda: _config(widths=()), "at least one hidden state"),
        (lambda: _config(mean=(0.5,)), "need 3 values"),
        (lambda: vgg_like_config(13), r"n_states must be an integer in \[1, 12\]"),
    ],
)
def test_bad_configurations_are_config_errors(call: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()


def test_vgg_like_config_is_table_7() -> None:
    config = vgg_like_config(12, flow=7)
    assert config.widths == (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512)
    assert config.scales == (1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 16, 16)
    assert len(config.edges) == 12 * 7 - 28
    slim = vgg_like_config(8, 1 / 8, flow=3)
    assert slim.widths == (8, 8, 16, 16, 32, 32, 32, 64) and slim.head_width == 32


# --- Eq. 3-5 by hand ------------------------------------------------------------------------
class AddConstant(nn.Module):
    """An edge whose output is its input plus a constant (same shape: equal widths, scale 1)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: Tensor) -> Tensor:
        return x + self.value


class Constant(nn.Module):
    """A read-in embedding whose output is a constant map of the state's shape."""

    def __init__(self, value: float, channels: int) -> None:
        super().__init__()
        self.value, self.channels = value, channels

    def forward(self, image: Tensor) -> Tensor:
        return image.new_full((len(image), self.channels, *image.shape[2:]), self.value)


def _hand_network() -> DAGNetwork:
    """Three states of 2 channels at scale 1, complete DAG; read-ins r_j = j, edges e_ij(v) =
    v + 10·i + j, read-outs identity, heads identity (the output is v_L)."""
    model = DAGNetwork(_config(widths=(2, 2, 2), scales=(1, 1, 1), flow=None), SPECS)
    for j in (1, 2, 3):
        model.read_ins[str(j)] = Constant(float(j), 2)
    for i, j in model.edge_list:
        model.edge_ops[f"{i}_{j}"] = AddConstant(10.0 * i + j)
    for task in model.task_names:
        model.heads[task] = nn.Identity()
    return model


def test_eq_4_averages_each_state_over_its_in_degree_with_the_read_in() -> None:
    """Searching: v_1 = σα1·1, v_2 = (σα2·2 + σγ12·(v_1+12)) / 2, v_3 = (σα3·3 + σγ13·(v_1+13) +
    σγ23·(v_2+23)) / 3, v_L = Σ σβ_i·v_i (Eq. 3-5)."""
    model = _hand_network()
    gates = model.gates["depth"]
    with torch.no_grad():
        gates.read_in.copy_(torch.tensor([0.0, 1.0, -1.0]))
        gates.edges.copy_(torch.tensor([2.0, -2.0, 0.5]))  # (1,2), (1,3), (2,3)
        gates.read_out.copy_(torch.tensor([-1.0, 0.0, 3.0]))
    s = torch.sigmoid
    a, g, b = s(gates.read_in), s(gates.edges), s(gates.read_out)
    v1 = a[0] * 1
    v2 = (a[1] * 2 + g[0] * (v1 + 12)) / 2
    v3 = (a[2] * 3 + g[1] * (v1 + 13) + g[2] * (v2 + 23)) / 3
    expected = b[0] * v1 + b[1] * v2 + b[2] * v3
    out = model(torch.rand(2, 3, 4, 4))
    torch.testing.assert_close(out["depth"], expected.expand(2, 2, 4, 4))
    v1 = v2 = 0.5  # the other task: every gate 0, σ = 0.5
    v2 = (0.5 * 2 + 0.5 * (0.5 + 12)) / 2
    v3 = (0.5 * 3 + 0.5 * (0.5 + 13) + 0.5 * (v2 + 23)) / 3
    torch.testing.assert_close(out["segmentation"], torch.full((2, 2, 4, 4), 0.5 * (0.5 + v2 + v3)))


def test_finalised_states_average_over_the_used_edges_without_sigmoid() -> None:
    """Â = (1, 1, 0), Γ̂ = {e13, e23}, B̂ = (0, 0, 1): v_3 = ((1 + 13) + (2 + 23)) / 2."""
    model = _hand_network()
    edges = np.zeros((3, 3), dtype=int)
    edges[0, 2] = edges[1, 2] = 1
    topology = TaskTopology(np.array([1, 1, 0]), edges, np.array([0, 0, 1]))
    model.finalise({"depth": topology, "segmentation": chain_topology(3)})
    out = model(torch.rand(2, 3, 4, 4))
    assert torch.all(out["depth"] == (14 + 25) / 2)
    assert torch.all(out["segmentation"] == 1 + 12 + 23)  # the chain: v_1 = 1, then + 12, + 23


# --- Alg. 1 and Fig. 5 ----------------------------------------------------------------------
HAND_PSI = merge_psi([0.6, 0.9], [[0, 0.9], [0, 0]], [0.5, 0.6])
"""0→1 .6, 0→2 .9, 1→2 .9, 1→3 .5, 2→3 .6 (node 3 is the sink)."""


def test_flow_scores_by_hand() -> None:
    """In-flows 0.6 / 1.8 / 1.1, out-flows 1.5 / 1.4 / 0.6, in-degrees 1 / 2, out-degrees 2 / 1:
    S01 = .6·(0 + 1.4/(2·.6)), S02 = .9·(0 + .6/1.8), S12 = .9·(.6/1.4 + .6/1.8),
    S13 = .5·(.6/1.4 + 0), S23 = .6·(1.8/(2·.6) + 0)."""
    expected = np.zeros((4, 4))
    expected[0, 1], expected[0, 2] = 0.7, 0.3
    expected[1, 2], expected[1, 3], expected[2, 3] = 0.9 * (3 / 7 + 1 / 3), 0.5 * 3 / 7, 0.9
    np.testing.assert_allclose(flow_scores(HAND_PSI), expected)


def test_flow_reduction_removes_the_least_score_first_and_returns_the_last_connected_graph() -> (
    None
):
    """S13 (0.214) goes first, then S02 (0.3 in the new Ψ); the chain 0→1→2→3 is left, where
    every removal disconnects: it is returned.  Removing by least ψ instead would keep
    0→2→3 (and 1→2)."""
    psi = HAND_PSI.copy()
    psi[1, 3] = 0
    assert np.argmin(np.where(psi > 0, flow_scores(psi), np.inf)) == 2  # (0, 2)
    chain = np.zeros((4, 4), dtype=int)
    chain[0, 1] = chain[1, 2] = chain[2, 3] = 1
    np.testing.assert_array_equal(flow_prune(HAND_PSI), chain)
    # flow_reduction first cuts to the window: argmax A = argmax B = v_2, N_β capped at N − 1
    a, g, b = flow_reduction([0.6, 0.9], [[0, 0.9], [0, 0]], [0.5, 0.6])
    assert (a.tolist(), g.tolist(), b.tolist()) == ([0, 1], [[0, 0], [0, 0]], [0, 1])
    # a removal that disconnects at once: nothing is removed
    np.testing.assert_array_equal(flow_prune(chain * 0.5), chain)
    # n_edges stops early (§4.4): one hidden edge of one is already at most 1
    np.testing.assert_array_equal(flow_prune(HAND_PSI, n_edges=1), HAND_PSI > 0)


def test_reduction_keeps_a_hidden_path_from_the_read_in_state_to_the_read_out_state() -> None:
    """§3.2: reachability is "of Γ̂ between hidden state v_Nα to v_Nβ".  Here v_2 has a read-in
    and a read-out of its own, so source → v_2 → sink survives cutting every hidden edge; the
    reduction must still keep a path v_1 ⇝ v_3 (N_α = 0, N_β = 2, 0-based)."""
    a, b = [0.9, 0.8, 0.05], [0.05, 0.9, 0.95]
    g = np.triu(np.full((3, 3), 0.02), 1)
    psi = window_psi(a, g, b)
    assert psi_span(psi) == (1, 3)
    for reduced in (flow_prune(psi), threshold_reduction(psi, 0), random_reduction(psi, 0, 3)):
        assert reduced[0, 1] == 1 and reduced[3, 4] == 1
        graph = nx.DiGraph(list(zip(*np.nonzero(reduced[1:4, 1:4]), strict=True)))
        assert graph.has_node(0) and graph.has_node(2) and nx.has_path(graph, 0, 2)
    # the shortest such path is v_1 → v_3: threshold keeps exactly it
    np.testing.assert_array_equal(np.nonzero(threshold_reduction(psi, 0)[1:4, 1:4]), [[0], [2]])
    # when N_α is the last state, the sub-network is that state alone
    a, g, b = flow_reduction([0.1, 0.2, 0.9], np.triu(np.full((3, 3), 0.5), 1), [0.9, 0.1, 0.1])
    assert (a.tolist(), g.sum(), b.tolist()) == ([0, 0, 1], 0, [0, 0, 1])


def test_alg_1_window_keeps_states_from_argmax_a_to_argmax_b_inclusive() -> None:
    """N_α = 1, N_β = 3 (0-based): edges from v_1 and into v_5 are cut, A and B kept on
    v_2..v_4; N_β is at least N_α + 1."""
    g = np.triu(np.full((5, 5), 0.5), 1)
    psi = window_psi([0.1, 0.9, 0.2, 0.3, 0.4], g, [0.1, 0.2, 0.3, 0.8, 0.5])
    assert set(zip(*np.nonzero(psi[0]), strict=True)) == {(2,), (3,), (4,)}
    assert set(np.nonzero(psi[:, 6])[0]) == {2, 3, 4}
    hidden = {(int(i), int(j)) for i, j in zip(*np.nonzero(psi[1:6, 1:6]), strict=True)}
    assert hidden == {(1, 2), (1, 3), (2, 3)}  # v2→v3, v2→v4, v3→v4 (0-based in Γ)
    psi = window_psi([0.1, 0.9, 0.2], np.triu(np.full((3, 3), 0.5), 1), [0.9, 0.2, 0.1])
    assert np.count_nonzero(psi[1:4, 1:4]) == 1 and psi[2, 3] == 0.5  # N_β = N_α + 1


@pytest.mark.parametrize("seed", range(12))
def test_every_reduction_connects_the_input_to_the_read_out(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    m = int(rng.integers(1, n + 1))
    g = np.zeros((n, n))
    for i, j in flow_edges(n, m):
        g[i - 1, j - 1] = rng.uniform(0.01, 1)
    a, b = rng.uniform(0.01, 1, n), rng.uniform(0.01, 1, n)
    psi = window_psi(a, g, b)
    span = psi_span(psi)
    flow = merge_psi(*flow_reduction(a, g, b))
    assert _reachable(flow, span)
    hidden = np.count_nonzero(psi[1:-1, 1:-1])
    for n_edges in sorted({0, hidden // 2, hidden}):
        for reduced in (threshold_reduction(psi, n_edges), random_reduction(psi, n_edges, seed)):
            assert _reachable(reduced, span)
            kept = np.count_nonzero(reduced[1:-1, 1:-1])
            # exactly n_edges, or more only when every one left is needed
            assert kept == n_edges or (kept > n_edges and _essential(reduced, span))
            np.testing.assert_array_equal(reduced[0], psi[0] > 0)  # read-ins / outs all kept
            np.testing.assert_array_equal(reduced[:, -1], psi[:, -1] > 0)
            assert set(zip(*np.nonzero(reduced), strict=True)) <= set(
                zip(*np.nonzero(psi), strict=True)
            )
    # without read-in/out (v_1 in, v_N out, fixed) removals can disconnect: they are skipped
    ends = np.zeros(n), np.zeros(n)
    ends[0][0] = ends[1][-1] = 1.0
    fixed = merge_psi(*flow_reduction(ends[0], g, ends[1], fixed_read_in_out=True))
    assert _reachable(fixed) and fixed[0, 1] == 1 and fixed[n, n + 1] == 1
    chain_psi = merge_psi(ends[0], g, ends[1])
    for reduced in (threshold_reduction(chain_psi, 0), random_reduction(chain_psi, 0, seed)):
        assert _reachable(reduced)
        assert np.count_nonzero(reduced[1:-1, 1:-1]) >= -(-(n - 1) // m)  # at least ⌈(N−1)/M⌉
    trimmed = trim_to_paths(flow)
    assert _reachable(trimmed, span)
    graph = nx.DiGraph(list(zip(*np.nonzero(trimmed), strict=True)))
    for i, j in graph.edges:  # every kept edge lies on an input → read-out path
        assert i == 0 or nx.has_path(graph, 0, i)
        assert j == n + 1 or nx.has_path(graph, j, n + 1)


def test_threshold_removes_the_smallest_and_random_depends_on_the_seed() -> None:
    g = np.triu(np.arange(1, 26, dtype=float).reshape(5, 5) / 25, 1)
    ends = np.array([0.0, 0.0, 1.0, 1.0, 1.0])  # the window v_3..v_5
    psi = merge_psi(ends, g, ends)
    kept = threshold_reduction(psi, 3)[1:6, 1:6]
    assert {(int(i), int(j)) for i, j in zip(*np.nonzero(kept), strict=True)} == {
        (2, 4),
        (3, 4),
        (2, 3),
    }
    runs = {random_reduction(psi, 3, seed).tobytes() for seed in range(6)}
    assert len(runs) > 1
    np.testing.assert_array_equal(random_reduction(psi, 3, 4), random_reduction(psi, 3, 4))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: flow_reduction([0.5, 0.5], np.zeros((3, 3)), [0.5, 0.5]), r"Γ must be 2×2"),
        (lambda: merge_psi([0.5, -1.0], np.zeros((2, 2)), [0.5, 0.5]), "non-negative"),
        (lambda: merge_psi([0.5], [[0.5]], [0.5]), "strictly upper triangular"),
        (lambda: threshold_reduction(np.zeros((4, 4)), 1), "no read-in or no read-out"),
        (lambda: flow_prune(merge_psi([1, 0], np.zeros((2, 2)), [0, 1])),
         "no path from its first read-in state"),
        (lambda: trim_to_paths(np.zeros((4, 4))), "no path from the input"),
        (lambda: random_reduction(HAND_PSI, -1), r"n_edges must be an integer in \[0"),
        (lambda: flow_prune(np.ones((2, 2))), r"Ψ must be an \(N\+2\)×\(N\+2\)"),
        (lambda: TaskTopology([1, 2], np.zeros((2, 2)), [0, 1]), "binary"),
    ],
)
def test_bad_reduction_inputs_are_config_errors(call: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()


# --- topology metrics and export ------------------------------------------------------------
def test_depth_width_sparsity_of_known_graphs(tmp_path: Path) -> None:
    graph = nx.DiGraph([(1, 2), (2, 3), (3, 4), (1, 3), (1, 4)])
    assert topology_metrics(graph, 10) == {"depth": 3, "width": 3, "sparsity": 0.5, "edges": 5}
    assert topology_metrics(nx.DiGraph([(1, 3), (2, 3)]), 8)["depth"] == 1
    model = chain_network(_config(), SPECS)
    graph = task_graph(model, "depth")
    assert sorted(graph.edges) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert topology_metrics(graph, 5) == {"depth": 3, "width": 1, "sparsity": 0.6, "edges": 3}
    searching = task_graph(DAGNetwork(_config(), SPECS), "depth")  # every edge, σ(0) = 0.5
    assert graph.graph["final"] and not searching.graph["final"]
    assert searching.number_of_edges() == 4 + 5 + 4 and {
        w for *_, w in searching.edges(data="weight")
    } == {0.5}
    assert topology_metrics(searching, 5) == {"depth": 3, "width": 2, "sparsity": 1.0, "edges": 5}
    path = export_graph(searching, tmp_path / "graphs" / "depth.json")
    data = json.loads(path.read_text())
    restored = nx.node_link_graph(data, edges="edges")
    assert sorted(restored.edges(data="weight")) == sorted(searching.edges(data="weight"))
    with pytest.raises(ConfigError, match="acyclic"):
        topology_metrics(nx.DiGraph([(1, 2), (2, 1)]), 3)
    with pytest.raises(ConfigError, match="n_search_edges"):
        topology_metrics(graph, 2)


# --- the network: outputs, parameters, sharing ----------------------------------------------
def test_forward_gives_the_multitask_output_contract() -> None:
    model = DAGNetwork(_config(read_in_out=False), MIXED)
    out = model(torch.rand(2, 3, SIZE, 12))
    assert out["segmentation"].shape == (2, 3, SIZE, 12) and out["colour"].shape == (2, 4)
    assert set(model.gates["colour"].logits()) == {"edges"}  # no α, β without read-in/out
    with pytest.raises(ConfigError, match="divisible by 2"):
        model(torch.rand(2, 3, 7, 8))
    fast = DAGNetwork(_config(read_in_out=False, channels_last=True), MIXED)
    fast.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, SIZE, 12)
    for name, value in fast.eval()(x).items():
        assert value.is_contiguous()
        torch.testing.assert_close(value, model.eval()(x)[name], rtol=1e-4, atol=1e-5)


def _hand_topologies() -> dict[str, TaskTopology]:
    """segmentation: in v1, v2; e13, e24, e34 (and e12, on no path to the read-out... but
    executed); out v4.  depth: in v1; e12, e23; out v3, v2."""
    seg = np.zeros((4, 4), dtype=int)
    seg[0, 2] = seg[1, 3] = seg[2, 3] = seg[0, 1] = 1
    depth = np.zeros((4, 4), dtype=int)
    depth[0, 1] = depth[1, 2] = 1
    return {
        "segmentation": TaskTopology([1, 1, 0, 0], seg, [0, 0, 0, 1]),
        "depth": TaskTopology([1, 0, 0, 0], depth, [0, 1, 1, 0]),
    }


def test_pruned_parameters_are_the_used_edges_projections_and_heads_and_outputs_stay() -> None:
    model = DAGNetwork(_config(), SPECS)
    model.finalise(_hand_topologies())
    model.eval()
    full = copy.deepcopy(model)
    x = torch.rand(2, 3, SIZE, SIZE)
    before = model(x)
    used_edges = {(1, 3), (2, 4), (3, 4), (1, 2), (2, 3)}
    expected = (
        sum(count_parameters(model.edge_ops[f"{i}_{j}"]) for i, j in used_edges)
        + sum(count_parameters(model.read_ins[str(j)]) for j in (1, 2))
        + sum(count_parameters(model.read_outs[str(i)]) for i in (2, 3, 4))
        + sum(count_parameters(head) for head in model.heads.values())
    )
    assert count_parameters(model.read_outs["2"]) == 4 * 8  # a 1×1 projection, 4 → 8 channels
    deleted = model.prune_unused()
    assert deleted == {"edges": len(model.edge_list) - 5, "read_ins": 2, "read_outs": 1}
    assert count_parameters(model) == expected < count_parameters(full)
    after = model(x)
    for task in SPECS:
        torch.testing.assert_close(after[task.name], before[task.name], rtol=0, atol=0)
        torch.testing.assert_close(full(x)[task.name], before[task.name], rtol=0, atol=0)
    assert set(model.state_dict()) <= set(full.state_dict())


def _count_edge_calls(model: DAGNetwork) -> dict[str, int]:
    calls = dict.fromkeys(model.edge_ops, 0)
    for key, module in model.edge_ops.items():
        module.register_forward_hook(lambda *_, key=key: calls.__setitem__(key, calls[key] + 1))
    return calls


def test_shared_bottom_and_frozen_gates_compute_each_edge_once() -> None:
    """Shared bottom: the chain once for three tasks.  Soft gates frozen (warm-up): every edge
    once; trained (search): once per task.  The outputs are the same either way."""
    specs = (*SPECS, TaskSpec("normal", "normal"))
    bottom = chain_network(_config(), specs)
    calls = _count_edge_calls(bottom)
    bottom(torch.rand(2, 3, SIZE, SIZE))
    assert calls == {"1_2": 1, "2_3": 1, "3_4": 1}
    single = chain_network(_config(), specs[:1])
    assert count_parameters(bottom) - count_parameters(single) == sum(
        count_parameters(bottom.heads[t.name]) for t in specs[1:]
    )
    model = DAGNetwork(_config(), specs).eval()
    calls = _count_edge_calls(model)
    x = torch.rand(2, 3, SIZE, SIZE)
    searching = model(x)  # the gates require grad: per task
    assert set(calls.values()) == {3}
    for param in model.gate_parameters():
        param.requires_grad_(False)
    shared = model(x)
    assert set(calls.values()) == {4}
    for task in specs:
        torch.testing.assert_close(shared[task.name], searching[task.name], rtol=0, atol=0)


def test_squeeze_loss_by_hand() -> None:
    """Task seg: σ(γ) sums to 5 × 0.5 = 2.5 > κ = 2 → 0.5; task depth: σ(γ) sum 5·σ(−3) < 2 → 0."""
    model = DAGNetwork(_config(), SPECS)
    with torch.no_grad():
        model.gates["depth"].edges.fill_(-3.0)
    loss = squeeze_loss(model, 2.0)
    torch.testing.assert_close(loss, torch.tensor(0.5))
    loss.backward()
    torch.testing.assert_close(model.gates["segmentation"].edges.grad, torch.full((5,), 0.25))
    assert torch.all(model.gates["depth"].edges.grad == 0)
    torch.testing.assert_close(squeeze_loss(model, 0.0), torch.tensor(2.5 + 5 / (1 + np.e**3)))
    with pytest.raises(ConfigError, match=r"budget κ must be a number in \[0"):
        squeeze_loss(model, -1.0)


def test_reduce_model_finalises_and_validates() -> None:
    model = DAGNetwork(_config(), SPECS)
    with pytest.raises(ConfigError, match="unknown reduction 'magic'"):
        reduce_model(model, "magic")
    with torch.no_grad():
        model.gates["depth"].read_out[3] = 2.0  # read out v4 most
        model.gates["depth"].edges.copy_(torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0]))
    topologies = reduce_model(model, "flow")
    assert model.is_final() and not model.gate_parameters()
    assert topologies["depth"].read_out.tolist() == [0, 0, 0, 1]
    graph = task_graph(model, "depth")
    assert nx.has_path(graph, 0, 5) and topology_metrics(graph, model.n_search_edges)["edges"] >= 1
    with pytest.raises(ConfigError, match="already finalised"):
        reduce_model(model, "flow")
    with pytest.raises(ConfigError, match="outside the search space"):
        DAGNetwork(_config(flow=1), SPECS).finalise(_hand_topologies())
    matched = DAGNetwork(_config(), SPECS)
    matched.load_state_dict(DAGNetwork(_config(), SPECS).state_dict())
    with torch.no_grad():
        for gates in matched.gates.values():
            gates.edges.copy_(torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0]))
            gates.read_out[3] = 2.0
    flow = reduce_model(copy.deepcopy(matched), "flow")
    for method in ("threshold", "random"):
        other = reduce_model(copy.deepcopy(matched), method, seed=3)
        assert {t: o.n_edges for t, o in other.items()} == {t: f.n_edges for t, f in flow.items()}


# --- the three stages through the training loop ---------------------------------------------
class Capture(Hooks):
    """The model's state before the phase's first step and after its last epoch."""

    def __init__(self) -> None:
        self.start: dict[str, Tensor] = {}
        self.end: dict[str, Tensor] = {}

    def before_step(self, model: nn.Module, batch: Any, step: int) -> None:
        if step == 1:
            self.start = _copy(model)

    def end_of_epoch(self, model: nn.Module, epoch: int, trainer_state: TrainerState) -> None:
        self.end = _copy(model)


def _fit(model: DAGNetwork, hooks: list[Hooks], **overrides: Any) -> Any:
    tasks = make_tasks(model.task_specs)
    balancer = create_balancer("equal", list(tasks))
    return fit(
        model, tasks, Data(N_TRAIN, 1), Data(8, 2), balancer, _train_config(**overrides), hooks
    )


def test_warm_up_leaves_the_gates_at_zero_and_search_trains_them_with_the_squeeze_loss() -> None:
    model = DAGNetwork(_config(), SPECS)
    start = _copy(model)
    result = _fit(model, [DAGWarmup()], epochs=2)
    assert result.steps == 2 * N_TRAIN // BATCH
    for key, value in model.state_dict().items():
        if key.startswith("gates."):
            assert torch.equal(value, torch.zeros_like(value)) or "mask" in key or "final" in key
    assert not torch.equal(
        model.state_dict()["edge_ops.1_2.0.weight"], start["edge_ops.1_2.0.weight"]
    )
    search = DAGSearch(upper_lr=0.1, squeeze_weight=0.5, budget=1.0)
    result = _fit(model, [search])
    for gates in model.gates.values():
        assert all(not torch.equal(p, torch.zeros_like(p)) for p in gates.logits().values())
    extra = result.history.query("metric == 'extra_loss'")["value"]
    assert len(extra) == 1 and extra.iloc[0] > 0
    with pytest.raises(ConfigError, match="upper_lr"):
        DAGSearch(upper_lr=0.0, squeeze_weight=0.1, budget=1.0)


def _phases_with_capture(model: DAGNetwork, **options: Any) -> tuple[list[Any], dict[str, Capture]]:
    settings = dict(
        warmup_epochs=1,
        search_epochs=1,
        finetune_epochs=1,
        upper_lr=0.1,
        squeeze_weight=0.05,
        budget=2.0,
    )
    phases = dag_phases(model, **(settings | options))
    captures = {p.name: Capture() for p in phases}
    return [dataclasses.replace(p, hooks=[*p.hooks, captures[p.name]]) for p in phases], captures


def _fit_phases(model: DAGNetwork, phases: list[Any], **overrides: Any) -> Any:
    tasks = make_tasks(model.task_specs)
    return fit_phases(
        model,
        tasks,
        Data(N_TRAIN, 1),
        None,
        create_balancer("equal", list(tasks)),
        _train_config(**overrides),
        phases,
    )


def test_fine_tune_starts_from_the_warm_up_weights_with_the_searched_topology() -> None:
    model = DAGNetwork(_config(), SPECS)
    phases, cap = _phases_with_capture(model)
    assert [p.name for p in phases] == ["warmup", "search", "finetune"]
    _fit_phases(model, phases)
    assert model.is_final() and not model.gate_parameters()
    start = cap["finetune"].start
    assert set(start) < set(cap["warmup"].end)  # pruned
    for key, value in start.items():
        if key.startswith("gates.") and not key.endswith(("mask", "final")):
            assert torch.equal(value, cap["search"].end[key]), key
        elif not key.startswith("gates."):
            assert torch.equal(value, cap["warmup"].end[key]), key
            assert not key.startswith("edge_ops") or not torch.equal(value, cap["search"].end[key])
    for task in model.task_names:
        assert nx.has_path(task_graph(model, task), 0, model.n_states + 1)


def test_without_warm_up_the_fine_tune_rewinds_to_the_search_start_and_resumes_exactly(
    tmp_path: Path,
) -> None:
    torch.manual_seed(3)
    model = DAGNetwork(_config(), SPECS)
    phases, cap = _phases_with_capture(model, warmup=False, search_epochs=2, finetune_epochs=2)
    assert [p.name for p in phases] == ["search", "finetune"]
    _fit_phases(model, phases)
    for key, value in cap["finetune"].start.items():
        if not key.startswith("gates."):
            assert torch.equal(value, cap["search"].start[key]), key
    ckpt = str(tmp_path / "run.pt")
    torch.manual_seed(3)
    cut = DAGNetwork(_config(), SPECS)
    phases, _ = _phases_with_capture(cut, warmup=False, search_epochs=2, finetune_epochs=2)
    steps = N_TRAIN // BATCH
    assert _fit_phases(cut, phases, checkpoint_path=ckpt, max_steps=3 * steps).interrupted
    torch.manual_seed(3)
    resumed = DAGNetwork(_config(), SPECS)
    phases, _ = _phases_with_capture(resumed, warmup=False, search_epochs=2, finetune_epochs=2)
    result = _fit_phases(resumed, phases, checkpoint_path=ckpt, resume=True)
    assert not result.interrupted
    for key, value in model.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_ablation_schedules() -> None:
    """Table 10: w/o search + FBR needs reduction 'none' (the gates stay 0, every edge is
    fine-tuned); w/o fine-tune ends with the search; Table 6: w/o reduction keeps every edge
    with the searched soft gates, frozen into buffers."""
    model = DAGNetwork(_config(), SPECS)
    with pytest.raises(ConfigError, match="w/o search"):
        _phases_with_capture(model, search=False)
    phases, _ = _phases_with_capture(model, search=False, reduction="none")
    assert [p.name for p in phases] == ["warmup", "finetune"]
    phases, _ = _phases_with_capture(model, finetune=False)
    assert [p.name for p in phases] == ["warmup", "search"]
    full = count_parameters(model) - sum(p.numel() for p in model.gate_parameters())
    phases, cap = _phases_with_capture(model, reduction="none", squeeze_weight=0.0)
    _fit_phases(model, phases)
    assert not any(model.is_final(t) for t in model.task_names) and not model.gate_parameters()
    assert count_parameters(model) == full  # never pruned
    for key, value in cap["search"].end.items():
        if key.startswith("gates."):
            assert torch.equal(value, model.state_dict()[key])
        else:
            assert torch.equal(cap["finetune"].start[key], cap["warmup"].end[key])
    assert {edge_count(model, t) for t in model.task_names} == {model.n_search_edges}
    with pytest.raises(ConfigError, match="at least one of"):
        _phases_with_capture(model, warmup=False, search=False, finetune=False, reduction="none")
    with pytest.raises(ConfigError, match="unknown reduction"):
        _phases_with_capture(model, reduction="prune")


def test_rewind_weights_keeps_the_gates_and_fits_a_pruned_model() -> None:
    model = DAGNetwork(_config(), SPECS)
    saved = _copy(model)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    reduce_model(model, "flow")
    gates = {k: v for k, v in _copy(model).items() if k.startswith("gates.")}
    rewind_weights(model, saved)
    for key, value in model.state_dict().items():
        assert torch.equal(value, gates[key] if key.startswith("gates.") else saved[key]), key
    with pytest.raises(ConfigError, match="lacks"):
        rewind_weights(model, {})
    data = graph_data(task_graph(model, "depth"))
    assert json.loads(json.dumps(data)) == data and {"nodes", "edges"} <= set(data)


def test_the_device_is_the_loops_choice() -> None:
    """CUDA when present (``device="auto"``); reduction and forward then work on it."""
    model = DAGNetwork(_config(), SPECS)
    _fit(model, [DAGWarmup()])
    device = resolve_device("auto")
    assert next(model.parameters()).device.type == device.type
    reduce_model(model, "random", seed=1)
    out = model(torch.rand(2, 3, SIZE, SIZE, device=device))
    assert all(v.device.type == device.type for v in out.values())
    pd.testing.assert_index_equal(pd.Index(out), pd.Index([t.name for t in SPECS]))
