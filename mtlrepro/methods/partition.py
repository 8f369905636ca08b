"""Paper E: the partition matrix ``P``, its refinement, masks from ``P̃``, and the search.

A. Newell, L. Jiang, C. Wang, L.-J. Li & J. Deng, "Feature Partitioning for Efficient
Multi-Task Architectures" (§3, §3.1, §4.1, App. A.1).  Each task gets a binary channel mask;
the c × n matrix ``M`` of all masks is summarised by ``P = MᵀM / c`` (§3.1): ``P_ii`` is the
share of the c channels task i uses, ``P_ij`` the share task i and task j both use.  The
search runs over ``P`` (random sampling or evolution strategies, §4.1); a mask realising
``P`` is then derived (App. A.1).  The network, the mask hooks and the distillation score live
in :mod:`mtlrepro.methods.partition_net`; this module is pure numpy / scipy.

* :func:`partition_matrix`, :func:`average_use` -- ``P = MᵀM / c`` and mean(diag P) (§3.1).
* :func:`refine` (App. A.1 Eq. 1-4), its inverse :func:`unrefine`, :func:`overlap_bounds`
  (Eq. 2-3) and :func:`check_refined`.
* :func:`masks_milp` / :func:`solve_masks_milp` -- the mixed-integer program of Eq. 5-10
  (scipy's HiGHS); :func:`masks_sampled` -- the authors' greedy randomised sampler.
* :func:`mask_error` -- how closely a mask meets ``P̃``.
* :func:`random_partition` (§4.1 random search), :func:`diagonal_partition` (Fig. 4 middle:
  fixed diagonal, varying sharing), :func:`baseline_partition` (Table 2's baselines).
* :class:`EvolutionStrategy` -- §4.1's ES (Mania et al. 2018) with the L2 penalty on diag P.
* :func:`benchmark_masks` -- MILP vs sampler, time and error; :func:`write_partition` -- CSVs.

**Choices** (the paper leaves them open or its public code differs; the equation or section
they concern is named):

* Refinement (App. A.1 Eq. 1-4) is a *reparameterisation*, not a projection: an off-diagonal
  entry x ∈ [0, 1] of the raw ``P`` becomes ``P_min + x·(P_max - P_min)`` (0 = least possible
  overlap, 1 = most), the diagonal is kept.  Applying it twice is therefore *not* the identity
  on a feasible ``P̃`` (x = 0.25 inside [0, 0.5] becomes 0.125); the search keeps the raw ``P``
  and refines each sample once.  :func:`unrefine` is the exact inverse on feasible matrices
  (the authors' ``convert_mat(invert=True)``; where ``P_max = P_min`` any raw value maps to the
  same ``P̃`` and 0 is returned).  The raw ``P`` must be symmetric (the authors' code reads its
  upper triangle only); the refined matrix is symmetric by construction.
* MILP (App. A.1 Eq. 5-10).  As printed, Eq. 6 and Eq. 7 bound usage and overlap from *above*
  only (``Σ_k M_ki <= P̃_ii + φ_i``), so ``M = 0`` with zero slack is optimal.  We add the
  matching lower bounds, i.e. each constraint becomes an equality with two non-negative slacks,
  ``Σ_k M_ki - φ⁺_i + φ⁻_i = c·P̃_ii`` (Eq. 6) and ``Σ_k t_ijk - ξ⁺_ij + ξ⁻_ij = c·P̃_ij``
  (Eq. 7), and the objective (Eq. 5) sums all slacks: the total absolute deviation in
  channels.  ``P̃`` is a fraction, so targets are scaled by c (the paper omits the factor).
  Eq. 7 is written for i < j only: i = j repeats Eq. 6 (``t_iik = M_ki``) and (j, i) repeats
  (i, j), so Eq. 5's sum over all (i, j) is exactly twice ours and has the same minimisers.
  Eq. 8 (``t <= (M_ki + M_kj)/2``) is replaced by the two tighter inequalities
  ``t <= M_ki``, ``t <= M_kj`` (the same set of binary points, a tighter LP relaxation); with
  them and Eq. 9, ``t`` is forced to ``M_ki ∧ M_kj`` by any binary ``M``, so ``t`` is declared
  continuous in [0, 1] and only the c·n entries of ``M`` are integer.  Channel symmetry (§3.1:
  "all permutations of channels are equivalent") can be broken by ordering the channels
  (``symmetry_breaking=True``): channel k's pattern read as a binary number (task 0 the most
  significant bit, the first :data:`SYMMETRY_TASKS` tasks) is >= channel k+1's; every mask has
  a permutation in that order, so the optimum is unchanged.  It is *off* by default: on a
  random ``P̃`` with c = 64, n = 6 HiGHS reached a total deviation of 81.8 channels in 8 s with
  it and 8.8 without (2 busy CPU cores; the optimum is 8.3) -- HiGHS's own symmetry handling
  does better.  The solver stops at
  ``time_limit`` with its best mask (its status says so); it raises :class:`MaskSolverError`
  when it has none.
* MILP in pattern counts (``formulation="patterns"``, our addition).  Because channels are
  interchangeable, a mask is determined up to permutation by how many channels x_s carry each
  of the 2^n task patterns s; Σ_k M_ki = Σ_{s∋i} x_s and Σ_k t_ijk = Σ_{s∋i,j} x_s.  The same
  objective and constraints (Eq. 5-7 with lower bounds, Σ_s x_s = c) over integer x_s >= 0 are
  therefore the same problem with 2^n integer variables instead of c·n binaries and c·n(n-1)/2
  t's, and no channel symmetry: optimal in well under a second for n = 6 (limited to
  n <= :data:`MAX_PATTERN_TASKS`).  The default stays the paper's ``"channels"``.
* Sampler (the authors' public code, ``mask_solver``): targets in channels are rounded to the
  nearest integer (the code floors ``P·c + 0.001``).  Task 0 takes the first ``round(c·P̃_00)``
  channels.  Task j draws ``round(c·P̃_jj)`` channels without replacement with probability
  proportional to ``Π_{i<j} w_ij(k)``, where ``w_ij(k) = o_ij / u_i`` if task i uses channel k
  and ``(u_j - o_ij) / (c - u_i)`` otherwise (u = usage, o = overlap targets in channels): the
  chance that channel k is among j's if j's overlap with i alone were met in expectation.  Of
  ``draws`` draws the one with the smallest ‖overlaps with tasks < j - targets‖₂ is kept (the
  code's default is 8; its partition manager passes 100, our default).  When fewer channels have
  a positive weight than j needs, the rest are drawn uniformly from the others (the code then
  gives the task fewer channels).  The randomness is a ``numpy.random.Generator`` seeded by
  ``seed``.
* Both mask finders return the channels in one canonical order (sorted by the pattern as above,
  descending), as the authors' code sorts its channels.  Only forward masks are derived (the
  paper's backward masks, §3, use a second ``P``; the same functions apply to it).
* Random search (§4.1): raw ``P`` uniform in [0, 1] (diagonal and upper triangle, mirrored),
  then refined.  ES initial samples (authors' code, ``rand_type='restrict'``): diagonal
  ``0.5 + N(0, 0.2)``, off-diagonal uniform, every entry clamped to [0.05, 1].
* Evolution strategies (§4.1, Mania et al. 2018, constants from the authors' code): the
  parameters θ are the raw ``P``'s diagonal and upper triangle, in [0, 1].  Each step draws 8
  directions ``δ = σ·ε``, ε ~ N(0, I), σ = 0.04, and scores ``refine(clip(θ ± δ))``.  The 16
  scores are standardised together (zero mean, unit standard deviation; all zero if they are
  all equal); the 7 directions with the largest ``max(r⁺, r⁻)`` are kept; the loss gradient
  is ``g = -mean_top((r⁺ - r⁻)·δ)`` (descending it raises the score), plus weight decay
  ``λ·θ`` on the diagonal entries only (the L2 penalty ``λ/2·‖diag P‖²``; paper and code
  λ = 0.001, "wd 1e-3" in Table 2); SGD with momentum, ``v <- 0.8·v + g``, ``θ <- θ - 0.25·v``
  (torch's SGD form); θ is clipped to [0, 1].  Before the first step, 32 initial samples
  are scored and the search starts from the best one (the authors' code).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from mtlrepro.config import ConfigError, check_choice, check_range
from mtlrepro.files import FILE_STEM, atomic_write_text

TOLERANCE = 1e-6
"""Slack allowed in the checks of symmetry, the [0, 1] range and the overlap bounds."""
SYMMETRY_TASKS = 16
"""Tasks (the first ones) whose bits order the channels in the MILP's symmetry breaking
(weights 2^15 ... 1 stay exact in floating point)."""
FORMULATIONS: tuple[str, ...] = ("channels", "patterns")
"""MILP formulations (:func:`solve_masks_milp`)."""
MAX_PATTERN_TASKS = 12
"""Most tasks the ``"patterns"`` formulation accepts (it has 2^n integer variables)."""
DEFAULT_TIME_LIMIT = 60.0
"""Seconds the MILP may run by default."""
DEFAULT_DRAWS = 100
"""Draws per task of the sampler (the authors' partition manager passes 100)."""
BASELINES: tuple[str, ...] = ("independent", "share_half", "share_all")
"""Table 2's baseline partitions (:func:`baseline_partition`)."""

ES_DIRECTIONS = 8
ES_SIGMA = 0.04
ES_TOP_K = 7
ES_PENALTY = 1e-3
ES_LR = 0.25
ES_MOMENTUM = 0.8
ES_INITIAL_SAMPLES = 32
ES_INITIAL_DIAGONAL = (0.5, 0.2)
"""Mean and standard deviation of the diagonal of the ES initial samples (authors' code)."""
ES_INITIAL_CLAMP = (0.05, 1.0)
"""Range the ES initial samples are clamped to (authors' code)."""


class MaskSolverError(RuntimeError):
    """The MILP solver ended without a mask (failure, or time limit before a feasible point)."""


# --------------------------------------------------------------------------------------------
# P = MᵀM / c and the refinement (§3.1, App. A.1 Eq. 1-4)
# --------------------------------------------------------------------------------------------
def _check_masks(masks: Any, name: str = "masks") -> np.ndarray:
    """``masks`` as a c × n uint8 array of 0/1, c >= 1 and n >= 1, else ``ConfigError``."""
    array = np.asarray(masks)
    if array.ndim != 2:
        raise ConfigError(f"{name} must be a channels × tasks matrix; got shape {array.shape}")
    c, n = array.shape
    if c < 1 or n < 1:
        raise ConfigError(
            f"{name} must have at least one channel and one task; got {c} channels × {n} tasks"
        )
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.number) or not np.isin(array, (0, 1)).all():
        raise ConfigError(f"{name} must hold only 0 and 1 (a binary mask per task)")
    return array.astype(np.uint8)


def _check_square(P: Any, name: str) -> np.ndarray:
    """``P`` as a float n × n array, n >= 1, finite, symmetric and in [0, 1] (within
    :data:`TOLERANCE`, then clipped), else ``ConfigError`` naming ``name``."""
    try:
        array = np.array(P, dtype=float)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{name} must be a square matrix of numbers: {error}") from None
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ConfigError(f"{name} must be a square tasks × tasks matrix; got shape {array.shape}")
    if array.shape[0] < 1:
        raise ConfigError(f"{name} must cover at least one task; got an empty matrix")
    if not np.isfinite(array).all():
        raise ConfigError(f"{name} must be finite; it holds NaN or infinity")
    low, high = array.min(), array.max()
    if low < -TOLERANCE or high > 1 + TOLERANCE:
        i, j = map(int, np.argwhere((array < -TOLERANCE) | (array > 1 + TOLERANCE))[0])
        raise ConfigError(
            f"{name} values must lie in [0, 1] (shares of the channels, §3.1); "
            f"{name}[{i}, {j}] = {array[i, j]:.6g}"
        )
    asymmetry = np.abs(array - array.T)
    if asymmetry.max() > TOLERANCE:
        i, j = np.unravel_index(np.argmax(asymmetry), array.shape)
        raise ConfigError(
            f"{name} must be symmetric (P = MᵀM / c, §3.1); {name}[{i}, {j}] = "
            f"{array[i, j]:.6g} but {name}[{j}, {i}] = {array[j, i]:.6g}"
        )
    array = np.clip((array + array.T) / 2, 0.0, 1.0)
    return array


def partition_matrix(masks: Any) -> np.ndarray:
    """``P = MᵀM / c`` (§3.1): usage shares on the diagonal, overlap shares off it.

    Args:
        masks: the c × n binary mask ``M`` (channels × tasks; bool or 0/1).
    """
    M = _check_masks(masks).astype(float)
    return M.T @ M / M.shape[0]


def average_use(P: Any) -> float:
    """Average channel use, mean(diag P) (§3.1).

    Args:
        P: a partition matrix (raw or refined).
    """
    return float(np.diag(_check_square(P, "P")).mean())


def overlap_bounds(diagonal: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(P_min, P_max)`` (App. A.1 Eq. 2-3): the least and most overlap two tasks using shares
    d_i and d_j of the channels can have, ``max(0, d_i + d_j - 1)`` and ``min(d_i, d_j)``.

    Args:
        diagonal: the n usage shares, in [0, 1].
    """
    d = np.asarray(diagonal, dtype=float)
    D = np.outer(d, np.ones_like(d))  # Eq. 1: D = diag(P)·1ᵀ
    return np.maximum(0.0, D + D.T - 1.0), np.minimum(D, D.T)


def refine(P: Any) -> np.ndarray:
    """``P̃`` (App. A.1 Eq. 1-4): the diagonal kept, off-diagonal x mapped to
    ``P_min + x·(P_max - P_min)``.

    Args:
        P: the raw n × n matrix: symmetric, values in [0, 1].
    """
    P = _check_square(P, "P")
    n = P.shape[0]
    P_min, P_max = overlap_bounds(np.diag(P))
    I = np.eye(n)  # noqa: E741 (the paper's name)
    J = np.ones((n, n))
    return P * I + (P * (P_max - P_min) + P_min) * (J - I)


def unrefine(P_tilde: Any) -> np.ndarray:
    """The raw ``P`` with ``refine(P) = P̃`` (the authors' ``convert_mat(invert=True)``); 0 where
    ``P_max = P_min`` (any value refines to the same ``P̃``).

    Args:
        P_tilde: a refined matrix (:func:`check_refined`).
    """
    P_tilde = check_refined(P_tilde)
    P_min, P_max = overlap_bounds(np.diag(P_tilde))
    width = P_max - P_min
    safe = np.where(width > 0, width, 1.0)
    raw = np.where(width > 0, (P_tilde - P_min) / safe, 0.0)
    raw = np.clip(raw, 0.0, 1.0)
    np.fill_diagonal(raw, np.diag(P_tilde))
    return raw


def check_refined(P_tilde: Any, name: str = "P_tilde") -> np.ndarray:
    """Return ``P̃`` as a float array if it is a valid partition matrix whose off-diagonal
    entries lie within the overlap bounds of its diagonal (App. A.1 Eq. 2-3, within
    :data:`TOLERANCE`); else raise ``ConfigError`` naming the first entry outside.

    Args:
        P_tilde: the matrix to check.
        name: its name in messages.
    """
    P_tilde = _check_square(P_tilde, name)
    P_min, P_max = overlap_bounds(np.diag(P_tilde))
    bad = (P_tilde < P_min - TOLERANCE) | (P_tilde > P_max + TOLERANCE)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise ConfigError(
            f"{name}[{i}, {j}] = {P_tilde[i, j]:.6g} is outside the overlap bounds "
            f"[{P_min[i, j]:.6g}, {P_max[i, j]:.6g}] that usages {P_tilde[i, i]:.6g} and "
            f"{P_tilde[j, j]:.6g} allow (App. A.1 Eq. 2-3): no mask can realise it; pass the "
            "raw matrix through refine() first"
        )
    return np.clip(P_tilde, P_min, P_max)


def _check_int(name: str, value: Any, low: int) -> int:
    """``value`` (a Python or numpy integer) as an ``int`` >= ``low``, else ``ConfigError``."""
    if isinstance(value, np.integer):
        value = int(value)
    return check_range(name, value, low, integer=True)


def _check_channels(channels: Any) -> int:
    return _check_int("channels", channels, 1)


# --------------------------------------------------------------------------------------------
# Masks from P̃: the MILP (App. A.1 Eq. 5-10) and the authors' sampler
# --------------------------------------------------------------------------------------------
def _canonical(masks: np.ndarray) -> np.ndarray:
    """The channels sorted by their pattern, task 0 the most significant bit, descending."""
    n = masks.shape[1]
    order = np.lexsort([-masks[:, i].astype(int) for i in reversed(range(n))])
    return np.ascontiguousarray(masks[order])


@dataclass(frozen=True)
class MilpResult:
    """What :func:`solve_masks_milp` found.

    Attributes:
        masks: the c × n 0/1 mask (uint8), channels in canonical order.
        status: ``"optimal"`` or ``"time_limit"`` (the best mask found by then).
        objective: total absolute deviation in channels (Eq. 5 with the lower bounds).
        bound: the solver's lower bound on the objective (``nan`` if it gives none).
        seconds: wall-clock time of the solve.
        message: the solver's message.
    """

    masks: np.ndarray
    status: str
    objective: float
    bound: float
    seconds: float
    message: str


def solve_masks_milp(
    P_tilde: Any,
    channels: int,
    *,
    time_limit: float = DEFAULT_TIME_LIMIT,
    formulation: str = "channels",
    symmetry_breaking: bool = False,
    mip_rel_gap: float = 1e-4,
) -> MilpResult:
    """The mask closest to ``P̃`` by the mixed-integer program of App. A.1 Eq. 5-10, with the
    lower-bound constraints added (see the module doc), solved by HiGHS.

    Args:
        P_tilde: the refined n × n matrix (:func:`check_refined`).
        channels: c, at least 1.
        time_limit: seconds the solver may run, > 0.
        formulation: ``"channels"`` (Eq. 5-10: M, t and slacks) or ``"patterns"`` (the same
            problem in channel-pattern counts, n <= :data:`MAX_PATTERN_TASKS`; module doc).
        symmetry_breaking: order the channels (``"channels"`` only; module doc).
        mip_rel_gap: HiGHS's relative optimality gap at which it stops, in [0, 1].
    """
    P_tilde = check_refined(P_tilde)
    c = _check_channels(channels)
    check_range("time_limit", time_limit, 0, low_inclusive=False)
    check_range("mip_rel_gap", mip_rel_gap, 0, 1)
    check_choice("MILP formulation", formulation, FORMULATIONS, name="formulation")
    n = P_tilde.shape[0]
    options = {"time_limit": float(time_limit), "mip_rel_gap": float(mip_rel_gap)}
    if formulation == "patterns":
        return _solve_patterns(P_tilde, c, options)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    q = len(pairs)
    n_m, n_t = c * n, c * q
    # variable layout: M (k, i) | t (pair p, k) | φ⁺ | φ⁻ | ξ⁺ | ξ⁻
    m_index = np.arange(n_m).reshape(c, n)
    t_index = n_m + np.arange(n_t).reshape(q, c)
    phi_plus = n_m + n_t + np.arange(n)
    phi_minus = phi_plus + n
    xi_plus = n_m + n_t + 2 * n + np.arange(q)
    xi_minus = xi_plus + q
    n_vars = n_m + n_t + 2 * n + 2 * q
    k_all = np.arange(c)

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    lower: list[np.ndarray] = []
    upper: list[np.ndarray] = []
    n_rows = 0

    def add(r: np.ndarray, col: np.ndarray, v: np.ndarray | float) -> None:
        rows.append(np.asarray(r).ravel())
        cols.append(np.asarray(col).ravel())
        vals.append(np.broadcast_to(np.asarray(v, dtype=float), np.shape(col)).ravel())

    # Eq. 6 with its lower bound: Σ_k M_ki - φ⁺_i + φ⁻_i = c·P̃_ii
    for i in range(n):
        add(np.full(c, n_rows + i), m_index[:, i], 1.0)
    add(n_rows + np.arange(n), phi_plus, -1.0)
    add(n_rows + np.arange(n), phi_minus, 1.0)
    usage = c * np.diag(P_tilde)
    lower.append(usage)
    upper.append(usage)
    n_rows += n
    if q:
        # Eq. 7 with its lower bound: Σ_k t_ijk - ξ⁺_ij + ξ⁻_ij = c·P̃_ij (i < j)
        add(np.repeat(n_rows + np.arange(q), c), t_index, 1.0)
        add(n_rows + np.arange(q), xi_plus, -1.0)
        add(n_rows + np.arange(q), xi_minus, 1.0)
        overlap = np.array([c * P_tilde[i, j] for i, j in pairs])
        lower.append(overlap)
        upper.append(overlap)
        n_rows += q
        # t_ijk <= M_ki, t_ijk <= M_kj (Eq. 8, tightened), M_ki + M_kj - t_ijk <= 1 (Eq. 9)
        first = np.array([i for i, _ in pairs])
        second = np.array([j for _, j in pairs])
        for which in (first, second):
            r = n_rows + np.arange(n_t).reshape(q, c)
            add(r, t_index, 1.0)
            add(r, m_index[k_all[None, :], which[:, None]], -1.0)
            lower.append(np.full(n_t, -np.inf))
            upper.append(np.zeros(n_t))
            n_rows += n_t
        r = n_rows + np.arange(n_t).reshape(q, c)
        add(r, m_index[k_all[None, :], first[:, None]], 1.0)
        add(r, m_index[k_all[None, :], second[:, None]], 1.0)
        add(r, t_index, -1.0)
        lower.append(np.full(n_t, -np.inf))
        upper.append(np.ones(n_t))
        n_rows += n_t
    if symmetry_breaking and c > 1:
        # Σ_i w_i (M_{k+1,i} - M_{k,i}) <= 0, w_i = 2^(b-1-i) for the first b tasks
        b = min(n, SYMMETRY_TASKS)
        weights = 2.0 ** np.arange(b - 1, -1, -1)
        r = n_rows + np.repeat(np.arange(c - 1), b).reshape(c - 1, b)
        add(r, m_index[1:, :b], weights[None, :])
        add(r, m_index[:-1, :b], -weights[None, :])
        lower.append(np.full(c - 1, -np.inf))
        upper.append(np.zeros(c - 1))
        n_rows += c - 1

    matrix = sparse.csr_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_rows, n_vars),
    )
    objective = np.zeros(n_vars)
    objective[n_m + n_t :] = 1.0  # Eq. 5: Σ φ + Σ ξ (both signs)
    integrality = np.zeros(n_vars)
    integrality[:n_m] = 1
    upper_bounds = np.full(n_vars, np.inf)
    upper_bounds[: n_m + n_t] = 1.0
    result, seconds = _run_milp(
        objective,
        integrality,
        Bounds(np.zeros(n_vars), upper_bounds),
        LinearConstraint(matrix, np.concatenate(lower), np.concatenate(upper)),
        options,
        f"{c} channels, {n} tasks",
    )
    masks = np.rint(result.x[:n_m]).reshape(c, n).astype(np.uint8)
    return _milp_result(masks, result, seconds)


def _run_milp(
    objective: np.ndarray,
    integrality: np.ndarray,
    bounds: Bounds,
    constraints: LinearConstraint,
    options: dict[str, float],
    what: str,
) -> tuple[Any, float]:
    """Run HiGHS; raise :class:`MaskSolverError` unless it returns a point."""
    start = time.perf_counter()
    result = milp(
        objective,
        integrality=integrality,
        bounds=bounds,
        constraints=constraints,
        options=options,
    )
    seconds = time.perf_counter() - start
    if result.x is None or result.status not in (0, 1):
        raise MaskSolverError(
            f"the MILP of App. A.1 Eq. 5-10 ({what}) found no mask within "
            f"time_limit={options['time_limit']:g} s (HiGHS status {result.status}: "
            f"{result.message}); raise time_limit or use masks_sampled()"
        )
    return result, seconds


def _milp_result(masks: np.ndarray, result: Any, seconds: float) -> MilpResult:
    bound = getattr(result, "mip_dual_bound", None)
    return MilpResult(
        masks=_canonical(masks),
        status="optimal" if result.status == 0 else "time_limit",
        objective=float(result.fun),
        bound=float("nan") if bound is None else float(bound),
        seconds=seconds,
        message=str(result.message),
    )


def _solve_patterns(P_tilde: np.ndarray, c: int, options: dict[str, float]) -> MilpResult:
    """Eq. 5-10 in pattern counts: x_s >= 0 channels carry pattern s (module doc)."""
    n = P_tilde.shape[0]
    if n > MAX_PATTERN_TASKS:
        raise ConfigError(
            f'formulation="patterns" has 2^n variables: at most {MAX_PATTERN_TASKS} tasks; '
            f'got {n} (use formulation="channels" or masks_sampled())'
        )
    patterns = _patterns(n)  # (2^n, n), task 0 the most significant bit
    s = len(patterns)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    q = len(pairs)
    uses = np.concatenate(
        [patterns.T, np.array([patterns[:, i] * patterns[:, j] for i, j in pairs]).reshape(q, s)]
    )  # (n + q) × 2^n: which patterns count towards each usage / overlap
    targets = np.concatenate([c * np.diag(P_tilde), [c * P_tilde[i, j] for i, j in pairs]])
    m = n + q
    eye = sparse.identity(m, format="csr")
    deviation = sparse.hstack([sparse.csr_array(uses), -eye, eye], format="csr")
    total = sparse.hstack(
        [sparse.csr_array(np.ones((1, s))), sparse.csr_array((1, 2 * m))], format="csr"
    )
    matrix = sparse.vstack([deviation, total], format="csr")
    bounds_rows = np.concatenate([targets, [c]])
    objective = np.concatenate([np.zeros(s), np.ones(2 * m)])
    integrality = np.concatenate([np.ones(s), np.zeros(2 * m)])
    upper = np.concatenate([np.full(s, float(c)), np.full(2 * m, np.inf)])
    result, seconds = _run_milp(
        objective,
        integrality,
        Bounds(np.zeros(s + 2 * m), upper),
        LinearConstraint(matrix, bounds_rows, bounds_rows),
        options,
        f"{c} channels, {n} tasks, pattern counts",
    )
    counts = np.rint(result.x[:s]).astype(int)
    masks = np.repeat(patterns, counts, axis=0).astype(np.uint8)
    if masks.shape[0] != c:  # rounding of a count off by HiGHS's tolerance
        raise MaskSolverError(f"pattern counts sum to {masks.shape[0]}, not {c} channels")
    return _milp_result(masks, result, seconds)


def _patterns(n: int) -> np.ndarray:
    """All 2^n channel patterns as rows, task 0 the most significant bit."""
    codes = np.arange(2**n)
    return ((codes[:, None] >> np.arange(n - 1, -1, -1)[None, :]) & 1).astype(np.uint8)


def masks_milp(
    P_tilde: Any,
    channels: int,
    *,
    time_limit: float = DEFAULT_TIME_LIMIT,
    formulation: str = "channels",
    symmetry_breaking: bool = False,
) -> np.ndarray:
    """The c × n 0/1 mask closest to ``P̃`` (App. A.1 Eq. 5-10 with lower bounds, HiGHS);
    :func:`solve_masks_milp` also returns the status, objective and bound.

    Args:
        P_tilde: the refined n × n matrix (:func:`check_refined`).
        channels: c, at least 1.
        time_limit: seconds the solver may run; it returns its best mask by then, or raises
            :class:`MaskSolverError` if it has none.
        formulation: ``"channels"`` (Eq. 5-10) or ``"patterns"`` (module doc).
        symmetry_breaking: order the channels (see the module doc).
    """
    return solve_masks_milp(
        P_tilde,
        channels,
        time_limit=time_limit,
        formulation=formulation,
        symmetry_breaking=symmetry_breaking,
    ).masks


def masks_sampled(
    P_tilde: Any, channels: int, *, seed: int, draws: int = DEFAULT_DRAWS
) -> np.ndarray:
    """A c × n 0/1 mask for ``P̃`` by the authors' greedy randomised sampler (module doc).

    Args:
        P_tilde: the refined n × n matrix (:func:`check_refined`).
        channels: c, at least 1.
        seed: seeds the draws (same seed, same mask).
        draws: draws per task, the best kept; at least 1.
    """
    P_tilde = check_refined(P_tilde)
    c = _check_channels(channels)
    draws = _check_int("draws", draws, 1)
    rng = np.random.default_rng(_check_int("seed", seed, 0))
    n = P_tilde.shape[0]
    target = np.rint(P_tilde * c).astype(int)
    usage = np.diag(target)
    masks = np.zeros((c, n), dtype=np.uint8)
    masks[: usage[0], 0] = 1
    for j in range(1, n):
        need = int(usage[j])
        if need == 0:
            continue
        weight = np.ones(c)
        for i in range(j):
            inside = target[i, j] / max(1, usage[i])
            outside = (usage[j] - target[i, j]) / max(1, c - usage[i])
            weight *= np.where(masks[:, i] == 1, inside, outside)
        weight = np.clip(weight, 0.0, None)
        if weight.sum() <= 0:
            weight = np.ones(c)
        positive = np.flatnonzero(weight > 0)
        others = np.flatnonzero(weight <= 0)
        best_row, best_distance = None, math.inf
        for _ in range(draws):
            if len(positive) >= need:
                chosen = rng.choice(c, size=need, replace=False, p=weight / weight.sum())
            else:
                extra = rng.choice(others, size=need - len(positive), replace=False)
                chosen = np.concatenate([positive, extra])
            row = np.zeros(c, dtype=np.uint8)
            row[chosen] = 1
            overlaps = masks[:, :j].T.astype(int) @ row
            distance = float(np.linalg.norm(overlaps - target[:j, j]))
            if distance < best_distance:
                best_row, best_distance = row, distance
        masks[:, j] = best_row
    return _canonical(masks)


@dataclass(frozen=True)
class MaskError:
    """How far ``partition_matrix(masks)`` is from ``P̃``, over the diagonal and the upper
    triangle (each pair once).

    Attributes:
        max_abs: largest absolute difference, as a share of the channels.
        mean_abs: mean absolute difference, as a share.
        max_channels: largest absolute difference in channels (``c·max_abs``).
        mean_channels: mean absolute difference in channels.
        total_channels: sum of absolute differences in channels (the MILP's objective).
        usage_max_channels: largest usage (diagonal) difference in channels.
    """

    max_abs: float
    mean_abs: float
    max_channels: float
    mean_channels: float
    total_channels: float
    usage_max_channels: float

    def as_dict(self) -> dict[str, float]:
        """The fields as a dict."""
        return asdict(self)


def mask_error(masks: Any, P_tilde: Any) -> MaskError:
    """How closely ``masks`` meets ``P̃`` (:class:`MaskError`).

    Args:
        masks: the c × n 0/1 mask.
        P_tilde: the n × n target (symmetric, in [0, 1]).
    """
    M = _check_masks(masks)
    P_tilde = _check_square(P_tilde, "P_tilde")
    c, n = M.shape
    if P_tilde.shape[0] != n:
        raise ConfigError(
            f"masks cover {n} tasks but P_tilde is {P_tilde.shape[0]} × {P_tilde.shape[0]}"
        )
    difference = np.abs(partition_matrix(M) - P_tilde)[np.triu_indices(n)]
    return MaskError(
        max_abs=float(difference.max()),
        mean_abs=float(difference.mean()),
        max_channels=float(c * difference.max()),
        mean_channels=float(c * difference.mean()),
        total_channels=float(c * difference.sum()),
        usage_max_channels=float(c * np.abs(np.diag(partition_matrix(M) - P_tilde)).max()),
    )


# --------------------------------------------------------------------------------------------
# Partitions to try (§4.1, Fig. 4, Table 2)
# --------------------------------------------------------------------------------------------
def _rng(rng: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(_check_int("seed", rng, 0))


def _check_tasks(n_tasks: Any) -> int:
    return _check_int("n_tasks", n_tasks, 1)


def _symmetric(diagonal: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """The symmetric matrix with ``diagonal`` and strict upper triangle ``upper`` (row-major)."""
    n = len(diagonal)
    P = np.zeros((n, n))
    P[np.triu_indices(n, 1)] = upper
    P = P + P.T
    P[np.diag_indices(n)] = diagonal
    return P


def random_partition(n_tasks: int, rng: np.random.Generator | int) -> np.ndarray:
    """A random refined ``P̃`` (§4.1 random search): raw diagonal and upper triangle uniform in
    [0, 1], mirrored, refined (Eq. 1-4).

    Args:
        n_tasks: n, at least 1.
        rng: a ``numpy.random.Generator`` or a seed.
    """
    n = _check_tasks(n_tasks)
    generator = _rng(rng)
    values = generator.uniform(0.0, 1.0, size=n + n * (n - 1) // 2)
    return refine(_symmetric(values[:n], values[n:]))


def diagonal_partition(diagonal: Sequence[float] | np.ndarray, sharing: Any) -> np.ndarray:
    """A refined ``P̃`` with a fixed diagonal and a chosen sharing (Fig. 4 middle).

    Args:
        diagonal: the n usage shares, each in [0, 1].
        sharing: the raw off-diagonal value(s), in [0, 1]: 0 = the least overlap the diagonal
            allows (Eq. 2), 1 = the most (Eq. 3); a number for every pair, or a symmetric
            n × n matrix (its diagonal is ignored).
    """
    d = np.asarray(diagonal, dtype=float)
    if d.ndim != 1 or len(d) < 1:
        raise ConfigError(f"diagonal must be a non-empty sequence of shares; got {diagonal!r}")
    n = len(d)
    share = np.asarray(sharing, dtype=float)
    if share.ndim == 0:
        share = np.full((n, n), float(share))
    elif share.shape != (n, n):
        raise ConfigError(
            f"sharing must be a number or an {n} × {n} matrix; got shape {share.shape}"
        )
    raw = share.copy()
    np.fill_diagonal(raw, d)
    return refine(raw)


def baseline_partition(kind: str, n_tasks: int, *, share: float = 0.5) -> np.ndarray:
    """Table 2's baselines as ``P̃``: ``"independent"`` (each task 1/n of the channels, no
    overlap), ``"share_half"`` (a share ``share`` used by all, the rest split evenly: usage
    ``share + (1 - share)/n``, overlap ``share``; the authors' ``share_fixed``),
    ``"share_all"`` (every channel used by every task).

    Args:
        kind: one of :data:`BASELINES`.
        n_tasks: n, at least 1.
        share: the shared share for ``"share_half"``, in [0, 1].
    """
    check_choice("baseline partition", kind, BASELINES, name="kind")
    n = _check_tasks(n_tasks)
    check_range("share", share, 0, 1)
    if kind == "independent":
        return np.eye(n) / n
    if kind == "share_all":
        return np.ones((n, n))
    P = np.full((n, n), float(share))
    np.fill_diagonal(P, share + (1 - share) / n)
    return P


# --------------------------------------------------------------------------------------------
# Evolution strategies (§4.1)
# --------------------------------------------------------------------------------------------
ScoreFn = Callable[[np.ndarray], float]
"""A search score: the refined ``P̃`` in, a number to maximise out."""


@dataclass
class ESSample:
    """One scored partition of the search.

    Attributes:
        P_tilde: the refined matrix scored.
        score: its score.
        step: 0 for the initial samples, else the ES step that proposed it.
    """

    P_tilde: np.ndarray
    score: float
    step: int


@dataclass
class ESResult:
    """A run of :meth:`EvolutionStrategy.run`.

    Attributes:
        best: the highest-scoring sample seen.
        final: the refined ``P̃`` the search ended at.
        history: every sample scored, in order (Fig. 4 right plots them).
    """

    best: ESSample
    final: np.ndarray
    history: list[ESSample] = field(default_factory=list)


class EvolutionStrategy:
    """§4.1's evolution strategies (Mania et al. 2018) over the raw ``P`` (module doc).

    Use :meth:`run` with a score function, or drive it by hand: :meth:`initial_samples` and
    :meth:`start`, then repeatedly :meth:`propose`, score the proposals, :meth:`update`.

    Attributes:
        n_tasks: n.
        theta: the current parameters (diagonal, then the upper triangle row by row), or
            ``None`` before :meth:`start`.
        velocity: SGD's momentum buffer.
        steps: updates done.
    """

    def __init__(
        self,
        n_tasks: int,
        *,
        seed: int,
        directions: int = ES_DIRECTIONS,
        sigma: float = ES_SIGMA,
        top_k: int = ES_TOP_K,
        penalty: float = ES_PENALTY,
        lr: float = ES_LR,
        momentum: float = ES_MOMENTUM,
        initial: int = ES_INITIAL_SAMPLES,
    ) -> None:
        """Args:
        n_tasks: n, at least 1.
        seed: seeds every draw (same seed and scores, same search).
        directions: antithetic directions per step, at least 1 (paper code 8).
        sigma: perturbation scale, > 0 (0.04).
        top_k: directions kept, 1 ... ``directions`` (7).
        penalty: weight decay λ on the diagonal, >= 0 (0.001).
        lr: SGD learning rate, > 0 (0.25).
        momentum: SGD momentum, in [0, 1) (0.8).
        initial: initial samples scored by :meth:`run`, at least 1 (32).
        """
        self.n_tasks = _check_tasks(n_tasks)
        seed = _check_int("seed", seed, 0)
        self.directions = _check_int("directions", directions, 1)
        self.sigma = check_range("sigma", sigma, 0, low_inclusive=False)
        self.top_k = check_range("top_k", top_k, 1, directions, integer=True)
        self.penalty = check_range("penalty", penalty, 0)
        self.lr = check_range("lr", lr, 0, low_inclusive=False)
        self.momentum = check_range("momentum", momentum, 0, 1, high_inclusive=False)
        self.initial = check_range("initial", initial, 1, integer=True)
        self.rng = np.random.default_rng(seed)
        n = self.n_tasks
        self.n_params = n + n * (n - 1) // 2
        self.diagonal_mask = np.arange(self.n_params) < n
        self.theta: np.ndarray | None = None
        self.velocity = np.zeros(self.n_params)
        self.steps = 0
        self._deltas: np.ndarray | None = None

    # -- parameters <-> matrices
    def to_matrix(self, theta: np.ndarray) -> np.ndarray:
        """The raw symmetric ``P`` of the parameters ``theta``."""
        return _symmetric(theta[: self.n_tasks], theta[self.n_tasks :])

    def from_matrix(self, P: Any) -> np.ndarray:
        """The parameters of a raw ``P`` (validated: symmetric, in [0, 1], n × n)."""
        P = _check_square(P, "P")
        if P.shape[0] != self.n_tasks:
            raise ConfigError(f"P must be {self.n_tasks} × {self.n_tasks}; got {P.shape}")
        return np.concatenate([np.diag(P), P[np.triu_indices(self.n_tasks, 1)]])

    @property
    def current(self) -> np.ndarray:
        """The current refined ``P̃``."""
        if self.theta is None:
            raise RuntimeError("the search has not started: call start() or run()")
        return refine(self.to_matrix(self.theta))

    # -- the search
    def initial_samples(self) -> list[np.ndarray]:
        """:attr:`initial` raw matrices: diagonal 0.5 + N(0, 0.2), off-diagonal uniform, every
        entry clamped to [0.05, 1] (the authors' code)."""
        n = self.n_tasks
        samples = []
        for _ in range(self.initial):
            diagonal = ES_INITIAL_DIAGONAL[0] + ES_INITIAL_DIAGONAL[1] * self.rng.standard_normal(n)
            upper = self.rng.uniform(0.0, 1.0, size=self.n_params - n)
            theta = np.clip(np.concatenate([diagonal, upper]), *ES_INITIAL_CLAMP)
            samples.append(self.to_matrix(theta))
        return samples

    def start(self, P: Any) -> None:
        """Start (or restart) the search from the raw ``P``; the momentum is reset.

        Args:
            P: a raw n × n matrix (symmetric, in [0, 1]).
        """
        self.theta = self.from_matrix(P)
        self.velocity = np.zeros(self.n_params)
        self._deltas = None

    def propose(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Draw the directions δ = σ·ε and return the refined ``P̃`` at ``clip(θ + δ)`` and at
        ``clip(θ - δ)``, one list each, to be scored and passed to :meth:`update`."""
        if self.theta is None:
            raise RuntimeError("the search has not started: call start() or run()")
        self._deltas = self.sigma * self.rng.standard_normal((self.directions, self.n_params))
        plus = [refine(self.to_matrix(np.clip(self.theta + d, 0, 1))) for d in self._deltas]
        minus = [refine(self.to_matrix(np.clip(self.theta - d, 0, 1))) for d in self._deltas]
        return plus, minus

    def gradient(self, scores_plus: Sequence[float], scores_minus: Sequence[float]) -> np.ndarray:
        """The loss gradient for the last proposal: ``-mean_top((r⁺ - r⁻)·δ)`` plus the weight
        decay on the diagonal (module doc); descending it raises the score.

        Args:
            scores_plus: the scores of :meth:`propose`'s first list.
            scores_minus: the scores of its second list.
        """
        if self._deltas is None or self.theta is None:
            raise RuntimeError("update() needs a propose() first")
        plus = np.asarray(scores_plus, dtype=float)
        minus = np.asarray(scores_minus, dtype=float)
        for name, scores in (("scores_plus", plus), ("scores_minus", minus)):
            if scores.shape != (self.directions,) or not np.isfinite(scores).all():
                raise ConfigError(
                    f"{name} must hold {self.directions} finite scores, one per direction; "
                    f"got {scores.tolist()}"
                )
        every = np.concatenate([plus, minus])
        spread = every.std()
        standard = (every - every.mean()) / spread if spread > 0 else np.zeros_like(every)
        r_plus, r_minus = standard[: self.directions], standard[self.directions :]
        top = np.argsort(-np.maximum(r_plus, r_minus), kind="stable")[: self.top_k]
        grad = -np.mean((r_plus - r_minus)[top, None] * self._deltas[top], axis=0)
        return grad + self.penalty * self.theta * self.diagonal_mask

    def update(self, scores_plus: Sequence[float], scores_minus: Sequence[float]) -> np.ndarray:
        """One SGD-with-momentum step on :meth:`gradient`; returns the new refined ``P̃``.

        Args:
            scores_plus: the scores of :meth:`propose`'s first list.
            scores_minus: the scores of its second list.
        """
        grad = self.gradient(scores_plus, scores_minus)
        assert self.theta is not None
        self.velocity = self.momentum * self.velocity + grad
        self.theta = np.clip(self.theta - self.lr * self.velocity, 0.0, 1.0)
        self._deltas = None
        self.steps += 1
        return self.current

    def run(self, score: ScoreFn, steps: int, *, start: Any = None) -> ESResult:
        """Score the initial samples and start from the best (unless ``start`` is given), then
        take ``steps`` ES steps.

        Args:
            score: the score of a refined ``P̃`` (higher is better).
            steps: ES steps, >= 0 (each scores 2 × ``directions`` partitions).
            start: a raw ``P`` to start from instead of the initial samples.
        """
        check_range("steps", steps, 0, integer=True)
        history: list[ESSample] = []
        if start is None:
            candidates = self.initial_samples()
            for raw in candidates:
                P_tilde = refine(raw)
                history.append(ESSample(P_tilde, float(score(P_tilde)), 0))
            best_at = int(np.argmax([s.score for s in history]))
            self.start(candidates[best_at])
        else:
            self.start(start)
        for _ in range(steps):
            plus, minus = self.propose()
            s_plus = [float(score(P)) for P in plus]
            s_minus = [float(score(P)) for P in minus]
            history += [ESSample(P, s, self.steps + 1) for P, s in zip(plus, s_plus, strict=True)]
            history += [ESSample(P, s, self.steps + 1) for P, s in zip(minus, s_minus, strict=True)]
            self.update(s_plus, s_minus)
        best = (
            max(history, key=lambda s: s.score) if history else ESSample(self.current, math.nan, 0)
        )
        return ESResult(best=best, final=self.current, history=history)


# --------------------------------------------------------------------------------------------
# Benchmark and export
# --------------------------------------------------------------------------------------------
def benchmark_masks(
    channels: int,
    n_tasks: int,
    seed: int,
    *,
    time_limit: float = DEFAULT_TIME_LIMIT,
    draws: int = DEFAULT_DRAWS,
    formulations: Sequence[str] = FORMULATIONS,
) -> dict[str, Any]:
    """Time the MILP (each formulation) and the sampler on one random ``P̃``
    (:func:`random_partition` with ``seed``).

    Returns a dict with ``channels``, ``n_tasks``, ``seed``, ``average_use`` and, per method
    (``"milp_channels"``, ``"milp_patterns"``, ``"sampler"``), a dict with ``seconds``,
    ``status`` (``"optimal"``, ``"time_limit"`` -- its best mask by then --, ``"sampled"``, or
    ``"skipped"``: patterns with n > :data:`MAX_PATTERN_TASKS`), ``objective`` and ``bound``
    (channels; MILP only) and ``error`` (:meth:`MaskError.as_dict`).

    Args:
        channels: c, at least 1.
        n_tasks: n, at least 1.
        seed: seeds the partition and the sampler.
        time_limit: each MILP's limit in seconds.
        draws: the sampler's draws per task.
        formulations: the MILP formulations to run (:data:`FORMULATIONS`).
    """
    c = _check_channels(channels)
    n = _check_tasks(n_tasks)
    for formulation in formulations:
        check_choice("MILP formulation", formulation, FORMULATIONS, name="formulations")
    P_tilde = random_partition(n, seed)
    out: dict[str, Any] = {
        "channels": c,
        "n_tasks": n,
        "seed": seed,
        "average_use": average_use(P_tilde),
    }
    for formulation in formulations:
        if formulation == "patterns" and n > MAX_PATTERN_TASKS:
            out[f"milp_{formulation}"] = {"status": "skipped"}
            continue
        solved = solve_masks_milp(P_tilde, c, time_limit=time_limit, formulation=formulation)
        out[f"milp_{formulation}"] = {
            "seconds": solved.seconds,
            "status": solved.status,
            "objective": solved.objective,
            "bound": solved.bound,
            "error": mask_error(solved.masks, P_tilde).as_dict(),
        }
    start = time.perf_counter()
    sampled = masks_sampled(P_tilde, c, seed=seed, draws=draws)
    out["sampler"] = {
        "seconds": time.perf_counter() - start,
        "status": "sampled",
        "error": mask_error(sampled, P_tilde).as_dict(),
    }
    return out


def write_partition(
    P_tilde: Any,
    masks: Any,
    task_names: Sequence[str],
    out_dir: str | Path,
    name: str,
) -> tuple[Path, Path]:
    """Write ``<name>_P.csv`` (tasks × tasks, header = task names) and ``<name>_M.csv``
    (channels × tasks, 0/1, header = task names) to ``out_dir``, each atomically.

    Args:
        P_tilde: the n × n partition matrix (symmetric, in [0, 1]).
        masks: the c × n 0/1 mask.
        task_names: the n task names (distinct, no commas, quotes or line breaks).
        out_dir: the folder (created if missing).
        name: the file-name stem (letters, digits, ``_.-``; no ``/``).

    Returns:
        The two paths.
    """
    P_tilde = _check_square(P_tilde, "P_tilde")
    M = _check_masks(masks)
    names = [str(t) for t in task_names]
    n = P_tilde.shape[0]
    if len(names) != n or M.shape[1] != n:
        raise ConfigError(
            f"task_names ({len(names)}), P_tilde ({n} × {n}) and masks ({M.shape[1]} tasks) must "
            "cover the same tasks"
        )
    if len(set(names)) != n or any(not t or any(ch in t for ch in ',"\n\r') for t in names):
        raise ConfigError(
            f"task_names must be distinct, non-empty and free of commas, quotes and line "
            f"breaks; got {names!r}"
        )
    if not isinstance(name, str) or not FILE_STEM.match(name):
        raise ConfigError(f"name {name!r} must be a plain file-name stem (letters, digits, _.-)")
    p_text = pd.DataFrame(np.asarray(P_tilde, dtype=np.float64), columns=names).to_csv(
        index=False, lineterminator="\n"
    )
    m_text = pd.DataFrame(M.astype(np.int64), columns=names).to_csv(index=False,
                                                                    lineterminator="\n")
    out = Path(out_dir)
    p_path = atomic_write_text(out / f"{name}_P.csv", p_text)
    m_path = atomic_write_text(out / f"{name}_M.csv", m_text)
    return p_path, m_path
