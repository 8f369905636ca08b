"""Paper D: a DAG-based central network whose task sub-networks are searched and pruned.

W. Choi & S. Im, "Dynamic Neural Network for Multi-Task Learning Searching across Diverse
Network Topologies".  Hidden states v_1..v_N (topologically sorted) are linked by edges e_ij,
i < j, restricted to j − i <= M (the flow constant, §3.1); a read-in layer embeds the input
v_0 into every state and a read-out layer sums every state into the last feature v_L, each
with task-specific gates (Eq. 3-6).  Training (§3.2) has three stages: warm-up (gates fixed
at 0, σ = 0.5), search (gates trained at the upper lr, plus the squeeze loss λ_sq·L_sq),
flow-based reduction (Alg. 1) to a binary sub-network per task, and fine-tune (weights
rewound to the end of the warm-up, binary topology used without sigmoid).

* :func:`flow_edges`, :class:`DAGConfig`, :func:`vgg_like_config` -- the search space (App. A,
  Table 7: 12 VGG-16 states; 8 for Omniglot).
* :class:`DAGNetwork` -- the central network with per-task gates (``model.gates[task]``:
  ``read_in`` α, ``edges`` γ, ``read_out`` β) and task heads; soft (searching) or finalised
  (binary topology per task) per task; :meth:`DAGNetwork.prune_unused` deletes what no task
  uses.  :func:`chain_topology` / :func:`chain_network` build the shared-bottom and
  single-task baselines from the same class.
* :func:`squeeze_loss` (Eq. 9); the merged matrix Ψ (:func:`merge_psi`, :func:`split_psi`,
  :func:`psi_graph`); :func:`flow_reduction` (Alg. 1 = :func:`window_psi` then
  :func:`flow_prune` by :func:`flow_scores`), :func:`threshold_reduction` and
  :func:`random_reduction` (Fig. 5), :func:`trim_to_paths`; :func:`reduce_model` applies them
  to a network (:class:`TaskTopology` per task).
* :func:`task_graph`, :func:`topology_metrics` (D, W, S of §3.1), :func:`export_graph`.
* Hooks :class:`DAGWarmup`, :class:`DAGSearch`, :class:`DAGFinetune` (and
  :class:`SearchStart`), the fine-tune's ``prepare`` :class:`DAGReduction`, and
  :func:`dag_phases` (Alg. 1's schedule for :func:`~mtlrepro.phases.fit_phases`, with the
  ablations of Tables 6 and 10).

**Choices** (the paper leaves them open; the equation, section or table they concern is
named):

* Edge op (App. A, Table 8): conv3×3 (C_i → C_j, stride 1, padding 1, no bias) → BN → ReLU →
  max-pool with kernel = stride = s_j / s_i (s = a state's downsampling factor; no pool when 1).
* Read-in (Eq. 3, App. A "embeds the interpolated feature"): v_0 has 3 channels, so each state
  j has one read-in embedding R_j shared by all tasks: area interpolation of the (normalised)
  image to v_j's resolution (average pooling by s_j) → conv3×3 (3 → C_j) → BN → ReLU.  The gate
  scales its output, σ(α_j^k)·R_j(v_0) (scaling v_0 before a BN would be normalised away).
  R_j(v_0) does not depend on the gates and is computed once per forward for all tasks.
* Update (Eq. 4): the read-in term is one more incoming edge of v_j (Alg. 1's Ψ has it as the
  edge source → v_j), so v_j^k = (σ(α_j^k)·R_j(v_0) + Σ_i σ(γ_ij^k)·e_ij(v_i^k)) / In(v_j^k),
  In = the number of incoming edges of v_j in task k's graph, read-in included: while
  searching, every edge of the search space (the count, not the sum of the gates); once
  finalised, the edges of the binary topology.  A finalised state without an incoming edge is
  zero (cannot happen after :func:`trim_to_paths`).
* Read-out (Eq. 5, App. A "the weighted sum of interpolated hidden states"): each state is
  brought to v_N's shape by area interpolation (average pooling by s_N / s_i) and, where
  C_i ≠ C_N, a 1×1 conv (no bias) shared by all tasks; v_L^k = Σ_i σ(β_i^k)·(that) -- a sum,
  as in Eq. 5, not a mean.
* Heads (Eq. 6, §4.1 and App. A: DeepLab ASPP for dense tasks): the project's
  :class:`~mtlrepro.models.deeplab.ASPPHead` (torchvision's DeepLab-v3 ASPP; the paper names a
  DeepLab-v2 decoder) on v_L, upsampled by s_N to the input size; classification tasks get
  :class:`~mtlrepro.models.heads.ClassificationHead` (global pool → FC).  ASPP's image-pooling
  BN needs training batches of at least 2.  Inputs must have H and W divisible by s_N.
* Gates α, β, γ start at 0 (σ = 0.5, §3.2).  After finalisation the binary Â, B̂, Γ̂ are
  buffers (``*_mask``) used without sigmoid (§3.2, fine-tuning stage).
* Sharing (speed): a state's value is computed once for all tasks whose computation of it is
  identical -- same binary or same σ values of every gate on the way, same in-degrees -- and
  an edge's output once per distinct input state.  This is exact for outputs and weight
  gradients; it is disabled for soft gates that are being trained (gradient enabled and a
  gate requiring grad), where every task's gates must get their own gradient.  So the warm-up
  (all gates 0 and frozen) and the finalised network compute shared parts once, and the
  shared bottom computes its chain once.  BatchNorm running statistics are then updated once
  per distinct input, as in a single network.
* Alg. 1 takes the sigmoid values σ(α), σ(β), σ(γ) (its discretisation ``Ψ̂[Ψ̂ > 0] ← 1`` keeps
  positive weights, which raw logits need not be).  The window: N_α = argmax A,
  N_β = max(N_α + 1, argmax B) (0-based), capped at N − 1; states N_α..N_β are kept
  *inclusive* -- the comments "remove edges < N_α" / "> N_β" and the N_α + 1 guard (at least
  one edge between read-in and read-out) say so, while Alg. 1's slices read as half-open
  Python slices would drop the argmax-B state.
* Alg. 1's score, S[i,j] = ψ_ij·((1/In_i)·Σ_k ψ_ki / Σ_k ψ_ik + (1/Out_j)·Σ_k ψ_jk / Σ_k ψ_kj)
  with In / Out the numbers of non-zero incoming / outgoing entries of Ψ: a term whose
  in-degree (out-degree) is 0 -- the source's, a node that lost its inputs; the sink's, a
  node that lost its outputs -- is 0 (no flow passes there); Σ_k ψ_ik and Σ_k ψ_kj include
  ψ_ij itself, so they are positive for an existing edge.  The edge removed is the existing
  edge (ψ_ij > 0) of least S, ties to the first in row-major order.  Alg. 1 says "nonzero
  min"; the two differ only for edges of S = 0, which lie on no source→sink path (they would
  stay forever under "nonzero min") -- here they go first, which never affects reachability.
  Alg. 1 stops at the first removal after which the graph is no longer "reachable" and
  returns the Ψ before it, binarised.  Reachable (§3.2: "the reachability of Γ̂ between hidden
  state v_Nα to v_Nβ", by depth-first search): the window's first state v_Nα (argmax A) still
  reaches its last state v_Nβ through hidden edges (``networkx.has_path``), and keeps its
  read-in and v_Nβ its read-out -- so the source reaches the sink through the sub-network
  (line 14's "graph built from Ψ is reachable").  A mere source → v_k → sink path (read-in and
  read-out at one state, no hidden edge) does not count: with it the reduction could cut every
  hidden edge, which the N_α + 1 guard of line 4 exists to prevent.  N_α and N_β are the
  window's ends (:func:`psi_span`: the first read-in and the last read-out of the windowed Ψ);
  when N_α is the last state, N_β = N_α and the sub-network is that state alone.
* :func:`trim_to_paths` (applied by :func:`reduce_model` by default, ``trim=False`` to keep
  Alg. 1's raw output) drops the edges on no source→sink path, which Alg. 1 can leave behind:
  they cannot carry the input to the read-out, but would still cost parameters and time.
* Fig. 5's baselines: the same Ψ as Alg. 1 (after its window step), then hidden edges (Γ;
  "the lowest value in the adjacency matrix Γ") removed by increasing ψ (threshold) or in a
  seeded random order (random), skipping every edge whose removal would make the graph
  unreachable (as Alg. 1 defines it), until ``n_edges`` hidden edges remain; by default
  ``n_edges`` is what the flow-based reduction kept for that task (matched sparsity).
  ``n_edges`` also stops Alg. 1 early (§4.4: "a termination condition ... when a certain
  sparsity is met").
* Squeeze loss (Eq. 9): L_sq = Σ_k max(Σ_ij σ(γ_ij^k) − κ, 0), over the edges γ only.  The
  paper does not report κ (the budget); callers must choose it.
* Without read-in/out (Table 6, "w/o read-in/out"): the input is read only into v_1 and the
  read-out is v_N alone, both fixed at weight 1 (no α, β); Alg. 1 then never removes them.
* Sparsity (§3.1): S = |E_s| / |E| over the hidden edges e_ij, |E| the search space's edge
  count (:attr:`DAGNetwork.n_search_edges`); D (longest path) and W (max out-degree) are also
  over the hidden states (the paper defines all three on V = {v_1..v_N}).

**Ablations** (:func:`dag_phases`; Table 6 on NYU-v2 with M = 7, Table 10 with M = 5):

* w/o flow restriction -- ``DAGConfig.flow = None`` (the complete DAG, N(N−1)/2 edges).
* w/o read-in/out -- ``DAGConfig.read_in_out = False`` (above).
* w/o flow-based reduction -- ``reduction="none"``: the fine-tune keeps every edge with the
  searched gates fixed (frozen into buffers) and used with the sigmoid (the network "has
  never been pruned", Table 6: ≈5× the parameters).  Fine-tuning all edges with equal
  weights would make the search irrelevant, i.e. Table 10's "w/o search + FBR", which scores
  much lower.
* w/o L_sq -- ``squeeze_weight=0``.
* w/o warm-up (Table 10) -- ``warmup=False``: search from the initialisation; the fine-tune
  rewinds to the weights at the start of the search (the end of an empty warm-up).
* w/o search + FBR (Table 10) -- ``search=False`` (needs ``reduction="none"``): warm-up, then
  the fine-tune of the whole network with the gates fixed at 0 (σ = 0.5).
* w/o fine-tune (Table 10) -- ``finetune=False``: the phases end with the search; call
  :func:`reduce_model` afterwards and evaluate the reduced network with the searched weights
  (same parameters as the full method, Table 10).

Several fine-tunes from one search (e.g. Fig. 5's three reductions) need no schedule of their
own: copy the searched model, :func:`reduce_model` the copy, :func:`rewind_weights` it to a
``state_dict`` copy taken at the end of the warm-up, and fine-tune it with
:class:`DAGFinetune`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlrepro.config import ConfigError, check_choice, check_range
from mtlrepro.files import atomic_write_text
from mtlrepro.models.deeplab import ASPPHead
from mtlrepro.models.heads import ClassificationHead
from mtlrepro.models.multitask import TaskModuleDict
from mtlrepro.models.segnet import IMAGENET_MEAN, IMAGENET_STD
from mtlrepro.phases import Phase
from mtlrepro.tasks import TaskSpec
from mtlrepro.train import Hooks

VGG16_WIDTHS: tuple[int, ...] = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512)
"""Channels of the 12 hidden states (App. A, Table 7: VGG-16 without its max-pooled states)."""
VGG16_SCALES: tuple[int, ...] = (1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 16, 16)
"""Downsampling factor of each of the 12 hidden states w.r.t. the input (App. A, Table 7)."""
PAPER_ATROUS_RATES: tuple[int, ...] = (6, 12, 18)
"""ASPP rates of the dense heads at output stride 16 (DeepLab-v3's; the paper gives none)."""
REDUCTIONS: tuple[str, ...] = ("flow", "random", "threshold", "none")
"""Reductions of :func:`reduce_model`: Alg. 1, Fig. 5's two baselines, and ``"none"``
(Table 6's "w/o flow-based reduction": every edge kept with the searched soft gates)."""
PAPER_SETTINGS: dict[str, dict[str, Any]] = {
    "omniglot": {
        "n_states": 8,
        "weight_lr": 1e-4,
        "upper_lr": 1e-2,
        "squeeze_weight": 0.05,
        "iterations": (2000, 3000, 5000),
    },
    "nyuv2": {
        "n_states": 12,
        "weight_lr": 1e-4,
        "upper_lr": 1e-2,
        "squeeze_weight": 0.05,
        "iterations": (5000, 15000, 20000),
    },
    "cityscapes": {
        "n_states": 12,
        "weight_lr": 1e-4,
        "upper_lr": 5e-2,
        "squeeze_weight": 0.01,
        "iterations": (5000, 15000, 20000),
    },
    "pascal_context": {
        "n_states": 12,
        "weight_lr": 1e-4,
        "upper_lr": 1e-2,
        "squeeze_weight": 0.005,
        "iterations": (10000, 20000, 30000),
    },
}
"""Per dataset (§4.1, App. A, Table 9): hidden states, Adam lr of the weights and of the gates
("upper lr"), λ_sq, and warm-up / search / fine-tune iterations.  The budget κ is not given."""
GATE_PREFIX = "gates"
"""State-dict prefix of the gates and the finalised topology (``rewind_keep`` of the
fine-tune)."""

Edge = tuple[int, int]


# --------------------------------------------------------------------------------------------
# The search space (§3.1, App. A)
# --------------------------------------------------------------------------------------------
def _check_flow(flow: int | None) -> int | None:
    if flow is not None:
        check_range("flow constant M", flow, 1, integer=True)
    return flow


def flow_edges(n_states: int, flow: int | None) -> list[Edge]:
    """The edges e_ij of the search space, 1 <= i < j <= N with j − i <= M (§3.1), in
    row-major order; ``flow=None`` gives the complete DAG (all i < j).

    For M < N there are N·M − M(M+1)/2 of them.

    Args:
        n_states: N, the number of hidden states (``>= 1``).
        flow: the flow constant M (``>= 1``), or ``None`` for no restriction.
    """
    check_range("n_states", n_states, 1, integer=True)
    _check_flow(flow)
    return [
        (i, j)
        for i in range(1, n_states + 1)
        for j in range(i + 1, n_states + 1)
        if flow is None or j - i <= flow
    ]


def _int_tuple(name: str, values: Any, low: int) -> tuple[int, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ConfigError(f"{name} must be a sequence of integers; got {values!r}")
    values = tuple(values)
    for k, value in enumerate(values):
        check_range(f"{name}[{k}]", value, low, integer=True)
    return values


@dataclass(frozen=True)
class DAGConfig:
    """The central network's shape (validated on creation; bad values raise ``ConfigError``).

    Attributes:
        widths: channels of each hidden state v_1..v_N (N = ``len(widths)``).
        scales: each state's downsampling factor w.r.t. the input; each must divide the next
            (so non-decreasing), e.g. (1, 1, 2, 2, 4, 4, 4, 8, ...) (Table 7).
        flow: the flow constant M (``>= 1``), or ``None`` for the complete DAG.
        read_in_out: read-in / read-out layers with gates (``False``: Table 6's "w/o
            read-in/out": input into v_1 only, read-out v_N only, both fixed).
        head_width: channels of the ASPP heads of dense tasks.
        atrous_rates: ASPP dilation rates.
        classifier_hidden: hidden FC width of classification heads (``None``: one FC layer).
        in_channels: channels of the input image.
        mean: per-channel input mean the network subtracts.
        std: per-channel input standard deviation it divides by.
        channels_last: run on channels-last activations (weights keep their layout; outputs
            are returned contiguous) -- about twice as fast on CPU, where PyTorch's max-pool
            is slow in the standard layout.
    """

    widths: tuple[int, ...] = VGG16_WIDTHS
    scales: tuple[int, ...] = VGG16_SCALES
    flow: int | None = None
    read_in_out: bool = True
    head_width: int = 256
    atrous_rates: tuple[int, ...] = PAPER_ATROUS_RATES
    classifier_hidden: int | None = None
    in_channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels_last: bool = False

    def __post_init__(self) -> None:
        """Check every field; raises :class:`~mtlrepro.config.ConfigError`."""
        widths = _int_tuple("DAGConfig.widths", self.widths, 1)
        scales = _int_tuple("DAGConfig.scales", self.scales, 1)
        if not widths:
            raise ConfigError("DAGConfig.widths must name at least one hidden state")
        if len(scales) != len(widths):
            raise ConfigError(
                f"DAGConfig.scales has {len(scales)} entries and widths {len(widths)}: give one "
                "scale per hidden state"
            )
        for k in range(1, len(scales)):
            if scales[k] % scales[k - 1]:
                raise ConfigError(
                    f"DAGConfig.scales must each divide the next (non-decreasing, e.g. "
                    f"1, 1, 2, 2, 4); got {scales[k - 1]} then {scales[k]} in {scales}"
                )
        _check_flow(self.flow)
        if not isinstance(self.channels_last, bool):
            raise ConfigError(
                f"DAGConfig.channels_last must be True or False; got {self.channels_last!r}"
            )
        if not isinstance(self.read_in_out, bool):
            raise ConfigError(
                f"DAGConfig.read_in_out must be True or False; got {self.read_in_out!r}"
            )
        check_range("DAGConfig.head_width", self.head_width, 1, integer=True)
        rates = _int_tuple("DAGConfig.atrous_rates", self.atrous_rates, 1)
        if not rates:
            raise ConfigError("DAGConfig.atrous_rates must hold at least one rate")
        if self.classifier_hidden is not None:
            check_range("DAGConfig.classifier_hidden", self.classifier_hidden, 1, integer=True)
        check_range("DAGConfig.in_channels", self.in_channels, 1, integer=True)
        mean, std = tuple(self.mean), tuple(self.std)
        if len(mean) != self.in_channels or len(std) != self.in_channels:
            raise ConfigError(
                f"DAGConfig.mean and std need {self.in_channels} values (one per input channel); "
                f"got {len(mean)} and {len(std)}"
            )
        for k, (m, s) in enumerate(zip(mean, std, strict=True)):
            check_range(f"DAGConfig.mean[{k}]", m)
            check_range(f"DAGConfig.std[{k}]", s, 0.0, low_inclusive=False)
        for name, value in (
            ("widths", widths),
            ("scales", scales),
            ("atrous_rates", rates),
            ("mean", mean),
            ("std", std),
        ):
            object.__setattr__(self, name, value)

    @property
    def n_states(self) -> int:
        """N, the number of hidden states."""
        return len(self.widths)

    @property
    def edges(self) -> list[Edge]:
        """The search space's edges e_ij (:func:`flow_edges`)."""
        return flow_edges(self.n_states, self.flow)


def vgg_like_config(
    n_states: int = 12,
    width_multiplier: float = 1.0,
    flow: int | None = None,
    *,
    read_in_out: bool = True,
    head_width: int | None = None,
    atrous_rates: Sequence[int] = PAPER_ATROUS_RATES,
    classifier_hidden: int | None = None,
    channels_last: bool = False,
) -> DAGConfig:
    """The paper's VGG-16-like central network (App. A, Table 7), or a slim copy of it.

    The first ``n_states`` states of Table 7 (12: NYU-v2, Cityscapes, PASCAL-Context; 8:
    Omniglot -- the paper gives only the count, the first 8 of Table 7 are our choice), widths
    times ``width_multiplier`` (rounded, at least 1).

    Args:
        n_states: N, 1..12.
        width_multiplier: factor of every width (``> 0``), e.g. 1/8 for a CPU profile.
        flow: the flow constant M, or ``None``.
        read_in_out: see :class:`DAGConfig`.
        head_width: ASPP width (``None``: 256 × ``width_multiplier``, rounded, at least 1).
        atrous_rates: ASPP rates.
        classifier_hidden: hidden width of classification heads, or ``None``.
        channels_last: see :class:`DAGConfig`.
    """
    check_range("n_states", n_states, 1, len(VGG16_WIDTHS), integer=True)
    check_range("width_multiplier", width_multiplier, 0.0, low_inclusive=False)
    widths = tuple(max(1, round(w * width_multiplier)) for w in VGG16_WIDTHS[:n_states])
    return DAGConfig(
        widths=widths,
        scales=VGG16_SCALES[:n_states],
        flow=flow,
        read_in_out=read_in_out,
        head_width=max(1, round(256 * width_multiplier)) if head_width is None else head_width,
        atrous_rates=tuple(atrous_rates),
        classifier_hidden=classifier_hidden,
        channels_last=channels_last,
    )


# --------------------------------------------------------------------------------------------
# Topologies and the merged matrix Ψ (Alg. 1)
# --------------------------------------------------------------------------------------------
def _binary(name: str, array: Any, shape: tuple[int, ...]) -> np.ndarray:
    out = np.asarray(array)
    if out.shape != shape:
        raise ConfigError(f"{name} must have shape {shape}; got {out.shape}")
    if not np.isin(out, (0, 1)).all():
        raise ConfigError(f"{name} must be binary (0 / 1); got values {np.unique(out)}")
    return out.astype(np.int64)


@dataclass(frozen=True, eq=False)
class TaskTopology:
    """One task's binary sub-network (Alg. 1's output).

    Attributes:
        read_in: Â, shape (N,): 1 where the input is read into v_i.
        edges: Γ̂, shape (N, N): ``edges[i-1, j-1] = 1`` where e_ij is used (i < j).
        read_out: B̂, shape (N,): 1 where v_i is read out.
    """

    read_in: np.ndarray
    edges: np.ndarray
    read_out: np.ndarray

    def __post_init__(self) -> None:
        n = len(np.asarray(self.read_in))
        if n < 1:
            raise ConfigError("TaskTopology.read_in must have one entry per hidden state")
        object.__setattr__(self, "read_in", _binary("TaskTopology.read_in", self.read_in, (n,)))
        edges = _binary("TaskTopology.edges", self.edges, (n, n))
        if np.tril(edges).any():
            i, j = np.argwhere(np.tril(edges))[0] + 1
            raise ConfigError(f"TaskTopology.edges has e_{i}{j}; edges must go forward (i < j)")
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "read_out", _binary("TaskTopology.read_out", self.read_out, (n,)))

    @property
    def n_states(self) -> int:
        """N."""
        return len(self.read_in)

    @property
    def n_edges(self) -> int:
        """The number of hidden edges |E_s| (Γ̂'s ones)."""
        return int(self.edges.sum())

    def psi(self) -> np.ndarray:
        """The merged binary Ψ, (N+2) × (N+2) (:func:`merge_psi`)."""
        return merge_psi(self.read_in, self.edges, self.read_out)

    @classmethod
    def from_psi(cls, psi: np.ndarray) -> TaskTopology:
        """The topology of a binary Ψ (:func:`split_psi`).

        Args:
            psi: (N+2) × (N+2), source row 0, sink column N+1, entries 0 / 1.
        """
        read_in, edges, read_out = split_psi(psi)
        return cls(read_in, edges, read_out)


def _gates_arrays(
    read_in: Any, edges: Any, read_out: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated float copies of A (N,), Γ (N, N) and B (N,)."""
    a = np.array(read_in, dtype=np.float64)
    g = np.array(edges, dtype=np.float64)
    b = np.array(read_out, dtype=np.float64)
    if a.ndim != 1 or a.size < 1:
        raise ConfigError(f"read-in weights A must be a vector of N >= 1; got shape {a.shape}")
    n = a.size
    if g.shape != (n, n) or b.shape != (n,):
        raise ConfigError(
            f"with N = {n} read-in weights, Γ must be {n}×{n} and B of {n}; got {g.shape} and "
            f"{b.shape}"
        )
    for name, x in (("A", a), ("Γ", g), ("B", b)):
        if not np.isfinite(x).all() or (x < 0).any():
            raise ConfigError(f"{name} must hold finite non-negative weights (e.g. σ of the gates)")
    if np.tril(g).any():
        raise ConfigError("Γ must be strictly upper triangular (edges e_ij with i < j)")
    return a, g, b


def merge_psi(read_in: Any, edges: Any, read_out: Any) -> np.ndarray:
    """Ψ of Alg. 1: (N+2) × (N+2) with the read-in A in row 0 (source → v_i), Γ in the middle
    and the read-out B in column N+1 (v_i → sink).

    Args:
        read_in: A, shape (N,), non-negative.
        edges: Γ, shape (N, N), strictly upper triangular, non-negative.
        read_out: B, shape (N,), non-negative.
    """
    a, g, b = _gates_arrays(read_in, edges, read_out)
    n = a.size
    psi = np.zeros((n + 2, n + 2))
    psi[0, 1 : n + 1] = a
    psi[1 : n + 1, 1 : n + 1] = g
    psi[1 : n + 1, n + 1] = b
    return psi


def _check_psi(psi: Any) -> np.ndarray:
    """A validated float copy of Ψ."""
    out = np.array(psi, dtype=np.float64)
    if out.ndim != 2 or out.shape[0] != out.shape[1] or out.shape[0] < 3:
        raise ConfigError(f"Ψ must be an (N+2)×(N+2) matrix with N >= 1; got shape {out.shape}")
    if not np.isfinite(out).all() or (out < 0).any():
        raise ConfigError("Ψ must hold finite non-negative weights")
    if np.tril(out).any():
        raise ConfigError("Ψ must be strictly upper triangular (a topologically sorted DAG)")
    if out[0, -1]:
        raise ConfigError("Ψ must not link the source (row 0) to the sink (column N+1) directly")
    return out


def split_psi(psi: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, Γ, B) of a Ψ (the inverse of :func:`merge_psi`).

    Args:
        psi: (N+2) × (N+2).
    """
    psi = _check_psi(psi)
    n = psi.shape[0] - 2
    return psi[0, 1 : n + 1].copy(), psi[1 : n + 1, 1 : n + 1].copy(), psi[1 : n + 1, n + 1].copy()


def psi_graph(psi: Any) -> nx.DiGraph:
    """The directed graph of Ψ's non-zero entries (nodes 0..N+1, edge attribute ``weight``).

    Args:
        psi: (N+2) × (N+2).
    """
    psi = _check_psi(psi)
    graph = nx.DiGraph()
    graph.add_nodes_from(range(psi.shape[0]))
    for i, j in zip(*np.nonzero(psi), strict=True):
        graph.add_edge(int(i), int(j), weight=float(psi[i, j]))
    return graph


def psi_span(psi: Any) -> tuple[int, int]:
    """The Ψ nodes (N_α + 1, N_β + 1) of a windowed Ψ (:func:`window_psi`): its first state
    with a read-in and its last state with a read-out (module doc).

    Args:
        psi: (N+2) × (N+2).
    """
    psi = _check_psi(psi)
    read_in, read_out = np.flatnonzero(psi[0, 1:-1]), np.flatnonzero(psi[1:-1, -1])
    if read_in.size == 0 or read_out.size == 0:
        raise ConfigError("Ψ has no read-in or no read-out: nothing to reduce")
    return int(read_in[0]) + 1, int(read_out[-1]) + 1


def _reachable(psi: np.ndarray, span: tuple[int, int]) -> bool:
    """Alg. 1's reachability (module doc): v_Nα keeps its read-in, v_Nβ its read-out, and v_Nα
    reaches v_Nβ (``networkx.has_path``; the nodes between them are hidden states)."""
    first, last = span
    sink = psi.shape[0] - 1
    return bool(psi[0, first] > 0 and psi[last, sink] > 0) and nx.has_path(
        psi_graph(psi), first, last
    )


def _n_hidden(psi: np.ndarray) -> int:
    """The number of hidden edges (Γ's non-zero entries) of Ψ."""
    return int(np.count_nonzero(psi[1:-1, 1:-1]))


def _require_span(psi: np.ndarray) -> tuple[int, int]:
    """Ψ's span (:func:`psi_span`), checked reachable."""
    span = psi_span(psi)
    if not _reachable(psi, span):
        raise ConfigError(
            f"Ψ has no path from its first read-in state (node {span[0]}) to its last read-out "
            f"state (node {span[1]}): nothing to reduce"
        )
    return span


def window_psi(read_in: Any, edges: Any, read_out: Any) -> np.ndarray:
    """Alg. 1, lines 1-7: N_α = argmax A, N_β = max(N_α + 1, argmax B) (0-based, capped at
    N − 1); edges outside states N_α..N_β (inclusive, module doc) are zeroed; A and B are kept
    on those states only; all merged into Ψ.

    Args:
        read_in: A, shape (N,).
        edges: Γ, shape (N, N).
        read_out: B, shape (N,).
    """
    a, g, b = _gates_arrays(read_in, edges, read_out)
    n = a.size
    lo = int(np.argmax(a))
    hi = min(max(lo + 1, int(np.argmax(b))), n - 1)
    inside = np.zeros(n, dtype=bool)
    inside[lo : hi + 1] = True
    g = g * inside[:, None] * inside[None, :]
    return merge_psi(a * inside, g, b * inside)


def flow_scores(psi: Any) -> np.ndarray:
    """Alg. 1's information-flow score S of every entry of Ψ (0 where ψ = 0).

    S[i,j] = ψ_ij·((1/In_i)·Σ_k ψ_ki / Σ_k ψ_ik + (1/Out_j)·Σ_k ψ_jk / Σ_k ψ_kj), In / Out
    counting non-zero entries; a term with In_i = 0 (Out_j = 0) is 0 (module doc).

    Args:
        psi: (N+2) × (N+2).
    """
    psi = _check_psi(psi)
    inflow, outflow = psi.sum(axis=0), psi.sum(axis=1)
    in_degree = np.count_nonzero(psi, axis=0)
    out_degree = np.count_nonzero(psi, axis=1)
    tail = np.zeros_like(inflow)
    ok = (in_degree > 0) & (outflow > 0)
    tail[ok] = inflow[ok] / (in_degree[ok] * outflow[ok])
    head = np.zeros_like(inflow)
    ok = (out_degree > 0) & (inflow > 0)
    head[ok] = outflow[ok] / (out_degree[ok] * inflow[ok])
    return psi * (tail[:, None] + head[None, :])


def _plain(value: Any) -> Any:
    """A numpy integer as a Python int (anything else unchanged), for :func:`check_range`."""
    return int(value) if isinstance(value, np.integer) else value


def _check_n_edges(n_edges: Any) -> int | None:
    if n_edges is not None:
        n_edges = check_range("n_edges", _plain(n_edges), 0, integer=True)
    return n_edges


def flow_prune(
    psi: Any, *, n_edges: int | None = None, removable: np.ndarray | None = None
) -> np.ndarray:
    """Alg. 1, lines 8-20 on a windowed Ψ: remove the edge of least score
    (:func:`flow_scores`) while the graph stays reachable (v_Nα reaches v_Nβ, module doc);
    return the last Ψ in which it did, binarised.

    Args:
        psi: (N+2) × (N+2) weights, reachable.
        n_edges: also stop once at most this many hidden edges remain (§4.4's sparsity
            condition), or ``None``.
        removable: boolean mask of the entries that may be removed (``None``: all); fixed
            read-in / read-out edges (Table 6, "w/o read-in/out") are not.

    Returns:
        The binary Ψ̂.
    """
    current = _check_psi(psi)
    n_edges = _check_n_edges(n_edges)
    if removable is None:
        removable = np.ones(current.shape, dtype=bool)
    elif np.shape(removable) != current.shape:
        raise ConfigError(f"removable must have Ψ's shape {current.shape}")
    span = _require_span(current)
    while n_edges is None or _n_hidden(current) > n_edges:
        candidates = (current > 0) & removable
        if not candidates.any():
            break
        scores = np.where(candidates, flow_scores(current), np.inf)
        i, j = np.unravel_index(int(np.argmin(scores)), scores.shape)
        trial = current.copy()
        trial[i, j] = 0.0
        if not _reachable(trial, span):
            break
        current = trial
    return (current > 0).astype(np.int64)


def flow_reduction(
    read_in: Any,
    edges: Any,
    read_out: Any,
    *,
    n_edges: int | None = None,
    fixed_read_in_out: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alg. 1, flow-based reduction of one task: window (:func:`window_psi`), then removal by
    information flow (:func:`flow_prune`).

    Args:
        read_in: A = σ(α), shape (N,).
        edges: Γ = σ(γ), shape (N, N), strictly upper triangular (0 outside the search space).
        read_out: B = σ(β), shape (N,).
        n_edges: stop once at most this many hidden edges remain (§4.4), or ``None``.
        fixed_read_in_out: never remove read-in / read-out edges (Table 6, "w/o read-in/out").

    Returns:
        Binary (Â, Γ̂, B̂) (Alg. 1's output, untrimmed).
    """
    psi = window_psi(read_in, edges, read_out)
    removable = _hidden_only(psi.shape) if fixed_read_in_out else None
    return split_psi(flow_prune(psi, n_edges=n_edges, removable=removable))


def _hidden_only(shape: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[1:-1, 1:-1] = True
    return mask


def _ordered_prune(psi: np.ndarray, order: Sequence[tuple[int, int]], n_edges: int) -> np.ndarray:
    """Remove hidden edges in ``order`` until ``n_edges`` remain, skipping any whose removal
    would make Ψ unreachable (module doc); binarised."""
    span = _require_span(psi)
    current = psi.copy()
    for i, j in order:
        if _n_hidden(current) <= n_edges:
            break
        trial = current.copy()
        trial[i, j] = 0.0
        if _reachable(trial, span):
            current = trial
    return (current > 0).astype(np.int64)


def _hidden_entries(psi: np.ndarray) -> list[tuple[int, int]]:
    inner = np.zeros_like(psi, dtype=bool)
    inner[1:-1, 1:-1] = psi[1:-1, 1:-1] > 0
    return [(int(i), int(j)) for i, j in zip(*np.nonzero(inner), strict=True)]


def threshold_reduction(psi: Any, n_edges: int) -> np.ndarray:
    """Fig. 5's thresholding: remove hidden edges by increasing ψ (ties in row-major order)
    until ``n_edges`` remain, skipping those whose removal would make Ψ unreachable (module
    doc; so more remain only if every remaining one is needed for that).

    Args:
        psi: (N+2) × (N+2) weights, windowed and reachable.
        n_edges: hidden edges to keep (``>= 0``).

    Returns:
        The binary Ψ̂ (reachable).
    """
    psi = _check_psi(psi)
    n_edges = check_range("n_edges", _plain(n_edges), 0, integer=True)
    entries = _hidden_entries(psi)
    order = sorted(entries, key=lambda e: (psi[e], e))
    return _ordered_prune(psi, order, n_edges)


def random_reduction(psi: Any, n_edges: int, seed: int = 0) -> np.ndarray:
    """Fig. 5's random reduction: remove hidden edges in a random order
    (``numpy.random.default_rng(seed)``) until ``n_edges`` remain, skipping those whose
    removal would make Ψ unreachable (module doc).

    Args:
        psi: (N+2) × (N+2) weights, windowed and reachable.
        n_edges: hidden edges to keep (``>= 0``).
        seed: seed of the order (``>= 0``).

    Returns:
        The binary Ψ̂ (reachable).
    """
    psi = _check_psi(psi)
    n_edges = check_range("n_edges", _plain(n_edges), 0, integer=True)
    seed = check_range("seed", _plain(seed), 0, integer=True)
    entries = _hidden_entries(psi)
    order = [entries[k] for k in np.random.default_rng(seed).permutation(len(entries))]
    return _ordered_prune(psi, order, n_edges)


def trim_to_paths(psi: Any) -> np.ndarray:
    """The binary Ψ of the edges on some source → sink path (module doc).

    Args:
        psi: (N+2) × (N+2), the source reaching the sink.
    """
    psi = _check_psi(psi)
    graph = psi_graph(psi)
    sink = psi.shape[0] - 1
    if not nx.has_path(graph, 0, sink):
        raise ConfigError("Ψ has no path from the input (source) to the read-out (sink)")
    forward = nx.descendants(graph, 0) | {0}
    backward = nx.ancestors(graph, sink) | {sink}
    out = np.zeros(psi.shape, dtype=np.int64)
    for i, j in graph.edges:
        if i in forward and j in backward:
            out[i, j] = 1
    return out


# --------------------------------------------------------------------------------------------
# The central network (Eq. 3-6)
# --------------------------------------------------------------------------------------------
class EdgeOp(nn.Sequential):
    """e_ij (App. A, Table 8): conv3×3 (C_i → C_j) → BN → ReLU → max-pool by s_j / s_i."""

    def __init__(self, in_channels: int, out_channels: int, factor: int) -> None:
        """Args:
        in_channels: C_i.
        out_channels: C_j.
        factor: s_j / s_i (``1``: no pooling).
        """
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
        if factor > 1:
            layers.append(nn.MaxPool2d(factor))
        super().__init__(*layers)


class ReadIn(nn.Module):
    """Read-in embedding of v_j (Eq. 3, module doc): average-pool the image by s_j → conv3×3
    (C_0 → C_j) → BN → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, factor: int) -> None:
        """Args:
        in_channels: the image's channels.
        out_channels: C_j.
        factor: s_j.
        """
        super().__init__()
        self.factor = factor
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, image: Tensor) -> Tensor:
        """Args:
        image: the normalised input, (B, C_0, H, W)."""
        if self.factor > 1:
            image = F.avg_pool2d(image, self.factor)
        return self.block(image)


class ReadOut(nn.Module):
    """Read-out of v_i to v_N's shape (Eq. 5, module doc): average-pool by s_N / s_i, then a
    1×1 conv (no bias) if C_i ≠ C_N."""

    def __init__(self, in_channels: int, out_channels: int, factor: int) -> None:
        """Args:
        in_channels: C_i.
        out_channels: C_N.
        factor: s_N / s_i.
        """
        super().__init__()
        self.factor = factor
        self.project = (
            nn.Conv2d(in_channels, out_channels, 1, bias=False)
            if in_channels != out_channels
            else None
        )

    def forward(self, state: Tensor) -> Tensor:
        """Args:
        state: v_i, (B, C_i, H / s_i, W / s_i)."""
        if self.factor > 1:
            state = F.avg_pool2d(state, self.factor)
        return state if self.project is None else self.project(state)


class TaskGates(nn.Module):
    """One task's upper-level parameters and finalised topology.

    Attributes:
        read_in: α, (N,) (absent without read-in/out).
        edges: γ, one per search-space edge, in :attr:`DAGNetwork.edge_list` order.
        read_out: β, (N,) (absent without read-in/out).
        read_in_mask: Â (finalised), else 1 where a read-in exists (buffer).
        edges_mask: Γ̂ per edge (finalised), else all 1 (buffer).
        read_out_mask: B̂ (finalised), else 1 where a read-out exists (buffer).
        final: whether the binary masks replace the sigmoid gates (buffer, bool).

    After :meth:`freeze` α, β, γ are buffers (same state-dict keys).
    """

    def __init__(self, n_states: int, n_edges: int, read_in_out: bool) -> None:
        """Args:
        n_states: N.
        n_edges: |E| of the search space.
        read_in_out: whether α, β exist (else read-in v_1 and read-out v_N are fixed).
        """
        super().__init__()
        if read_in_out:
            self.read_in = nn.Parameter(torch.zeros(n_states))
        self.edges = nn.Parameter(torch.zeros(n_edges))
        if read_in_out:
            self.read_out = nn.Parameter(torch.zeros(n_states))
        read_in_mask = torch.zeros(n_states)
        read_out_mask = torch.zeros(n_states)
        if read_in_out:
            read_in_mask += 1
            read_out_mask += 1
        else:
            read_in_mask[0] = read_out_mask[-1] = 1.0
        self.register_buffer("read_in_mask", read_in_mask)
        self.register_buffer("edges_mask", torch.ones(n_edges))
        self.register_buffer("read_out_mask", read_out_mask)
        self.register_buffer("final", torch.zeros((), dtype=torch.bool))

    def logits(self) -> dict[str, Tensor]:
        """The gates that exist: ``read_in`` α, ``edges`` γ, ``read_out`` β."""
        return {
            name: getattr(self, name)
            for name in ("read_in", "edges", "read_out")
            if hasattr(self, name)
        }

    def gate_parameters(self) -> list[nn.Parameter]:
        """α, γ, β while they are parameters (not after :meth:`freeze`)."""
        return [p for p in self.logits().values() if isinstance(p, nn.Parameter)]

    def freeze(self) -> None:
        """Turn α, γ, β into buffers (state-dict keys unchanged): the finalised network's
        parameters are then its weights alone."""
        for name, value in self.logits().items():
            if isinstance(value, nn.Parameter):
                delattr(self, name)
                self.register_buffer(name, value.detach().clone())

    def is_final(self) -> bool:
        """Whether the binary topology is in use."""
        return bool(self.final)


@dataclass
class _TaskPlan:
    """What one task's forward pass uses: active read-ins / edges / read-outs, multipliers
    (tensors, or ``None`` for 1), the values that identify its computation for sharing, and
    the token that makes it unique when it must not be shared."""

    read_in: list[bool]
    edges: list[bool]
    read_out: list[bool]
    mult: dict[str, Tensor | None]
    values: dict[str, list[float]]
    token: str | None
    final: bool
    demanded: list[bool] = field(default_factory=list)


def _spec_dict(task_specs: Mapping[str, TaskSpec] | Iterable[TaskSpec]) -> dict[str, TaskSpec]:
    specs = list(task_specs.values() if isinstance(task_specs, Mapping) else task_specs)
    if not specs:
        raise ConfigError("a DAG network needs at least one task")
    out: dict[str, TaskSpec] = {}
    for spec in specs:
        if not isinstance(spec, TaskSpec):
            raise ConfigError(f"task_specs must hold TaskSpec objects; got {spec!r}")
        if spec.name in out:
            raise ConfigError(f"task {spec.name!r} is given twice")
        out[spec.name] = spec
    return out


class DAGNetwork(nn.Module):
    """Paper D's central network with per-task gates and heads (Eq. 3-6; module doc).

    ``forward(images) -> {task: raw output}``: (B, out_channels, H, W) for dense tasks,
    (B, classes) for classification -- the contract of
    :class:`~mtlrepro.models.multitask.MultiTaskModel`.  The network normalises its input
    itself (``(images − mean) / std``, images in [0, 1]).

    Attributes:
        config: the :class:`DAGConfig`.
        task_specs: task name -> spec, in task order.
        edge_list: the search space's edges (i, j), in γ's order.
        edge_ops: ``"i_j"`` -> :class:`EdgeOp` (pruned ones deleted).
        read_ins: ``"j"`` -> :class:`ReadIn` (only v_1 without read-in/out).
        read_outs: ``"i"`` -> :class:`ReadOut` (only v_N without read-in/out).
        gates: task -> :class:`TaskGates`.
        heads: task -> head.
    """

    def __init__(
        self, config: DAGConfig, task_specs: Mapping[str, TaskSpec] | Iterable[TaskSpec]
    ) -> None:
        """Args:
        config: the network's shape.
        task_specs: the tasks (one head and one set of gates each).
        """
        super().__init__()
        if not isinstance(config, DAGConfig):
            raise ConfigError(f"DAGNetwork needs a DAGConfig; got {type(config).__name__}")
        self.config = config
        self.task_specs = _spec_dict(task_specs)
        n, widths, scales = config.n_states, config.widths, config.scales
        self.edge_list: list[Edge] = config.edges
        self.edge_index = {edge: k for k, edge in enumerate(self.edge_list)}
        self.incoming: dict[int, list[tuple[int, int]]] = {j: [] for j in range(1, n + 1)}
        for k, (i, j) in enumerate(self.edge_list):
            self.incoming[j].append((k, i))
        self.edge_ops = nn.ModuleDict(
            {
                f"{i}_{j}": EdgeOp(widths[i - 1], widths[j - 1], scales[j - 1] // scales[i - 1])
                for i, j in self.edge_list
            }
        )
        ins = range(1, n + 1) if config.read_in_out else [1]
        outs = range(1, n + 1) if config.read_in_out else [n]
        self.read_ins = nn.ModuleDict(
            {str(j): ReadIn(config.in_channels, widths[j - 1], scales[j - 1]) for j in ins}
        )
        self.read_outs = nn.ModuleDict(
            {str(i): ReadOut(widths[i - 1], widths[-1], scales[-1] // scales[i - 1]) for i in outs}
        )
        self.gates = TaskModuleDict(
            {t: TaskGates(n, len(self.edge_list), config.read_in_out) for t in self.task_specs}
        )
        self.heads = TaskModuleDict({t: self._head(spec) for t, spec in self.task_specs.items()})
        self.register_buffer("input_mean", torch.tensor(config.mean).view(1, -1, 1, 1))
        self.register_buffer("input_std", torch.tensor(config.std).view(1, -1, 1, 1))

    def _head(self, spec: TaskSpec) -> nn.Module:
        """Eq. 6's H^k: ASPP for dense tasks (upsampled by s_N), else a classifier."""
        c = self.config
        if spec.dense:
            return ASPPHead(
                c.widths[-1], spec.out_channels, c.atrous_rates, c.head_width, c.scales[-1]
            )
        return ClassificationHead(c.widths[-1], spec.out_channels, c.classifier_hidden)

    # ---- description ------------------------------------------------------------------------
    @property
    def task_names(self) -> tuple[str, ...]:
        """Task names in head order."""
        return tuple(self.heads)

    @property
    def n_states(self) -> int:
        """N."""
        return self.config.n_states

    @property
    def n_search_edges(self) -> int:
        """|E|, the search space's hidden edges (the denominator of the sparsity S)."""
        return len(self.edge_list)

    def is_final(self, task: str | None = None) -> bool:
        """Whether ``task`` (``None``: every task) uses its finalised binary topology."""
        if task is not None:
            return self.gates[check_choice("task", task, self.task_names)].is_final()
        return all(g.is_final() for g in self.gates.values())

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the central network (edges, read-in and read-out layers)."""
        return [
            *self.edge_ops.parameters(),
            *self.read_ins.parameters(),
            *self.read_outs.parameters(),
        ]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters of one task: its head and its gates (while they are parameters).

        Args:
            task: a task name of this model.
        """
        check_choice("task", task, self.task_names)
        return [*self.heads[task].parameters(), *self.gates[task].gate_parameters()]

    def gate_parameters(self) -> list[nn.Parameter]:
        """Every task's α, γ, β that are still parameters (the search's upper level)."""
        return [p for gates in self.gates.values() for p in gates.gate_parameters()]

    def soft_gates(self, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A, Γ, B) = (σ(α), σ(γ), σ(β)) of ``task`` as numpy arrays, 0 outside the search
        space; fixed read-in / read-out (``read_in_out=False``) are 1 at v_1 / v_N.

        Args:
            task: a task name.
        """
        gates = self.gates[check_choice("task", task, self.task_names)]
        n = self.n_states
        logits = {
            k: torch.sigmoid(v.detach()).double().cpu().numpy() for k, v in gates.logits().items()
        }
        a = logits.get("read_in", gates.read_in_mask.detach().double().cpu().numpy())
        b = logits.get("read_out", gates.read_out_mask.detach().double().cpu().numpy())
        g = np.zeros((n, n))
        for k, (i, j) in enumerate(self.edge_list):
            g[i - 1, j - 1] = logits["edges"][k]
        return a.copy(), g, b.copy()

    def topology(self, task: str) -> TaskTopology:
        """The binary topology ``task`` uses: its finalised one, or (searching) every
        read-in, edge and read-out of the search space.

        Args:
            task: a task name.
        """
        gates = self.gates[check_choice("task", task, self.task_names)]
        n = self.n_states
        edges = np.zeros((n, n), dtype=np.int64)
        for k, (i, j) in enumerate(self.edge_list):
            edges[i - 1, j - 1] = int(gates.edges_mask[k] > 0)
        return TaskTopology(
            (gates.read_in_mask > 0).long().cpu().numpy(),
            edges,
            (gates.read_out_mask > 0).long().cpu().numpy(),
        )

    # ---- finalisation -----------------------------------------------------------------------
    def _check_topology(self, task: str, topology: TaskTopology) -> None:
        if not isinstance(topology, TaskTopology):
            raise ConfigError(f"topology of task {task!r} must be a TaskTopology")
        n = self.n_states
        if topology.n_states != n:
            raise ConfigError(
                f"topology of task {task!r} has {topology.n_states} states; the network has {n}"
            )
        used = [(int(i) + 1, int(j) + 1) for i, j in np.argwhere(topology.edges)]
        outside = [edge for edge in used if edge not in self.edge_index]
        if outside:
            raise ConfigError(
                f"topology of task {task!r} uses edges {outside} outside the search space "
                f"(flow constant M = {self.config.flow})"
            )
        if not self.config.read_in_out:
            for name, wanted in (("read-in", topology.read_in), ("read-out", topology.read_out)):
                fixed = _fixed_mask(n, name == "read-in")
                if not np.array_equal(wanted, fixed):
                    raise ConfigError(
                        f"topology of task {task!r}: without read-in/out the {name} is fixed "
                        f"to {fixed.tolist()}; got {wanted.tolist()}"
                    )
        pruned = [f"e_{i},{j}" for i, j in used if f"{i}_{j}" not in self.edge_ops]
        pruned += [
            f"read-in {j + 1}"
            for j in np.flatnonzero(topology.read_in)
            if str(j + 1) not in self.read_ins
        ]
        pruned += [
            f"read-out {i + 1}"
            for i in np.flatnonzero(topology.read_out)
            if str(i + 1) not in self.read_outs
        ]
        if pruned:
            raise ConfigError(
                f"topology of task {task!r} uses {pruned}, deleted by prune_unused; finalise a "
                "network before pruning it"
            )
        if not topology.read_out.any():
            raise ConfigError(f"topology of task {task!r} reads out no state")

    @torch.no_grad()
    def finalise(self, topologies: Mapping[str, TaskTopology]) -> None:
        """Use the given binary topologies from now on (§3.2, fine-tuning: no sigmoid).

        Args:
            topologies: task -> :class:`TaskTopology`, for every task.
        """
        missing = sorted(set(self.task_names) - set(topologies))
        unknown = sorted(set(topologies) - set(self.task_names))
        if missing or unknown:
            raise ConfigError(
                f"finalise needs a topology for every task {list(self.task_names)}; missing "
                f"{missing}, unknown {unknown}"
            )
        for task, topology in topologies.items():
            self._check_topology(task, topology)
        for task, topology in topologies.items():
            gates = self.gates[task]
            gates.read_in_mask.copy_(torch.as_tensor(topology.read_in))
            gates.read_out_mask.copy_(torch.as_tensor(topology.read_out))
            gates.edges_mask.copy_(
                torch.tensor([float(topology.edges[i - 1, j - 1]) for i, j in self.edge_list])
            )
            gates.final.fill_(True)

    def used_components(self) -> dict[str, set[Any]]:
        """What the forward pass runs: ``"edges"`` (i, j), ``"read_ins"`` j and
        ``"read_outs"`` i, over all tasks (a searching task runs its whole search space)."""
        used: dict[str, set[Any]] = {"edges": set(), "read_ins": set(), "read_outs": set()}
        for task in self.task_names:
            plan = self._plan(task)
            for j in range(1, self.n_states + 1):
                if not plan.demanded[j]:
                    continue
                if plan.read_in[j - 1]:
                    used["read_ins"].add(j)
                used["edges"].update(
                    self.edge_list[k] for k, _ in self.incoming[j] if plan.edges[k]
                )
            used["read_outs"].update(i + 1 for i, on in enumerate(plan.read_out) if on)
        return used

    def prune_unused(self) -> dict[str, int]:
        """Delete the edges, read-in and read-out layers no task runs, and freeze the gates
        into buffers, so that :func:`~mtlrepro.models.multitask.count_parameters` is the
        parameters of the union of the task sub-networks plus the heads.  Outputs are
        unchanged.  On a task still searching it deletes nothing of its search space (Table 6's
        "w/o flow-based reduction" then counts the whole central network) but freezes its
        gates: search it no more.

        Returns:
            The numbers of deleted ``edges``, ``read_ins`` and ``read_outs``.
        """
        used = self.used_components()
        deleted = {"edges": 0, "read_ins": 0, "read_outs": 0}
        for key in list(self.edge_ops):
            i, j = map(int, key.split("_"))
            if (i, j) not in used["edges"]:
                del self.edge_ops[key]
                deleted["edges"] += 1
        for name in ("read_ins", "read_outs"):
            modules = getattr(self, name)
            for key in list(modules):
                if int(key) not in used[name]:
                    del modules[key]
                    deleted[name] += 1
        for gates in self.gates.values():
            gates.freeze()
        return deleted

    # ---- forward ----------------------------------------------------------------------------
    def normalise(self, images: Tensor) -> Tensor:
        """``(images − mean) / std``, channels-last if configured.

        Args:
            images: float images in [0, 1], (B, C_0, H, W).
        """
        x = (images - self.input_mean) / self.input_std
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _plan(self, task: str) -> _TaskPlan:
        """Task ``task``'s forward plan (see :class:`_TaskPlan`)."""
        gates = self.gates[task]
        final = gates.is_final()
        active = {
            "read_in": [v > 0 for v in gates.read_in_mask.tolist()],
            "edges": [v > 0 for v in gates.edges_mask.tolist()],
            "read_out": [v > 0 for v in gates.read_out_mask.tolist()],
        }
        mult: dict[str, Tensor | None] = dict.fromkeys(active)
        values = {name: [1.0] * len(on) for name, on in active.items()}
        token = None
        if not final:
            logits = gates.logits()
            mult = {
                name: torch.sigmoid(logits[name]) if name in logits else None for name in active
            }
            trained = torch.is_grad_enabled() and any(p.requires_grad for p in logits.values())
            if trained:
                token = task
            else:
                for name, m in mult.items():
                    if m is not None:
                        values[name] = m.tolist()
        n = self.n_states
        demanded = [False] * (n + 1)
        for i, on in enumerate(active["read_out"], start=1):
            demanded[i] = on
        for j in range(n, 0, -1):
            if demanded[j]:
                for k, i in self.incoming[j]:
                    if active["edges"][k]:
                        demanded[i] = True
        return _TaskPlan(
            active["read_in"],
            active["edges"],
            active["read_out"],
            mult,
            values,
            token,
            final,
            demanded,
        )

    def _check_input(self, x: Tensor) -> None:
        s = self.config.scales[-1]
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ConfigError(
                f"DAGNetwork expects images of shape (B, {self.config.in_channels}, H, W); got "
                f"{tuple(x.shape)}"
            )
        if x.shape[-2] % s or x.shape[-1] % s:
            raise ConfigError(
                f"DAGNetwork input height and width must be divisible by {s} (the last state's "
                f"downsampling); got {tuple(x.shape[-2:])}"
            )

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Args:
        images: float images in [0, 1], (B, C_0, H, W), H and W divisible by s_N.

        Returns:
            Task name -> raw output (see the class doc).
        """
        x = self.normalise(images)
        self._check_input(x)
        ids: dict[Any, int] = {}

        def intern(key: Any) -> int:
            return ids.setdefault(key, len(ids))

        embeds: dict[int, Tensor] = {}
        states: dict[int, Tensor] = {}
        edge_out: dict[tuple[int, int], Tensor] = {}
        read_out: dict[int, Tensor] = {}
        last: dict[int, Tensor] = {}
        outputs: dict[str, Tensor] = {}
        for task in self.task_names:
            plan = self._plan(task)
            sig: dict[int, int] = {}
            for j in range(1, self.n_states + 1):
                if not plan.demanded[j]:
                    continue
                key, terms = self._state_terms(plan, j, sig)
                sig[j] = intern(key)
                if sig[j] not in states:
                    states[sig[j]] = self._state(x, j, plan, terms, sig, embeds, states, edge_out)
            parts = [
                (i, plan.values["read_out"][i - 1])
                for i in range(1, self.n_states + 1)
                if plan.read_out[i - 1]
            ]
            if not parts:
                raise ConfigError(f"task {task!r} reads out no state")
            key_l = intern(("L", plan.token, tuple((i, v, sig[i]) for i, v in parts)))
            if key_l not in last:
                total: Tensor | None = None
                for i, _ in parts:
                    if sig[i] not in read_out:
                        read_out[sig[i]] = self.read_outs[str(i)](states[sig[i]])
                    term = _scaled(read_out[sig[i]], plan.mult["read_out"], i - 1)
                    total = term if total is None else total + term
                assert total is not None
                last[key_l] = total
            outputs[task] = self.heads[task](last[key_l]).contiguous()
        return outputs

    def _state_terms(
        self, plan: _TaskPlan, j: int, sig: Mapping[int, int]
    ) -> tuple[Any, list[tuple[int, int]]]:
        """The sharing key of v_j in this plan and its terms: (-1, -1) for the read-in,
        (k, i) for edge k from v_i."""
        terms: list[tuple[int, int]] = []
        parts: list[tuple[Any, ...]] = []
        if plan.read_in[j - 1]:
            terms.append((-1, -1))
            parts.append(("in", plan.values["read_in"][j - 1]))
        for k, i in self.incoming[j]:
            if plan.edges[k]:
                terms.append((k, i))
                parts.append((i, plan.values["edges"][k], sig[i]))
        in_degree = self._in_degree(plan, j, len(terms))
        return (j, plan.token, in_degree, tuple(parts)), terms

    def _in_degree(self, plan: _TaskPlan, j: int, n_terms: int) -> int:
        """In(v_j^k) of Eq. 4: the used incoming edges when finalised, else the search
        space's (read-in included)."""
        if plan.final:
            return n_terms
        return int(str(j) in self.read_ins) + len(self.incoming[j])

    def _state(
        self,
        x: Tensor,
        j: int,
        plan: _TaskPlan,
        terms: Sequence[tuple[int, int]],
        sig: Mapping[int, int],
        embeds: dict[int, Tensor],
        states: Mapping[int, Tensor],
        edge_out: dict[tuple[int, int], Tensor],
    ) -> Tensor:
        """v_j^k of Eq. 3-4 (zeros if a finalised v_j has no incoming edge)."""
        total: Tensor | None = None
        for k, i in terms:
            if k < 0:
                if j not in embeds:
                    embeds[j] = self.read_ins[str(j)](x)
                term = _scaled(embeds[j], plan.mult["read_in"], j - 1)
            else:
                cache = (sig[i], j)
                if cache not in edge_out:
                    edge_out[cache] = self.edge_ops[f"{i}_{j}"](states[sig[i]])
                term = _scaled(edge_out[cache], plan.mult["edges"], k)
            total = term if total is None else total + term
        if total is None:
            s = self.config.scales[j - 1]
            shape = (x.shape[0], self.config.widths[j - 1], x.shape[2] // s, x.shape[3] // s)
            return x.new_zeros(shape)
        in_degree = self._in_degree(plan, j, len(terms))
        return total if in_degree == 1 else total / in_degree


def _scaled(value: Tensor, mult: Tensor | None, index: int) -> Tensor:
    """``mult[index]·value`` (``value`` itself when ``mult`` is ``None``: weight 1)."""
    return value if mult is None else value * mult[index]


def _fixed_mask(n: int, read_in: bool) -> np.ndarray:
    mask = np.zeros(n, dtype=np.int64)
    mask[0 if read_in else -1] = 1
    return mask


def _dag(model: nn.Module, what: str) -> DAGNetwork:
    if not isinstance(model, DAGNetwork):
        raise ConfigError(f"{what} needs a DAGNetwork; got {type(model).__name__}")
    return model


# --------------------------------------------------------------------------------------------
# Fixed topologies: shared bottom and single task
# --------------------------------------------------------------------------------------------
def chain_topology(n_states: int) -> TaskTopology:
    """The chain v_1 → v_2 → … → v_N, read-in v_1, read-out v_N: a plain VGG-like encoder
    (the shared-bottom / single-task network of §4.1).

    Args:
        n_states: N (``>= 1``).
    """
    check_range("n_states", n_states, 1, integer=True)
    edges = np.zeros((n_states, n_states), dtype=np.int64)
    for i in range(n_states - 1):
        edges[i, i + 1] = 1
    return TaskTopology(_fixed_mask(n_states, True), edges, _fixed_mask(n_states, False))


def chain_network(
    config: DAGConfig, task_specs: Mapping[str, TaskSpec] | Iterable[TaskSpec]
) -> DAGNetwork:
    """Shared bottom (several tasks) or single task (one task): a :class:`DAGNetwork` whose
    every task uses :func:`chain_topology`, pruned; the chain is computed once for all tasks.
    Built with M = 1 (the chain's search space; the parameters are those of pruning any M).

    Args:
        config: the central network's shape (its ``flow`` is ignored).
        task_specs: the tasks.
    """
    model = DAGNetwork(dataclasses.replace(config, flow=1), task_specs)
    chain = chain_topology(config.n_states)
    model.finalise(dict.fromkeys(model.task_names, chain))
    model.prune_unused()
    return model


# --------------------------------------------------------------------------------------------
# Squeeze loss (Eq. 9) and the reduction of a model
# --------------------------------------------------------------------------------------------
def squeeze_loss(model: nn.Module, budget: float) -> Tensor:
    """L_sq = Σ_k max(Σ_ij σ(γ_ij^k) − κ, 0) (Eq. 9).

    Args:
        model: a :class:`DAGNetwork`.
        budget: κ (``>= 0``).
    """
    check_range("budget κ", budget, 0.0)
    model = _dag(model, "squeeze_loss")
    terms = [torch.relu(torch.sigmoid(g.edges).sum() - budget) for g in model.gates.values()]
    return torch.stack(terms).sum()


def reduce_model(
    model: nn.Module,
    method: str = "flow",
    *,
    seed: int = 0,
    n_edges: int | Mapping[str, int] | None = None,
    trim: bool = True,
    prune: bool = True,
) -> dict[str, TaskTopology]:
    """Turn the searched gates into every task's finalised binary topology (§3.2), in place.

    Per task: Ψ from σ(α), σ(γ), σ(β) with Alg. 1's window (:func:`window_psi`), then
    ``"flow"`` (Alg. 1, :func:`flow_prune`), ``"threshold"`` or ``"random"``
    (:func:`threshold_reduction`, :func:`random_reduction`; seed ``seed + task index``), then
    (``trim``) :func:`trim_to_paths`; then :meth:`DAGNetwork.finalise` and (``prune``)
    :meth:`DAGNetwork.prune_unused`.  ``"none"`` finalises nothing: the tasks keep every edge
    with their searched soft gates (``prune`` then only freezes the gates).

    Args:
        model: a searched :class:`DAGNetwork` (no task finalised yet).
        method: one of :data:`REDUCTIONS`.
        seed: seed of the random reduction (``>= 0``).
        n_edges: hidden edges to keep, one number or task -> number; ``None``: the flow
            reduction's own stop, and for random / threshold the number of hidden edges the
            flow reduction keeps for that task (Fig. 5's matched sparsity).
        trim: drop edges on no input → read-out path.
        prune: delete unused modules and freeze the gates.

    Returns:
        Task -> its topology.
    """
    check_choice("reduction", method, REDUCTIONS)
    check_range("seed", seed, 0, integer=True)
    model = _dag(model, "reduce_model")
    if method == "none":
        if any(model.is_final(t) for t in model.task_names):
            raise ConfigError("reduce_model: the model is already finalised")
        if prune:
            model.prune_unused()
        return {task: model.topology(task) for task in model.task_names}
    if any(model.is_final(t) for t in model.task_names):
        raise ConfigError("reduce_model: the model is already finalised (reduce it only once)")
    if isinstance(n_edges, Mapping):
        missing = sorted(set(model.task_names) - set(n_edges))
        if missing:
            raise ConfigError(f"n_edges has no entry for tasks {missing}")
        targets = {t: _check_n_edges(n_edges[t]) for t in model.task_names}
    else:
        targets = dict.fromkeys(model.task_names, _check_n_edges(n_edges))
    fixed = not model.config.read_in_out
    topologies: dict[str, TaskTopology] = {}
    for index, task in enumerate(model.task_names):
        psi = window_psi(*model.soft_gates(task))
        removable = _hidden_only(psi.shape) if fixed else None
        target = targets[task]
        if method == "flow":
            hat = flow_prune(psi, n_edges=target, removable=removable)
        else:
            if target is None:
                flow_hat = flow_prune(psi, removable=removable)
                target = _n_hidden(trim_to_paths(flow_hat) if trim else flow_hat)
            if method == "threshold":
                hat = threshold_reduction(psi, target)
            else:
                hat = random_reduction(psi, target, seed + index)
        if trim:
            hat = trim_to_paths(hat)
        topologies[task] = TaskTopology.from_psi(hat)
    model.finalise(topologies)
    if prune:
        model.prune_unused()
    return topologies


# --------------------------------------------------------------------------------------------
# Topology analysis (§3.1, Table 5, Fig. 3)
# --------------------------------------------------------------------------------------------
def task_graph(model: nn.Module, task: str) -> nx.DiGraph:
    """Task ``task``'s graph: node 0 the input, 1..N the hidden states, N+1 the read-out;
    edges 0 → i (read-in), i → j (e_ij), i → N+1 (read-out) with attribute ``weight`` (σ of
    the gate while searching, 1 once finalised: only the used edges) and ``kind``.

    Nodes carry ``kind`` (``input``, ``state``, ``read_out``), ``channels`` and ``scale``;
    the graph carries ``task``, ``final`` and ``n_search_edges``.

    Args:
        model: a :class:`DAGNetwork`.
        task: a task name.
    """
    model = _dag(model, "task_graph")
    check_choice("task", task, model.task_names)
    c, n = model.config, model.n_states
    final = model.is_final(task)
    graph = nx.DiGraph(task=task, final=final, n_search_edges=model.n_search_edges)
    graph.add_node(0, kind="input", channels=c.in_channels, scale=1)
    for i in range(1, n + 1):
        graph.add_node(i, kind="state", channels=c.widths[i - 1], scale=c.scales[i - 1])
    graph.add_node(n + 1, kind="read_out", channels=c.widths[-1], scale=c.scales[-1])
    topology = model.topology(task)
    a, g, b = (
        (topology.read_in, topology.edges, topology.read_out) if final else model.soft_gates(task)
    )
    for i in range(1, n + 1):
        if a[i - 1] > 0:
            graph.add_edge(0, i, weight=float(a[i - 1]), kind="read_in")
        if b[i - 1] > 0:
            graph.add_edge(i, n + 1, weight=float(b[i - 1]), kind="read_out")
    for i, j in model.edge_list:
        if topology.edges[i - 1, j - 1] and g[i - 1, j - 1] > 0:
            graph.add_edge(i, j, weight=float(g[i - 1, j - 1]), kind="edge")
    return graph


def topology_metrics(graph: nx.DiGraph, n_search_edges: int) -> dict[str, float]:
    """§3.1's depth D (longest path, in edges), width W (largest out-degree) and sparsity
    S = |E_s| / |E| of a graph's hidden states (nodes of ``kind`` ``"state"``; all nodes when
    no node has a ``kind``), plus ``edges`` = |E_s|.

    Args:
        graph: a DAG, e.g. :func:`task_graph`'s.
        n_search_edges: |E|, the search space's hidden edges (``>= |E_s|``, ``>= 1``).
    """
    if not isinstance(graph, nx.DiGraph) or not nx.is_directed_acyclic_graph(graph):
        raise ConfigError("topology_metrics needs a directed acyclic networkx graph")
    hidden = [v for v, kind in graph.nodes(data="kind", default="state") if kind == "state"]
    sub = graph.subgraph(hidden)
    n_edges = sub.number_of_edges()
    check_range("n_search_edges", n_search_edges, max(1, n_edges), integer=True)
    depth = nx.dag_longest_path_length(sub, weight=None) if n_edges else 0
    width = max((d for _, d in sub.out_degree()), default=0)
    return {
        "depth": int(depth),
        "width": int(width),
        "sparsity": n_edges / n_search_edges,
        "edges": n_edges,
    }


def graph_data(graph: nx.DiGraph) -> dict[str, Any]:
    """``graph`` as JSON-able networkx node-link data (``edges`` key; read it back with
    ``networkx.node_link_graph(data, edges="edges")``).

    Args:
        graph: e.g. :func:`task_graph`'s.
    """
    return nx.node_link_data(graph, edges="edges")


def export_graph(graph: nx.DiGraph, path: str | Path) -> Path:
    """Write ``graph`` as networkx node-link JSON (:func:`graph_data`), atomically.

    Args:
        graph: e.g. :func:`task_graph`'s.
        path: the destination file.
    """
    return atomic_write_text(path, json.dumps(graph_data(graph), indent=1, sort_keys=True) + "\n")


def edge_count(model: nn.Module, task: str) -> int:
    """|E_s|: the hidden edges ``task`` uses (every search-space edge while searching).

    Args:
        model: a :class:`DAGNetwork`.
        task: a task name.
    """
    return _dag(model, "edge_count").topology(task).n_edges


# --------------------------------------------------------------------------------------------
# Training through the loop's seams (§3.2)
# --------------------------------------------------------------------------------------------
class DAGWarmup(Hooks):
    """§3.2 warm-up: α, β, γ set to 0 (σ = 0.5) and frozen -- left out of the optimiser and
    ``requires_grad`` off, which also lets the tasks' identical computations be shared."""

    def excluded_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The gates (zeroed, frozen)."""
        params = _dag(model, "DAGWarmup").gate_parameters()
        with torch.no_grad():
            for param in params:
                param.zero_()
                param.requires_grad_(False)
        return params


class DAGSearch(Hooks):
    """§3.2 search: the gates train in their own parameter group at the upper lr (no weight
    decay), and the loss gains λ_sq·L_sq (Eq. 8-9).

    Args:
        upper_lr: the gates' lr (``> 0``; Table 9: 1e-2, Cityscapes 5e-2).
        squeeze_weight: λ_sq (``>= 0``; 0 is Table 6's "w/o L_sq").
        budget: κ (``>= 0``).
    """

    def __init__(self, upper_lr: float, squeeze_weight: float, budget: float) -> None:
        check_range("upper_lr", upper_lr, 0.0, low_inclusive=False)
        check_range("squeeze_weight λ_sq", squeeze_weight, 0.0)
        check_range("budget κ", budget, 0.0)
        self.upper_lr, self.squeeze_weight, self.budget = upper_lr, squeeze_weight, budget

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The gates, group ``"dag_gates"``."""
        model = _dag(model, "DAGSearch")
        if any(model.is_final(t) for t in model.task_names):
            raise ConfigError("DAGSearch: the model is already finalised; search a fresh one")
        params = model.gate_parameters()
        if not params:
            raise ConfigError(
                "DAGSearch: the gates are frozen (prune_unused); search a fresh model"
            )
        for param in params:
            param.requires_grad_(True)
        return [{"name": "dag_gates", "params": params, "lr": self.upper_lr, "weight_decay": 0.0}]

    def extra_loss(
        self, model: nn.Module, batch: Mapping[str, Tensor], preds: Mapping[str, Tensor]
    ) -> Tensor | None:
        """λ_sq·L_sq, or ``None`` when λ_sq = 0."""
        if self.squeeze_weight == 0:
            return None
        return self.squeeze_weight * squeeze_loss(model, self.budget)


class DAGFinetune(Hooks):
    """§3.2 fine-tune: the gates (if still parameters) are left out of the optimiser and
    frozen; only the weights Θ train (on the finalised topology after a reduction)."""

    def excluded_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The gates that are still parameters (frozen)."""
        params = _dag(model, "DAGFinetune").gate_parameters()
        for param in params:
            param.requires_grad_(False)
        return params


class SearchStart(Hooks):
    """Keeps a copy of the model's state before the first step of its phase (in its
    checkpointed state): the rewind target of the fine-tune without a warm-up (Table 10)."""

    def __init__(self) -> None:
        self.state: dict[str, Tensor] = {}

    def before_step(self, model: nn.Module, batch: Mapping[str, Tensor], step: int) -> None:
        """At the phase's first step, copy the model's state."""
        if step == 1:
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        """The copy."""
        return {"start": dict(self.state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the copy.

        Args:
            state: a previous :meth:`state_dict`.
        """
        self.state = dict(state.get("start", {}))


@torch.no_grad()
def rewind_weights(
    model: nn.Module, saved: Mapping[str, Tensor], keep: Sequence[str] = (GATE_PREFIX,)
) -> None:
    """Copy a saved state into ``model`` in place, except the keys under ``keep`` (by default
    the gates and finalised topology): §3.2's rewind of the weights to the end of the warm-up.
    A pruned model takes only the entries it still has.

    Args:
        model: the model.
        saved: a ``state_dict`` copy of the same model, taken before any pruning.
        keep: state-dict key prefixes left as they are.
    """
    prefixes = tuple(f"{k}." for k in keep)
    missing = [k for k in model.state_dict() if k not in saved and not k.startswith(prefixes)]
    if missing:
        raise ConfigError(f"rewind_weights: the saved state lacks {missing[:5]}")
    for key, value in model.state_dict().items():
        if not key.startswith(prefixes) and key not in keep:
            value.copy_(saved[key])


class DAGReduction:
    """The fine-tune's ``prepare`` (:class:`~mtlrepro.phases.Phase`): optionally rewind the
    weights (not the gates) to a :class:`SearchStart` copy, then :func:`reduce_model` (which
    also freezes the gates into buffers).

    Args:
        method: one of :data:`REDUCTIONS`.
        seed: seed of the random reduction.
        n_edges: see :func:`reduce_model`.
        rewind_from: a :class:`SearchStart` whose copy the weights go back to, or ``None``.
    """

    def __init__(
        self,
        method: str = "flow",
        *,
        seed: int = 0,
        n_edges: int | Mapping[str, int] | None = None,
        rewind_from: SearchStart | None = None,
    ) -> None:
        check_choice("reduction", method, REDUCTIONS)
        check_range("seed", seed, 0, integer=True)
        self.method, self.seed, self.n_edges, self.rewind_from = method, seed, n_edges, rewind_from

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> None:
        """Rewind (if asked), then reduce ``model`` in place.

        Args:
            model: the searched :class:`DAGNetwork`.
        """
        model = _dag(model, "DAGReduction")
        if self.rewind_from is not None:
            if not self.rewind_from.state:
                raise ConfigError("DAGReduction: the search start was never recorded")
            rewind_weights(model, self.rewind_from.state)
        reduce_model(model, self.method, seed=self.seed, n_edges=self.n_edges)


def dag_phases(
    model: nn.Module,
    *,
    warmup_epochs: int,
    search_epochs: int,
    finetune_epochs: int,
    upper_lr: float,
    squeeze_weight: float,
    budget: float,
    reduction: str = "flow",
    seed: int = 0,
    warmup: bool = True,
    search: bool = True,
    finetune: bool = True,
    n_edges: int | Mapping[str, int] | None = None,
) -> list[Phase]:
    """Alg. 1's schedule for :func:`~mtlrepro.phases.fit_phases`: ``warmup`` (gates 0,
    frozen) → ``search`` (gates at ``upper_lr``, λ_sq·L_sq) → ``finetune`` (prepared by the
    reduction, weights rewound to the end of the warm-up, gates and topology kept).

    The ablations (module doc): ``warmup=False``, ``search=False`` (with ``reduction="none"``),
    ``finetune=False`` (then call :func:`reduce_model` after ``fit_phases``),
    ``reduction="none"``, ``squeeze_weight=0``.  A resumed run needs a freshly built model
    (the reduction prunes it).

    Args:
        model: the (not yet finalised) :class:`DAGNetwork` the phases will train.
        warmup_epochs: epochs of the warm-up (``>= 1`` when it runs).
        search_epochs: epochs of the search (``>= 1`` when it runs).
        finetune_epochs: epochs of the fine-tune (``>= 1`` when it runs).
        upper_lr: the gates' lr in the search.
        squeeze_weight: λ_sq.
        budget: κ.
        reduction: one of :data:`REDUCTIONS`.
        seed: seed of the random reduction.
        warmup: run the warm-up.
        search: run the search.
        finetune: run the fine-tune.
        n_edges: see :func:`reduce_model`.
    """
    model = _dag(model, "dag_phases")
    if any(model.is_final(t) for t in model.task_names):
        raise ConfigError("dag_phases: the model is already finalised; build a fresh one")
    check_choice("reduction", reduction, REDUCTIONS)
    for name, flag in (("warmup", warmup), ("search", search), ("finetune", finetune)):
        if not isinstance(flag, bool):
            raise ConfigError(f"dag_phases: {name} must be True or False; got {flag!r}")
    if not (warmup or search or finetune):
        raise ConfigError("dag_phases: at least one of warmup, search, finetune must run")
    if not search and reduction != "none":
        raise ConfigError(
            f"dag_phases: without the search there is nothing to reduce (Table 10, 'w/o search "
            f"+ FBR'); use reduction='none', not {reduction!r}"
        )
    search_hook = DAGSearch(upper_lr, squeeze_weight, budget)
    phases: list[Phase] = []
    if warmup:
        check_range("warmup_epochs", warmup_epochs, 1, integer=True)
        phases.append(Phase("warmup", warmup_epochs, [DAGWarmup()]))
    start = None if warmup or not search else SearchStart()
    if search:
        check_range("search_epochs", search_epochs, 1, integer=True)
        hooks: list[Hooks] = [search_hook] if start is None else [search_hook, start]
        phases.append(Phase("search", search_epochs, hooks))
    if finetune:
        check_range("finetune_epochs", finetune_epochs, 1, integer=True)
        prepare = DAGReduction(reduction, seed=seed, n_edges=n_edges, rewind_from=start)
        phases.append(
            Phase(
                "finetune",
                finetune_epochs,
                [DAGFinetune()],
                rewind_to="warmup" if warmup else None,
                rewind_keep=(GATE_PREFIX,),
                prepare=prepare,
            )
        )
    return phases
